"""The functions that take a traced graph refuse anything else by name.

`pcsim.check` takes the module and the rules take its graph: passing the module to `pcsim.zil` (or None, or
a path) failed on the first graph attribute the rule read, as `AttributeError: 'Sequential' object has no
attribute 'level'` ('pruned', 'literal_inputs', 'sources' in other rules), which says nothing of the call.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from torch import nn

from pcsim.graph.ir import Graph

F = TypeVar("F")


def described(obj: Any) -> str:
    """What was passed, as a message names it."""
    if isinstance(obj, nn.Module):
        return f"a {type(obj).__name__} (a torch.nn.Module)"
    if isinstance(obj, type):
        return f"the class {obj.__name__}"
    return "None" if obj is None else f"a {type(obj).__name__}"


def takes_graph(fn: F) -> F:
    """`fn(graph, ...)` refuses a first argument that is not a `Graph`, naming `fn` and what to pass."""
    @functools.wraps(fn)  # type: ignore[arg-type]
    def run(*args, **kwargs):
        graph = args[0] if args else kwargs.get("graph")
        if not isinstance(graph, Graph):
            name = fn.__name__  # type: ignore[attr-defined]
            raise TypeError(f"{name}() takes the graph that pcsim.trace returns, got {described(graph)}: "
                            f"graph = pcsim.trace(module, *inputs), then {name}(graph, inputs, target, ...)"
                            + (" (pcsim.check is the one that takes the module itself)"
                               if isinstance(graph, nn.Module) else ""))
        return fn(*args, **kwargs)
    return run  # type: ignore[return-value]
