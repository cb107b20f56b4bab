"""A vertex's prediction and its local vector-Jacobian product, from its own call alone.

`Linearisation` evaluates `mu_i = g_i(x_parents; theta_i)` with autograd recording only this one
call, then pulls a cotangent (the vertex's error) back to its parents (`J^T eps`, the feedback
its parents' value neurons receive) and to its parameters (`(d mu / d theta)^T eps`, the Hebbian
term). Nothing outside the vertex and its neighbours is touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from pcsim.graph.ir import Vertex


def call(vertex: Vertex, parents: Sequence[torch.Tensor], params: Mapping[str, torch.Tensor],
         constants: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The vertex's prediction from its parents' values."""
    args, kwargs = vertex.bind(parents, params, constants)
    out = vertex.fn(*args, **kwargs)
    return out if vertex.select is None else out[vertex.select]


def _differentiable(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


class Linearisation:
    """`mu` at the given parent values, and the pullback of a cotangent through this one call."""

    def __init__(self, vertex: Vertex, parents: Sequence[torch.Tensor],
                 params: Mapping[str, torch.Tensor], constants: Mapping[str, torch.Tensor],
                 wrt_params: bool = True, wrt_parents: Sequence[bool] | None = None):
        """`wrt_parents[i]` False: parent i is a constant here (a clamped input): no feedback to it."""
        self.vertex = vertex
        wanted = [True] * len(parents) if wrt_parents is None else wrt_parents
        self._parent_leaves = [p.detach().requires_grad_(True) if w and _differentiable(p) else p.detach()
                               for p, w in zip(parents, wanted, strict=True)]
        names = vertex.params if wrt_params else ()
        self._param_leaves = {n: params[n].detach().requires_grad_(True) for n in names}
        local_params = {**params, **self._param_leaves} if names else params
        with torch.enable_grad():
            self._out = call(vertex, self._parent_leaves, local_params, constants)
        self.mu = self._out.detach()

    def pullback(self, cotangent: torch.Tensor, retain: bool = False
                 ) -> tuple[list[torch.Tensor | None], dict[str, torch.Tensor]]:
        """(J^T cot for each parent, or None for clamped/integer ones; (d mu/d theta)^T cot per param)."""
        leaves = [p for p in self._parent_leaves if p.requires_grad] + list(self._param_leaves.values())
        if not leaves or not self._out.requires_grad:
            grads: Sequence[torch.Tensor | None] = [None] * len(leaves)
        else:
            grads = torch.autograd.grad(self._out, leaves, cotangent, retain_graph=retain, allow_unused=True)
        it = iter(grads)
        parent_cots = [next(it) if p.requires_grad else None for p in self._parent_leaves]
        param_cots = {}
        for name, leaf in self._param_leaves.items():
            g = next(it)
            param_cots[name] = torch.zeros_like(leaf) if g is None else g
        parent_cots = [torch.zeros_like(p) if (c is None and p.requires_grad) else c
                       for c, p in zip(parent_cots, self._parent_leaves, strict=True)]
        return parent_cots, param_cots
