"""`.detach()` and `torch.no_grad()` inside forward(): stop-gradients, kept through torch's decompositions.

torch.export records both (`aten.detach`, a `wrap_with_set_grad_enabled(False, ...)` block), but functionalisation
turns `detach` into `alias` and inlines the block, leaving nothing to say that backprop ignores those paths. So
before decomposing, each `detach` and each output of a gradient-free block becomes a call of `pcsim::stop_gradient`,
an op no decomposition touches, which the op table runs as `detach` (a zero Jacobian).

A tensor changed in place inside such a block (`weight.clamp_(-c, c)` under `no_grad`), or through a detached alias
(`w.detach().clamp_(-c, c)`, nn.Embedding's `max_norm`), keeps its history in autograd: the new value passes
gradient to the tensor as the identity would. That becomes `pcsim::straight_through(tensor, new value)` (export
read the tensor unchanged after the change).

`torch.inference_mode()` disables gradients as `no_grad` does, but torch.export drops it without a trace. While
exporting it is entered as `no_grad` (and `inference_mode(False)` as `enable_grad`), which export records.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator

import torch
import torch.fx as fx

from pcsim.capture.patching import patched

aten = torch.ops.aten


# Defined once, when pcsim is imported: the op's schema and kernels, as for any library's own op.
@torch.library.custom_op("pcsim::stop_gradient", mutates_args=())
def _stop_gradient(x: torch.Tensor) -> torch.Tensor:
    return x.clone()  # an op's output may not alias its input


_stop_gradient.register_fake(torch.empty_like)
STOP_GRADIENT = torch.ops.pcsim.stop_gradient.default


@torch.library.custom_op("pcsim::straight_through", mutates_args=())
def _straight_through(source: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return value.clone()


_straight_through.register_fake(lambda source, value: torch.empty_like(value))
STRAIGHT_THROUGH = torch.ops.pcsim.straight_through.default


_INFERENCE_MODE = torch.autograd.grad_mode.inference_mode
_INFERENCE_ENTER, _INFERENCE_EXIT = _INFERENCE_MODE.__enter__, _INFERENCE_MODE.__exit__  # torch's own, taken once


def _enter_as_grad_mode(self) -> None:
    self._pcsim_grad_mode = torch.no_grad() if self.mode else torch.enable_grad()
    self._pcsim_grad_mode.__enter__()


def _exit_as_grad_mode(self, *exc) -> None:
    self.__dict__.pop("_pcsim_grad_mode").__exit__(*exc)


@contextlib.contextmanager
def inference_mode_as_grad_mode() -> Iterator[None]:
    """Inside, `torch.inference_mode(mode)` (as a context or a decorator) is `set_grad_enabled(not mode)`."""
    with (patched(_INFERENCE_MODE, "__enter__", _enter_as_grad_mode, _INFERENCE_ENTER),
          patched(_INFERENCE_MODE, "__exit__", _exit_as_grad_mode, _INFERENCE_EXIT)):
        yield


def _grad_disabled_block(n: fx.Node) -> bool:
    return n.target is torch.ops.higher_order.wrap_with_set_grad_enabled and n.args and n.args[0] is False


def mark_stop_gradients(program: torch.export.ExportedProgram) -> None:
    """Rewrite the (not yet decomposed) program's stop-gradients as `pcsim::stop_gradient` calls, in place:
    in its graph and in the graphs of its blocks (a `detach` inside an autocast or grad-enabled block)."""
    for gm in program.graph_module.modules():
        if isinstance(gm, fx.GraphModule) and _mark(gm):
            gm.recompile()


def _in_place(n) -> bool:
    schema = getattr(n.target, "_schema", None) if isinstance(n, fx.Node) and n.op == "call_function" else None
    return schema is not None and schema.is_mutable and bool(n.args)


def _mutated_input(block: fx.GraphModule, index: int) -> int | None:
    """Which of the block's inputs its `index`-th result is, changed in place (`x.clamp_(..)`, `x.mul_(2).add_(1)`),
    or None where the result is a new tensor."""
    result = next(n for n in block.graph.nodes if n.op == "output").args[0][index]
    if not _in_place(result):
        return None
    while _in_place(result):
        result = result.args[0]  # an in-place op returns the tensor it changed, its first argument
    placeholders = [n for n in block.graph.nodes if n.op == "placeholder"]
    return placeholders.index(result) if result in placeholders else None


def _changed_through(graph: fx.Graph, detached: fx.Node) -> None:
    """`t.detach().clamp_(..)` changes `t` itself: each later reader of `t` reads the changed value, passing
    gradient to `t` straight through (as autograd, whose `t` keeps its history), in place of the unchanged `t`
    export hands it. `detached` already stops gradient: its readers get the changed value, without gradient."""
    base, aliases, changes = detached.args[0], {detached}, []
    for n in list(graph.nodes):  # in program order: an in-place op returns the tensor it changed, an alias too
        if _in_place(n) and n.args[0] in aliases:
            aliases.add(n)
            changes.append(n)
    if not isinstance(base, fx.Node) or not changes:
        return
    order = {n: i for i, n in enumerate(graph.nodes)}
    through = []  # (position, the value after that change)
    for change in changes:
        with graph.inserting_after(change):
            node = graph.call_function(STRAIGHT_THROUGH, (base, change))
        node.meta = dict(base.meta)
        through.append((order[change], node))
    for user in list(base.users):
        if user.target is STRAIGHT_THROUGH or user not in order:
            continue
        latest = [node for at, node in through if at < order[user]]
        if latest:
            user.replace_input_with(base, latest[-1])


def _mark(gm: fx.GraphModule) -> bool:
    graph = gm.graph
    changed = False
    for n in list(graph.nodes):
        if n.op != "call_function":
            continue
        if n.target is aten.detach.default or n.target is aten.detach_.default:  # `h.detach_()` stops it in place
            if n.target is aten.detach.default:
                _changed_through(graph, n)
            n.target = STOP_GRADIENT
            changed = True
        elif _grad_disabled_block(n):  # the block's results are read through `getitem`s
            for item in [u for u in n.users if u.target is operator.getitem]:
                val = item.meta.get("val")
                if not (isinstance(val, torch.Tensor) and val.is_floating_point()):
                    continue
                source = _mutated_input(getattr(gm, n.args[1].target), item.args[1])
                if source is not None:  # the tensor before the block: read after it, it is the changed one
                    with graph.inserting_before(n):
                        before = graph.call_function(aten.clone.default, (n.args[2 + source],))
                    before.meta = dict(n.args[2 + source].meta)
                with graph.inserting_after(item):
                    stop = (graph.call_function(STOP_GRADIENT, (item,)) if source is None
                            else graph.call_function(STRAIGHT_THROUGH, (before, item)))
                stop.meta = dict(item.meta)
                item.replace_all_uses_with(stop, delete_user_cb=lambda user, stop=stop: user is not stop)
                changed = True
    return changed
