"""The public functions refuse what they cannot take by name, before any work.

`takes_graph`: the rules take the graph `pcsim.trace` returns; given the module (or None, a path) they failed on the
first graph attribute they read (`'Sequential' object has no attribute 'level'`), which says nothing of the call.

`checked`: a setting annotated `bool`, `int` or `float` (or `... | None`) is held to that type, and `params=` to a
mapping of tensors: a flag given as a string ran the other way silently (`level='no'` is truthy), and a number
given as a string stopped deep inside the rule. Ranges stay with each function.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import operator
from collections.abc import Callable, Iterable, Mapping
from numbers import Integral, Real
from typing import Any, TypeVar

import torch
from torch import nn

from pcsim.graph.ir import Graph

F = TypeVar("F")
KINDS = ("bool", "int", "float")


def described(obj: Any) -> str:
    """What was passed, as a message names it."""
    if isinstance(obj, nn.Module):
        return f"a {type(obj).__name__} (a torch.nn.Module)"
    if isinstance(obj, type):
        return f"the class {obj.__name__}"
    return "None" if obj is None else f"a {type(obj).__name__}"


def _kind(annotation) -> tuple[str, bool] | None:
    """('bool' | 'int' | 'float', whether None is allowed) for a plain scalar annotation, else None."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    parts = {p.strip() for p in text.split("|")}
    kinds = parts - {"None"}
    return (kinds.pop(), "None" in parts) if len(kinds) == 1 and kinds <= set(KINDS) else None


def _scalar(value) -> bool:
    return getattr(value, "ndim", None) == 0  # a numpy scalar or a 0-d tensor


_PLAIN = {"bool": (bool,), "int": (int,), "float": (float, int)}  # exact types: the usual case, no ABC lookup


def fits(kind: str, value) -> bool:
    """Whether `value` is a setting of `kind` ('bool', 'int' or 'float'): numpy and 0-d tensor scalars too."""
    if type(value) in _PLAIN[kind]:
        return True
    if kind == "bool":  # 1 and 0 read as flags; 'no' is truthy, so a string never does
        return (isinstance(value, bool) or (isinstance(value, Integral) and value in (0, 1))
                or (_scalar(value) and getattr(value, "dtype", None) in (bool, torch.bool)))
    if isinstance(value, bool) or getattr(value, "dtype", None) in (bool, torch.bool):
        return False  # True is not a step of 1
    if kind == "int":
        try:
            operator.index(value)
        except TypeError:
            return False
        return True
    return isinstance(value, Real) or (_scalar(value) and (value.dtype.kind in "fiu" if hasattr(value.dtype, "kind")
                                                           else not value.dtype.is_complex))


def check_value(where: str, name: str, kind: str, value) -> None:
    """`value` of setting `name` is of `kind` ('bool', 'int' or 'float'), else a ValueError naming both."""
    if fits(kind, value):
        return
    wanted = {"bool": "True or False", "int": "an integer", "float": "a number"}[kind]
    raise ValueError(f"{where}: {name} must be {wanted}, got {value!r}")


def check_fields(obj) -> None:
    """A dataclass's fields annotated bool, int or float (or `... | None`) held to that type, as `checked` holds a
    function's settings: Euler(0.1, compile='no') compiled, Record(every_step='no') recorded every step."""
    for f in dataclasses.fields(obj):
        kind = _kind(f.type)
        if kind is not None:
            _check_setting(type(obj).__name__, f.name, kind, getattr(obj, f.name))


def check_params(where: str, params) -> None:
    """`params=`: None (the module's own), or a mapping of parameter names to tensors."""
    if params is None:
        return
    if not isinstance(params, Mapping):
        raise ValueError(f"{where}: params must be a dict of parameter name -> tensor (dict(module.named_parameters())"
                         f", or None for the module's own), got {described(params)}")
    bad = next(((n, p) for n, p in params.items() if not isinstance(p, torch.Tensor)), None)
    if bad is not None:
        raise ValueError(f"{where}: params['{bad[0]}'] must be a tensor, got {described(bad[1])}")


def _check_setting(where: str, name: str, kind: tuple[str, bool], value) -> None:
    """`value` of setting `name` fits `kind` (as `_kind` gives it, or ('params', True) for `params=`)."""
    kind_name, optional = kind
    if kind_name == "params":
        check_params(where, value)
    elif not (value is None and optional):
        check_value(where, name, kind_name, value)


def _checker(fn) -> Callable[[tuple, dict], None]:
    """The check `checked` makes at each call of `fn`, worked out once from its signature."""
    sig = inspect.signature(fn)
    where = f"{fn.__qualname__.removesuffix('.__init__')}()"
    params = list(sig.parameters.values())
    any_keyword = any(p.kind is p.VAR_KEYWORD for p in params)
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
    names = set(named)
    kinds = {p.name: k for p in params if (k := _kind(p.annotation)) is not None}
    if "params" in names:
        kinds["params"] = ("params", True)
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    by_position = [(i, n) for i, n in enumerate(positional) if n in kinds]
    plain = {n: _PLAIN.get(k[0], ()) for n, k in kinds.items()}

    def check(args: tuple, kwargs: dict) -> None:
        for key, value in kwargs.items():
            kind = kinds.get(key)
            if kind is not None:
                if type(value) not in plain[key]:  # a float for a float, a bool for a flag: nothing more to see
                    _check_setting(where, key, kind, value)
            elif key not in names and not any_keyword:
                raise TypeError(f"{where} takes no argument '{key}'{did_you_mean(key, named)}; it takes "
                                f"{', '.join(named)}")
        for i, name in by_position:
            if i < len(args):
                _check_setting(where, name, kinds[name], args[i])
    return check


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """' (did you mean k?)' for the known name closest to a misspelt `key`, or ''."""
    near = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {near[0]}?)" if near else ""


def checked(fn: F) -> F:
    """`fn` with its scalar settings (annotated bool, int, float) and `params=` checked at each call, and a keyword
    it does not take named with the ones it does (Python's message named no alternative)."""
    check = _checker(fn)

    @functools.wraps(fn)  # type: ignore[arg-type]
    def run(*args, **kwargs):
        check(args, kwargs)
        return fn(*args, **kwargs)
    return run  # type: ignore[return-value]


def takes_graph(fn: F) -> F:
    """`fn(graph, ...)` refuses a first argument that is not a `Graph`, naming `fn` and what to pass; its settings
    are `checked`."""
    check = _checker(fn)

    @functools.wraps(fn)  # type: ignore[arg-type]
    def run(*args, **kwargs):
        graph = args[0] if args else kwargs.get("graph")
        if not isinstance(graph, Graph):
            name = fn.__name__  # type: ignore[attr-defined]
            raise TypeError(f"{name}() takes the graph that pcsim.trace returns, got {described(graph)}: "
                            f"graph = pcsim.trace(module, *inputs), then {name}(graph, inputs, target, ...)"
                            + (" (pcsim.check is the one that takes the module itself)"
                               if isinstance(graph, nn.Module) else ""))
        check(args, kwargs)
        return fn(*args, **kwargs)
    return run  # type: ignore[return-value]
