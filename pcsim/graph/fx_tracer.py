"""torch.fx plumbing for `trace`: the tracer (leaf modules, expansions, stack traces), the
recorder that runs the traced program once on the example inputs, and node descriptions for errors."""

from __future__ import annotations

from typing import Any

import torch.fx as fx
from torch import nn

from pcsim.errors import TraceError
from pcsim.graph.provenance import user_line
from pcsim.ops.modules import MODULE_CONVERTERS, MODULE_EXPANSIONS, NEEDS_EXAMPLE


class Tracer(fx.Tracer):
    """fx's tracer, with pcsim's leaf modules, composite modules expanded (ops/expansions.py) and
    a stack trace per node, so errors can name the user's line."""

    def __init__(self, examples: dict[int, list[dict]] | None = None, fused: frozenset[type] = frozenset()):
        super().__init__()
        self.fused = fused  # module types kept whole (ops/fused.py), not expanded
        self.record_stack_traces = True
        self.examples = {k: list(v) for k, v in (examples or {}).items()}  # id(module) -> example calls, in order

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m) in MODULE_CONVERTERS or type(m) in self.fused or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        expand = None if type(m) in self.fused else MODULE_EXPANSIONS.get(type(m))
        if expand is None:
            return super().call_module(m, forward, args, kwargs)
        example = {}
        if type(m) in NEEDS_EXAMPLE:
            pending = self.examples.get(id(m))
            if not pending:
                raise TraceError(f"{type(m).__name__} '{self.path_of_module(m)}' is called more often while "
                                 "tracing than when the module ran on the example inputs")
            example = pending.pop(0)
        return expand(m, Scope(self, m, example), *args, **kwargs)


class Scope:
    """What an expansion may ask: a module's parameters as get_attr proxies, its example shapes."""

    def __init__(self, tracer: Tracer, module: nn.Module, example: dict):
        self.tracer, self.module, self.example = tracer, module, example
        self.qual = tracer.path_of_module(module)

    def __call__(self, attr: str):
        if getattr(self.module, attr, None) is None:
            return None
        return self.tracer.create_proxy("get_attr", f"{self.qual}.{attr}" if self.qual else attr, (), {})


class Recorder(fx.Interpreter):
    """Runs the traced program once, keeping every node's value (shapes, folded constants)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        try:
            out = super().run_node(n)
        except Exception as e:  # noqa: BLE001 - reported with the node at fault
            raise TraceError(f"the module failed at fx node '{n.name}' ({describe(n, self.module)}"
                             f"{line_suffix(n)}) on the example inputs: {type(e).__name__}: {e}{line_detail(n)}") from e
        self.values[n] = out
        return out


def line_suffix(n: fx.Node) -> str:
    """' at file.py:12' for the user's line a node came from, or ''."""
    line = user_line(n.stack_trace)
    return f" at {line.short}" if line else ""


def line_detail(n: fx.Node) -> str:
    """The user's frame a node came from, as a detail line, or ''."""
    line = user_line(n.stack_trace)
    return f"\n{line}" if line else ""


def describe(n: fx.Node, gm: nn.Module) -> str:
    if n.op == "call_module":
        return f"call_module {n.target} ({type(gm.get_submodule(n.target)).__name__})"
    if n.op == "call_function":
        return f"call_function {getattr(n.target, '__module__', '')}.{getattr(n.target, '__name__', n.target)}"
    return f"{n.op} {n.target}"
