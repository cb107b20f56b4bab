"""Exact shortcuts of the synchronous sweeps (Z-IL, autonomous Fa-Z-IL): lean local VJPs and the skip rule.

`LocalVJP` is `pcsim.ops.local.Linearisation` without what the exact rules never read: autograd
tracks only the parents whose feedback is used (latent ones: the cotangent of a clamped input is
a whole extra matmul that backprop does not compute either) and the parameters only when a
Hebbian term is wanted, and absent results stay `None` instead of being materialised as zeros.
`pull_back` pulls a whole step's vertices back in one engine call. (The wavefront needs none of
this: it is one autograd graph over all vertices, see `pcsim.algorithms.fa_zil_wavefront`.)

`still(...)` is the skip rule of the synchronous sweeps: a vertex whose own value and whose
latent parents' values still hold their feed-forward tensors (no displacement), and whose
parameters are the original tensors, recomputes exactly its feed-forward prediction (same
kernels on the same storage: see `Problem.feedforward`), so its error is exactly zero and so
are its feedback and Hebbian terms: nothing needs computing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.autograd.graph import get_gradient_edge

from pcsim.algorithms.problem import Problem
from pcsim.algorithms.sums import Placed, Where
from pcsim.graph.ir import Vertex
from pcsim.ops.local import call
from pcsim.ops.table import entry


def aligned(t: torch.Tensor) -> torch.Tensor:
    """`t` itself when it owns contiguous storage from its start, else a fresh contiguous copy.

    MKL and the vectorised element-wise kernels can round differently on views that start inside
    a storage; every value a child reads must therefore start at an allocator-aligned address.
    """
    if t.is_contiguous() and t.storage_offset() == 0:
        return t
    return t.detach().clone(memory_format=torch.contiguous_format)


class LocalVJP:
    """`mu` of one vertex, and the pullback of one cotangent to the tracked parents and parameters.

    The tracked parents enter as autograd leaves, so each keeps its parent's storage alive until
    the pullback: the synchronous sweeps that use this hold every value for the whole step anyway.
    Only the output's gradient edge is kept, not the output tensor.
    """

    __slots__ = ("mu", "_edge", "_tracked", "_parent_leaves", "_param_names", "_param_leaves")

    def __init__(self, vertex: Vertex, parents: Sequence[torch.Tensor], track: Sequence[bool],
                 params: Mapping[str, torch.Tensor], constants: Mapping[str, torch.Tensor], wrt_params: bool):
        self._tracked = tuple(track)
        self._parent_leaves = [p.detach().requires_grad_(True) for p, t in zip(parents, track, strict=True) if t]
        names = vertex.params if wrt_params else ()
        self._param_names = names
        self._param_leaves = [params[n].detach().requires_grad_(True) for n in names]
        if names:
            params = {**params, **dict(zip(names, self._param_leaves, strict=True))}
        if not self._parent_leaves and not names:
            out = call(vertex, parents, params, constants)
        else:
            with torch.enable_grad():
                leaves = iter(self._parent_leaves)
                args = [next(leaves) if t else p for p, t in zip(parents, track, strict=True)]
                out = call(vertex, args, params, constants)
        self._edge = get_gradient_edge(out) if out.requires_grad else None
        self.mu = out.detach()

    def _inputs(self, hebbian: bool, feedback: bool) -> tuple[list[torch.Tensor], int]:
        """The autograd inputs of one pullback (parents' first), and how many are the parents'."""
        parents = self._parent_leaves if feedback else []
        return parents + (self._param_leaves if hebbian else []), len(parents)

    def _results(self, grads: Sequence[torch.Tensor | None], n_parents: int
                 ) -> tuple[list[torch.Tensor | None], dict[str, torch.Tensor]]:
        param_cots = {name: g for name, g in zip(self._param_names, grads[n_parents:], strict=False)
                      if g is not None}
        it = iter(grads[:n_parents])
        return [next(it) if t and n_parents else None for t in self._tracked], param_cots

    def pullback(self, cotangent: torch.Tensor, hebbian: bool = True, feedback: bool = True
                 ) -> tuple[list[torch.Tensor | None], dict[str, torch.Tensor]]:
        """(J^T cot per parent, None where untracked or unused; (d mu/d theta)^T cot per parameter reached).

        `hebbian=False` skips the parameter terms (autograd then computes no weight products),
        `feedback=False` the parents' terms.
        Frees this vertex's autograd graph: each vertex is pulled back once.
        """
        return pull_back([(self, cotangent, hebbian, feedback)])[0]




class SliceVJP:
    """A vertex whose value is a strict part of its one latent parent's: a chunk, split, unbind or
    basic index, i.e. a view into the parent's storage. Its feedback is its error put back in that
    place, a `Placed` term that `Sums` writes into the parent's sum directly, with no autograd:
    autograd would pad every part to the parent's full size (a cat with zeros) and the parent
    would then add up the pads, full-size passes that backprop (one fused op) does not make.
    """

    __slots__ = ("mu", "_slot", "_n_parents", "_where")

    def __init__(self, mu: torch.Tensor, slot: int, n_parents: int, where: Where):
        self.mu, self._slot, self._n_parents, self._where = mu, slot, n_parents, where

    @classmethod
    def of(cls, vertex: Vertex, parents: Sequence[torch.Tensor], track: Sequence[bool],
           params: Mapping[str, torch.Tensor], constants: Mapping[str, torch.Tensor]) -> SliceVJP | None:
        """The vertex as a `SliceVJP`, or None where it is not a strict view of one tracked parent."""
        if not entry(vertex.op).selection or vertex.params or sum(bool(t) for t in track) != 1:
            return None
        slot = [bool(t) for t in track].index(True)
        parent = parents[slot]
        if not parent.is_contiguous():
            return None
        out = call(vertex, parents, params, constants)
        if (not isinstance(out, torch.Tensor) or not 0 < out.numel() < parent.numel()
                or out.untyped_storage().data_ptr() != parent.untyped_storage().data_ptr()):
            return None  # a copy (advanced indexing) or the whole parent: autograd's pullback is the right one
        where = Where(tuple(parent.shape), tuple(out.shape), tuple(out.stride()),
                      out.storage_offset() - parent.storage_offset())
        return cls(out, slot, len(parents), where)

    def placed(self, cotangent: torch.Tensor) -> Placed:
        """The feedback to the parent: `cotangent` in this vertex's place, zero elsewhere."""
        return Placed(cotangent, self._where)

    def _results(self, cotangent: torch.Tensor, feedback: bool
                 ) -> tuple[list[Placed | None], dict[str, torch.Tensor]]:
        place = self.placed(cotangent) if feedback else None
        return [place if i == self._slot else None for i in range(self._n_parents)], {}


def local_vjp(vertex: Vertex, parents: Sequence[torch.Tensor], track: Sequence[bool],
              params: Mapping[str, torch.Tensor], constants: Mapping[str, torch.Tensor], wrt_params: bool
              ) -> LocalVJP | SliceVJP:
    """A `SliceVJP` where the vertex selects part of a parent, else a `LocalVJP` (autograd on its call)."""
    return (SliceVJP.of(vertex, parents, track, params, constants)
            or LocalVJP(vertex, parents, track, params, constants, wrt_params))


def pull_back(items: Sequence[tuple[LocalVJP | SliceVJP, torch.Tensor, bool, bool]]
              ) -> list[tuple[list[torch.Tensor | None], dict[str, torch.Tensor]]]:
    """`LocalVJP.pullback` for many vertices in one autograd call: (vertex, cotangent, hebbian, feedback).

    The local graphs share nothing, so each vertex gets exactly the terms its own pullback would
    (same kernels, nothing summed across vertices); one engine call per step or level instead of
    one per vertex removes most of the per-vertex overhead that backprop does not have.
    """
    edges, cots, inputs, spans = [], [], [], []
    for lin, cot, hebbian, feedback in items:
        if isinstance(lin, SliceVJP):
            spans.append(None)
            continue
        edge, lin._edge = lin._edge, None
        wanted, n_parents = lin._inputs(hebbian, feedback)
        if edge is None or not wanted:
            wanted, n_parents = [], 0
        else:
            edges.append(edge)
            cots.append(cot)
        spans.append((len(inputs), len(wanted), n_parents))
        inputs.extend(wanted)
    grads = torch.autograd.grad(edges, inputs, cots, allow_unused=True) if edges else ()
    return [lin._results(cot, feedback) if span is None else lin._results(grads[span[0]:span[0] + span[1]], span[2])
            for (lin, cot, _, feedback), span in zip(items, spans, strict=True)]


def still(name: str, disp: Mapping[str, torch.Tensor], latent_parents: Sequence[str],
          own_params: Sequence[str], params: Mapping[str, torch.Tensor],
          original: Mapping[str, torch.Tensor]) -> bool:
    """True when vertex `name` provably has error, feedback and Hebbian terms exactly zero (see above)."""
    if name in disp or any(p in disp for p in latent_parents):
        return False
    return all(params[q] is original[q] for q in own_params)


def complete(grads: dict[str, torch.Tensor], problem: Problem) -> dict[str, torch.Tensor]:
    """Every parameter of the module (as `Problem.zero_grads`), zero where no term arrived."""
    return {n: grads[n] if n in grads else torch.zeros_like(problem.params.get(n, p))
            for n, p in problem.graph.params.items()}
