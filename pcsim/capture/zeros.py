"""Structural zeros: a zero the program itself fixes (a zero initial state), and what it makes of its readers.

`nn.GRU` and `nn.LSTM` called without a state, and hand-written cells starting from `torch.zeros`, compute
`linear(h0, W_hh, b_hh)` and `f * c0` at the first step with `h0 = c0 = 0`: a matrix product per gate per update
whose result is known, the bias or zero. Backprop's gradient through them is exactly zero too (`0 x error`), so
leaving them out changes no value and no update, to the bit.

A zero is *structural* only when computed inside the program from nothing that varies (`zeros`, `new_zeros`,
`full(0)` and views of them), never read from a buffer or an input, which can change after the trace. What an op
makes of one is its op-table entry's `zero` rule (`pcsim.ops.table`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

from pcsim.graph.ir import Computed
from pcsim.ops.table import entry, op_name

aten = torch.ops.aten


@dataclass(frozen=True)
class Rewrite:
    """`zero`: the node is a structural zero itself; `alias`: it equals node `keep`; `bias`: it is
    node `keep` (a bias) broadcast to its shape."""

    kind: str
    keep: fx.Node | None = None


def split_broadcast(src: torch.Tensor, sizes, dim: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """`src.expand(shape).split(sizes, dim)`, split before the broadcast where `dim` is one of `src`'s own.

    The bias standing for `linear(0, W, b)` is broadcast to the batch and then split per gate; split
    first, each gate's backward sums only its own part of the batch instead of assembling the whole
    broadcast gradient. Same values; where `dim` is broadcast itself, the call as captured."""
    d = dim % len(shape)
    lead = len(shape) - src.dim()
    if d < lead or src.shape[d - lead] != shape[d]:
        return src.expand(shape).split(sizes, dim)
    return tuple(p.expand(*shape[:d], p.shape[d - lead], *shape[d + 1:]) for p in src.split(sizes, d - lead))


def split_of_broadcast(n: fx.Node, source: Any) -> Computed | None:
    """A parameter-only split of a broadcast bias (the `bias` rewrite's `expand`) as `split_broadcast`;
    None for any other node."""
    if (n.target not in (aten.split_with_sizes.default, aten.split.Tensor)
            or not (isinstance(source, Computed) and source.fn is aten.expand.default)):
        return None
    dim = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)
    src, shape = source.args
    sizes = tuple(n.args[1]) if isinstance(n.args[1], list) else n.args[1]
    return Computed(split_broadcast, (src, sizes, dim, tuple(shape)),
                    label=f"{op_name(n.target)}('{n.name}') of a broadcast")


class StructuralZeros:
    """Which nodes are fixed by the program alone, and which of those are zero."""

    def __init__(self, values: dict[fx.Node, Any]):
        self.values = values
        self.fixed: set[fx.Node] = set()
        self.zero: set[fx.Node] = set()

    def constant(self, n: fx.Node) -> None:
        """`n` reads no population and no parameter: note whether it is fixed, and zero."""
        if n.op != "call_function" or not all(a in self.fixed for a in n.all_input_nodes):
            return  # read from a buffer or a constant tensor: its value may change after the trace
        self.fixed.add(n)
        value = self.values[n]
        if isinstance(value, torch.Tensor) and value.dtype.is_floating_point and not value.any():
            self.zero.add(n)

    def rewrite(self, n: fx.Node) -> Rewrite | None:
        """What `n` is, given the structural zeros among its arguments (None: a call as captured)."""
        rule = entry(n.target).zero
        if not rule or not any(isinstance(a, fx.Node) and a in self.zero for a in n.args):
            return None
        value = self.values[n]
        if not isinstance(value, torch.Tensor) or not value.dtype.is_floating_point:
            return None
        if rule == "absorb":
            return Rewrite("zero")
        if rule == "bias":  # linear(0, W, b) = b, broadcast
            if n.args[0] not in self.zero:
                return None
            bias = n.args[2] if len(n.args) > 2 else n.kwargs.get("bias")
            return Rewrite("zero") if bias is None else Rewrite("bias", bias)
        if rule == "drop":
            return self._drop(n, value)
        raise ValueError(f"op-table entry {entry(n.target).name!r} has an unknown zero rule {rule!r}")

    def _drop(self, n: fx.Node, value: torch.Tensor) -> Rewrite | None:
        """a + 0 = a, 0 + a = a (alpha 1), a - 0 = a: where `a` already has the result's shape and dtype."""
        if len(n.args) != 2:
            return None
        a, b = n.args
        if b in self.zero:
            keep = a
        elif a in self.zero and entry(n.target).name == "add" and n.kwargs.get("alpha", 1) == 1:
            keep = b
        else:
            return None
        kept = self.values.get(keep) if isinstance(keep, fx.Node) else None
        if not isinstance(kept, torch.Tensor) or kept.shape != value.shape or kept.dtype != value.dtype:
            return None
        return Rewrite("alias", keep)
