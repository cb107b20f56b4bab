"""What ties a graph to the module it was traced from, checked by every rule call (`ModuleTies.changed`).

The graph is the module's function at the trace. It stops being so where, since then:
- a parameter or submodule was assigned anew (`load_state_dict(assign=True)`): the graph reads the old tensors;
- a parameter was (un)frozen: the trace took a frozen one for a constant;
- a normalisation with running statistics changed mode: the graph normalises as at the trace;
- a buffer or frozen parameter read as a constant was replaced, or changed in place where the graph folded a value
  computed from it (`inv_freq.exp()`); one read as it is stays a view, so a change in place is seen;
- a parameter was converted or resized (`.float()`): the captured calls are specialised to its dtype and shape;
- a forward hook or pre-hook was added or removed (on a submodule, or the global ones): the trace ran those there were.
A Python number, flag or string attribute set anew (`m.temperature = 0.5`) may or may not be read by forward()
(torch.export specialises to the value at the trace): a warning says so, once per attribute, and the rules go on.

The module is held by weak references only; a copy of the graph (pickle, deepcopy) keeps the checks that need no
module (frozen, dtype and shape).
"""

from __future__ import annotations

import operator
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules import module as module_hooks  # nn.Module's global hooks live there

from pcsim.graph.provenance import user_stacklevel

_MODE = {True: "train", False: "eval"}


@dataclass(frozen=True, eq=False)
class Source:
    """A module tensor the graph reads as a constant, at `owner.<attr>`; `copy`: its values at the trace where the
    graph folded a value computed from it (None where it reads the tensor as it is)."""

    name: str
    owner: weakref.ref
    attr: str
    where: tuple  # (data_ptr, shape, stride, dtype) at the trace
    copy: torch.Tensor | None

    def stale(self) -> str | None:
        owner = self.owner()
        if owner is None:  # the module is gone: nothing to compare with
            return None
        now = getattr(owner, self.attr, None)
        if not isinstance(now, torch.Tensor) or where(now) != self.where:
            return (f"{self.name} was replaced by another tensor since the trace (assigned, or its .data set): the "
                    "graph reads the tensor it had then; trace again")
        if self.copy is not None and not torch.equal(now.detach(), self.copy):
            return (f"{self.name} changed since the trace, and the graph holds a value computed from it then (a "
                    "function of buffers and frozen parameters alone is folded into a constant at the trace); "
                    "trace again after changing it")
        return None


_SETTINGS = (int, float, bool, str, type(None))
_HOOKS = ("_forward_pre_hooks", "_forward_hooks")


@dataclass(frozen=True)
class Watch:
    """What of a module the graph depends on beyond its tensors, read from its `__dict__` in one call at every rule
    call: its forward hooks and pre-hooks, and its public Python number, flag, string and None attributes (its mode
    aside, which the normalisations' ties follow; dropout runs as the identity in either). `was`: at the trace."""

    keys: tuple[str, ...]
    getter: operator.itemgetter
    was: tuple

    @staticmethod
    def of(m: nn.Module, leave_out: frozenset[str] = frozenset()) -> Watch:
        keys = tuple(k for k, v in vars(m).items()
                     if type(v) in _SETTINGS and k[:1] != "_" and k != "training" and k not in leave_out)
        getter = operator.itemgetter(*_HOOKS, *keys)
        pre, post, *values = getter(vars(m))
        return Watch(keys, getter, (dict(pre), dict(post), *values))

    def same(self, m: nn.Module) -> bool:
        try:
            return self.getter(m.__dict__) == self.was
        except KeyError:  # an attribute deleted since
            return False


def global_hooks() -> tuple:
    return tuple(module_hooks._global_forward_pre_hooks), tuple(module_hooks._global_forward_hooks)


def where(t: torch.Tensor) -> tuple:
    return t.data_ptr(), tuple(t.shape), t.stride(), t.dtype


@dataclass(frozen=True)
class TracedParam:
    """A parameter as traced: its name, whether it was frozen, its shape and dtype."""

    name: str
    frozen: bool
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True, eq=False)
class ModuleTies:
    """The traced module's parts by weak references (all but `params` dropped in a copy), as they were at the trace."""

    params: tuple[TracedParam, ...]
    module: weakref.ref | None = None
    # (path, parent, attribute, child, the child's `Watch`), top-down
    edges: tuple[tuple[str, weakref.ref, str, weakref.ref, Watch], ...] = ()
    owners: tuple[tuple[weakref.ref, str], ...] = ()  # each parameter's (owner, attribute), in `params`' order
    modes: tuple[tuple[str, weakref.ref, bool], ...] = ()  # normalisations following the mode: (path, module, mode)
    sources: tuple[Source, ...] = ()
    root: Watch | None = None  # the module's own
    global_hooks: tuple = ()  # nn.Module's global forward hooks
    warned: set = field(default_factory=set, repr=False)  # the settings already warned about

    def __getstate__(self) -> dict:
        # pickle cannot store weak references; a copy's parameters are no longer the module's anyway
        return {**self.__dict__, "module": None, "edges": (), "owners": (), "modes": (), "sources": (), "root": None}

    def changed(self, live: Mapping[str, torch.Tensor]) -> str | None:
        """Why the graph, whose parameters are `live` (by name), no longer computes what the module does; None
        where it does. Called at every rule call, so one pass over the parameters, by direct references."""
        module = self.module() if self.module is not None else None
        if module is not None:
            if self.root is not None and not self.root.same(module) and (
                    why := self._watched(type(module).__name__, "self", module, self.root)):
                return why
            for path, parent, attr, child, watch in self.edges:
                p, c = parent(), child()
                if p is None or p._modules.get(attr) is not c:
                    return f"module '{path}' was replaced since the trace{_REASSIGNED}"
                if not watch.same(c) and (why := self._watched(path, f"self.{path}", c, watch)):
                    return why
            if global_hooks() != self.global_hooks:
                return f"nn.Module's global forward hooks are others than when the module was traced{_REHOOKED}"
        for i, t in enumerate(self.params):
            p = live.get(t.name)
            if module is not None:
                owner = self.owners[i][0]()
                now = None if owner is None else owner._parameters.get(self.owners[i][1])
                if now is not p and p is not None:
                    how = "removed" if now is None else "assigned anew"
                    return (f"parameter '{t.name}' is not the tensor the module was traced with: it was {how} "
                            f"since{_REASSIGNED}")
            if p is not None and p.requires_grad == t.frozen:
                now, then = ("requires grad now", "was frozen") if p.requires_grad else ("is frozen now",
                                                                                        "required grad")
                return (f"parameter '{t.name}' {now} but {then} when the module was traced: the graph holds the "
                        "trace's choice (a frozen parameter is a constant there); trace again")
        for path, ref, was in self.modes:
            m = ref()
            if m is not None and m.training != was:
                return (f"module '{path}' ({type(m).__name__}) is in {_MODE[m.training]} mode now but was in "
                        f"{_MODE[was]} mode when traced: the graph normalises with the "
                        f"{'batch' if was else 'running'} statistics, as it did then; trace again")
        return next((why for s in self.sources if (why := s.stale())), None)

    def _watched(self, path: str, shown: str, m: nn.Module, watch: Watch) -> str | None:
        """Why `m` (at `path`) is not as watched: its hooks are others (a refusal); or None, having warned, once
        each, about the settings set anew (they may be ones forward() never reads)."""
        d = m.__dict__
        if tuple(d.get(h) for h in _HOOKS) != watch.was[:2]:
            return f"module '{path}' has other forward hooks than when traced{_REHOOKED}"
        for k, then in zip(watch.keys, watch.was[2:], strict=True):
            now = d.get(k)
            if (now is then or now == then) or (shown, k) in self.warned:
                continue
            self.warned.add((shown, k))
            warnings.warn(f"{shown}.{k} is {now!r} now but was {then!r} when the module was traced: where forward() "
                          f"reads it, the graph computes with {then!r} (torch.export specialises Python values); "
                          "trace again after changing it", stacklevel=user_stacklevel())
        return None

    def retyped(self, params: Mapping[str, torch.Tensor]) -> str | None:
        """Why a parameter in `params` (the graph's, or values given for them) cannot run the captured calls: a
        dtype or shape other than at the trace (the module converted by `.float()`, a layer resized) stopped
        inside torch ('mat1 and mat2 must have the same dtype'), deep in a vertex's call."""
        for t in self.params:
            p = params.get(t.name)
            if p is not None and (p.shape != t.shape or p.dtype != t.dtype):  # a torch.Size is a tuple
                return (f"parameter '{t.name}' is {p.dtype} of shape {tuple(p.shape)}; the graph was traced with "
                        f"{t.dtype} of shape {t.shape} (was the module converted or changed since? trace again)")
        return None


_REASSIGNED = (" (a new nn.Parameter set in its place, load_state_dict(assign=True), a replaced layer), and the "
               "graph still reads the old tensors; trace again (load_state_dict without assign=True copies into "
               "the traced tensors)")
_REHOOKED = (" (added or removed since): the graph computes what forward() did with the hooks of then; trace "
             "again")
