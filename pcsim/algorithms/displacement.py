"""The synchronous sweeps' state in displacement form: each vertex's error and its update.

Z-IL and autonomous Fa-Z-IL carry the feed-forward values `x_ff` and negated displacements
`neg_disp = -(x - x_ff)` (absent: zero), errors as `delta = -eps = mu - x`, so the pullbacks are in
autograd's sign. A general vertex's delta comes from its prediction (`vertex_delta`); one whose
prediction is a linear map of its latent parents needs no value (`linear_form`), and at gamma 1 the
update has a closed form. These round differently from the general form; at Z-IL's conditions no
later due vertex reads the values they change.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence

import torch

from pcsim.algorithms.problem import aligned
from pcsim.graph.ir import Vertex
from pcsim.ops.il_ops import is_add, is_linear
from pcsim.ops.local import Placed, Placement


class Values:
    """The state's values within one step, `x = x_ff - neg_disp` (base + disp bit for bit), each
    computed on its first read: a moved vertex read only by inserted identities needs none."""

    __slots__ = ("_base", "_neg_disp", "_clamped", "_moved")

    def __init__(self, base: Mapping[str, torch.Tensor], neg_disp: Mapping[str, torch.Tensor],
                 clamped: Mapping[str, torch.Tensor]):
        self._base, self._neg_disp, self._clamped = base, neg_disp, clamped
        self._moved: dict[str, torch.Tensor] = {}

    def __call__(self, name: str) -> torch.Tensor:
        if name in self._neg_disp:
            if name not in self._moved:
                self._moved[name] = self._base[name] - self._neg_disp[name]
            return self._moved[name]
        return self._base[name] if name in self._base else self._clamped[name]


def _minus(own: torch.Tensor | None, neg_pred: torch.Tensor) -> torch.Tensor:
    """delta = neg_disp - neg_pred, with an absent own displacement exactly zero."""
    return -neg_pred if own is None else own - neg_pred


def identity_delta(name: str, parent: str, neg_disp: Mapping[str, torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(delta, neg_pred) of an identity vertex inserted by `level()` that moved or whose parent moved.

    Its prediction is its parent's value and both share the feed-forward value, so `neg_pred` is the
    parent's `neg_disp` itself: no autograd, and no cancellation of `(x_ff - d_p) - x_ff`. Where the
    parent has not moved, as at Z-IL's due step, these are the general form's bits.
    """
    own, up = neg_disp.get(name), neg_disp.get(parent)
    return (own, None) if up is None else (_minus(own, up), up)


def selection_delta(vertex: Vertex, neg_disp: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor],
                    constants: Mapping[str, torch.Tensor]) -> tuple[Placement, torch.Tensor, torch.Tensor] | None:
    """(local VJP, delta, neg_pred) of a vertex that selects part of its one latent parent, which moved.

    A selection is an index map: `neg_pred` is the same view of `neg_disp[parent]` (no pass), without
    forming the parent's value. None where the vertex is not such a view.
    """
    if len(vertex.parents) != 1 or vertex.parents[0] not in neg_disp:
        return None
    lin = Placement.of(vertex, [neg_disp[vertex.parents[0]]], [True], params, constants)  # None unless a view
    return None if lin is None else (lin, _minus(neg_disp.get(vertex.name), lin.mu), lin.mu)


def affine_delta(vertex: Vertex, neg_disp: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor],
                 latent: Container[str], parent_shapes: Sequence[tuple[int, ...]]
                 ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, torch.Tensor]]] | None:
    """(delta, neg_pred, feedback per latent parent) of a linear layer or a sum whose latent parents moved.

    An affine map's prediction moves by its linear part applied to the parents' displacements:
    `neg_pred = neg_disp_p W^T` for `F.linear` (no bias, no parent value formed), the sum of the parents'
    `neg_disp` for `a + b`; the Jacobian is constant, so the feedback is `delta W` (or delta itself).
    None for any other vertex, or one whose latent parents have not moved.
    """
    if is_linear(vertex):
        p = vertex.parents[0]
        if p not in neg_disp or p not in latent:
            return None
        w = params[vertex.args[1].name].detach()
        pred = neg_disp[p].matmul(w.t())
        d = _minus(neg_disp.get(vertex.name), pred)
        return d, pred, [(p, d.matmul(w))]
    if is_add(vertex, parent_shapes):
        moved = [neg_disp[p] for p in vertex.parents if p in neg_disp]
        if not moved:
            return None
        pred = moved[0] if len(moved) == 1 else moved[0] + moved[1]
        d = _minus(neg_disp.get(vertex.name), pred)
        return d, pred, [(p, d) for p in vertex.parents if p in latent]
    return None


def linear_form(vertex: Vertex, neg_disp: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor],
                constants: Mapping[str, torch.Tensor], latent: Container[str],
                parent_shapes: Sequence[tuple[int, ...]], closed: bool
                ) -> tuple[torch.Tensor, torch.Tensor | None, list[tuple[str, torch.Tensor | Placed]]] | None:
    """(delta, neg_pred, feedback terms per parent) of a hidden vertex whose prediction is a linear
    map of its parents, from the displacements alone; None where the general form is needed.

    An inserted identity always takes its form; a selection or an affine vertex only where `closed`,
    the caller's promise that the values these forms round differently are never read (Z-IL's
    conditions, see `advance_displacements`), so that the study options keep the literal sums.
    """
    if vertex.inserted:
        d, pred = identity_delta(vertex.name, vertex.parents[0], neg_disp)
        return d, pred, [(vertex.parents[0], d)]
    if not closed:
        return None
    selected = selection_delta(vertex, neg_disp, params, constants)
    if selected is not None:
        lin, d, pred = selected
        return d, pred, [(vertex.parents[0], lin.placed(d))]
    return affine_delta(vertex, neg_disp, params, latent, parent_shapes)


def vertex_delta(mu: torch.Tensor, x_ff: torch.Tensor, neg_disp: torch.Tensor | None, with_pred: bool
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(delta, neg_pred) of a hidden vertex: `delta = (mu - x_ff) + neg_disp` in autograd's sign, and
    `neg_pred = x_ff - mu` when the closed-form update (`advance_displacements` at gamma 1) wants it
    (`neg_disp - (x_ff - mu)` is the same delta bit for bit: negation is exact)."""
    if not with_pred:
        d = mu - x_ff
        return (d if neg_disp is None else d.add_(neg_disp)), None  # d is fresh: in place, the same sum
    pred = x_ff - mu
    return (mu - x_ff if neg_disp is None else neg_disp - pred), pred


def advance_displacements(latent: Sequence[str], outputs: set[str], neg_disp: Mapping[str, torch.Tensor],
            delta: Mapping[str, torch.Tensor], neg_feedback: Mapping[str, torch.Tensor],
            gamma: float, neg_pred: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """x_i += gamma (-eps_i + feedback_i) for every hidden vertex, carried in autograd's sign: `delta = -eps`,
    `neg_feedback = -feedback` and the returned `-(x - x_ff)`, so (negation being exact) the literal
    `advance_values` (tests/algorithms/sweep_reference.py) with every bit mirrored.

    At gamma 1 with `neg_pred` (`x_ff - mu` per vertex in `delta`; absent: zero) the update takes its closed
    form x <- mu + feedback, `neg_disp <- neg_feedback + neg_pred`: one pass instead of two (rounding otherwise).
    """
    new = dict(neg_disp)
    closed = gamma == 1.0 and neg_pred is not None
    for name in latent:
        if name in outputs or (name not in delta and name not in neg_feedback):
            continue
        if name not in delta:
            step = neg_feedback[name]  # -0 + f is f bit for bit: a still vertex's drive is its feedback
        elif closed:
            f, p = neg_feedback.get(name), neg_pred.get(name)
            if f is None and p is None:  # x <- mu = x_ff: back to the feed-forward tensor itself
                new.pop(name, None)
                continue
            moved = f if p is None else p if f is None else f + p
            if name not in new and not bool((moved != 0).any()):
                continue
            new[name] = aligned(moved)
            continue
        elif name in neg_feedback:
            step = neg_feedback[name] - delta[name]
        else:
            step = -delta[name]
        step = step if gamma == 1.0 else gamma * step  # 1.0 * drive is drive: no pass for it
        step = aligned(step)  # one layout for every state, see Problem.feedforward
        if name not in new and not bool((step != 0).any()):
            continue  # an unmoved population keeps its feed-forward tensor: same bits, same alignment
        new[name] = step if name not in new else new[name] + step
    return new
