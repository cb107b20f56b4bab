"""A vertex's local vector-Jacobian product: its prediction `mu = g(parents; theta)`, the pullback of a
cotangent (its error) to its parents (`J^T err`, their feedback) and to its parameters (the Hebbian term).

One strategy per vertex, all exact: `Autograd` on the vertex's one call, for every op, or `Placement` for a
strict view of its one tracked parent. `pull_back` pulls many vertices back in one engine call (their local
graphs share nothing). IL's ops, moved from point to point at every step, are `pcsim.ops.il_ops`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, TypeVar

import torch
from torch.utils import _pytree as pytree

from pcsim.graph.ir import Vertex
from pcsim.ops.table import entry

Params = Mapping[str, torch.Tensor]
F = TypeVar("F", bound=Callable)


def records_autograd(fn: F) -> F:
    """`fn` run with autograd recording whatever mode its caller is in. Every local VJP is autograd on one call:
    under `torch.inference_mode()` nothing is recorded (Z-IL and Fa-Z-IL returned zero updates, bp and check
    stopped inside torch), and check's oracle stopped under `torch.no_grad()`. Tensors made under inference
    mode (inputs, targets) cannot enter a recorded call: `fn` gets normal copies of them."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        if torch.is_grad_enabled() and not torch.is_inference_mode_enabled():  # the usual case: no context to enter
            return _with_normal_copies(fn, args, kwargs)
        with torch.inference_mode(False), torch.enable_grad():  # copies made here are normal tensors
            return _with_normal_copies(fn, args, kwargs)
    return run  # type: ignore[return-value]


def _holds_inference_tensors(tree) -> bool:
    """Whether a tensor made under inference mode sits in these (nested) arguments. By hand rather than through
    pytree, and without generators: it runs at every rule call."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            if item.is_inference():
                return True
        elif isinstance(item, (tuple, list)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return False


def _with_normal_copies(fn, args: tuple, kwargs: dict):
    """`fn(*args, **kwargs)` with a normal copy of each tensor made under inference mode (call outside that mode)."""
    if _holds_inference_tensors((args, kwargs)):
        args, kwargs = pytree.tree_map_only(torch.Tensor, lambda t: t.clone() if t.is_inference() else t,
                                            (args, kwargs))
    return fn(*args, **kwargs)


def call(vertex: Vertex, parents: Sequence[torch.Tensor], params: Params, constants: Params) -> torch.Tensor:
    """The vertex's prediction from its parents' values."""
    args, kwargs = vertex.bind(parents, params, constants)
    out = vertex.fn(*args, **kwargs)
    return out if vertex.select is None else out[vertex.select]


_FREED = object()  # an output already pulled back without `retain`


class Autograd:
    """`mu` of one vertex, and the pullback of a cotangent to the tracked parents and parameters.

    `track[i]`: pull back to parent i (default: every floating parent; never an integer one). Only the
    parents whose feedback is used need be tracked (a clamped input's cotangent is a matmul backprop does
    not make either), parameters only when a Hebbian term is wanted; absent terms stay None.
    The recorded output is kept until its pullback; it shares `mu`'s storage, so that costs no memory.
    """

    __slots__ = ("mu", "_out", "_tracked", "_parent_leaves", "_param_names", "_param_leaves")

    def __init__(self, vertex: Vertex, parents: Sequence[torch.Tensor], params: Params, constants: Params,
                 track: Sequence[bool] | None = None, wrt_params: bool = True):
        if track is None:
            track = [p.is_floating_point() or p.is_complex() for p in parents]
        self._tracked = tuple(track)
        self._parent_leaves = [p.detach().requires_grad_(True) for p, t in zip(parents, track, strict=True) if t]
        self._param_names = names = vertex.params if wrt_params else ()
        self._param_leaves = [params[n].detach().requires_grad_(True) for n in names]
        if names:
            params = {**params, **dict(zip(names, self._param_leaves, strict=True))}
        if not self._parent_leaves and not names:
            out = call(vertex, parents, params, constants)
        else:
            with torch.enable_grad():
                leaves = iter(self._parent_leaves)
                out = call(vertex, [next(leaves) if t else p for p, t in zip(parents, track, strict=True)],
                           params, constants)
        self._out = out if out.requires_grad else None
        self.mu = out.detach()

    def _results(self, grads: Sequence[torch.Tensor | None], n_parents: int
                 ) -> tuple[list[torch.Tensor | None], dict[str, torch.Tensor]]:
        # a sparse term (`nn.Embedding(sparse=True)`) dense, as every rule adds and scales its terms in place; so is
        # a parent's, where the embedding's weight is a population (renormalised by max_norm, from the token ids)
        param_cots = {n: g.to_dense() if g.is_sparse else g
                      for n, g in zip(self._param_names, grads[n_parents:], strict=False) if g is not None}
        it = iter(g.to_dense() if g is not None and g.is_sparse else g for g in grads[:n_parents])
        return [next(it) if t and n_parents else None for t in self._tracked], param_cots

    def pullback(self, cotangent: torch.Tensor, hebbian: bool = True, feedback: bool = True, retain: bool = False
                 ) -> tuple[list[torch.Tensor | None], dict[str, torch.Tensor]]:
        """(J^T cot per parent, None where untracked or unused; (d mu/d theta)^T cot per parameter reached).

        `hebbian=False` skips the parameter terms, `feedback=False` the parents'. Without `retain`
        the recorded call is freed: a second pullback raises.
        """
        return pull_back([(self, cotangent, hebbian, feedback)], retain)[0]


class Where(NamedTuple):
    """Where a part sits inside its parent: the parent's shape, and the part's view geometry."""

    parent_shape: tuple[int, ...]
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int


class Placed(NamedTuple):
    """A term that is `value` at `where` inside the parent and exactly zero elsewhere."""

    value: torch.Tensor
    where: Where


class Placement:
    """A vertex whose value is a strict view into its one tracked parent's storage (chunk, split, basic index):
    its feedback is its error put back in that place (`Placed`), without autograd, which would pad every
    part to the parent's size for the parent to add up."""

    __slots__ = ("mu", "_slot", "_n_parents", "_where")

    def __init__(self, mu: torch.Tensor, slot: int, n_parents: int, where: Where):
        self.mu, self._slot, self._n_parents, self._where = mu, slot, n_parents, where

    @classmethod
    def of(cls, vertex: Vertex, parents: Sequence[torch.Tensor], track: Sequence[bool],
           params: Params, constants: Params) -> Placement | None:
        """The vertex as a `Placement`, or None where it is not a strict view of one tracked parent."""
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

    def pullback(self, cotangent: torch.Tensor, hebbian: bool = True, feedback: bool = True, retain: bool = False
                 ) -> tuple[list[Placed | None], dict[str, torch.Tensor]]:
        place = self.placed(cotangent) if feedback else None
        return [place if i == self._slot else None for i in range(self._n_parents)], {}


def linearise(vertex: Vertex, parents: Sequence[torch.Tensor], params: Params, constants: Params,
              track: Sequence[bool] | None = None, wrt_params: bool = True) -> Autograd | Placement:
    """A `Placement` where the vertex selects part of a tracked parent, else `Autograd` on its call."""
    return ((track is not None and Placement.of(vertex, parents, track, params, constants))
            or Autograd(vertex, parents, params, constants, track, wrt_params))


def pull_back(items: Sequence[tuple[Autograd | Placement, torch.Tensor, bool, bool]], retain: bool = False
              ) -> list[tuple[list, dict[str, torch.Tensor]]]:
    """`pullback` of many (vertex, cotangent, hebbian, feedback) in one autograd call."""
    outs, cots, inputs, spans = [], [], [], []
    for lin, cot, hebbian, feedback in items:
        if isinstance(lin, Placement):
            spans.append(None)
            continue
        out = lin._out
        if out is _FREED:
            raise RuntimeError("this vertex's recorded call was already pulled back (pass retain=True to reuse it)")
        if not retain:
            lin._out = _FREED
        parents = lin._parent_leaves if feedback else []
        wanted = parents + (lin._param_leaves if hebbian else [])
        if out is None or not wanted:
            wanted, parents = [], []
        else:
            outs.append(out)
            cots.append(cot)
        spans.append((len(inputs), len(wanted), len(parents)))
        inputs.extend(wanted)
    grads = torch.autograd.grad(outs, inputs, cots, retain_graph=retain, allow_unused=True) if outs else ()
    return [lin.pullback(cot, feedback=feedback) if span is None
            else lin._results(grads[span[0]:span[0] + span[1]], span[2])
            for (lin, cot, _, feedback), span in zip(items, spans, strict=True)]
