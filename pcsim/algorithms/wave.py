"""Exact shortcuts shared by Z-IL and Fa-Z-IL: lean local VJPs and the skip rule for still vertices.

`LocalVJP` is `pcsim.ops.local.Linearisation` without what the exact rules never read: autograd
tracks only the parents whose feedback is used (latent ones: the cotangent of a clamped input is
a whole extra matmul that backprop does not compute either) and the parameters only when a
Hebbian term is wanted; absent results stay `None` instead of being materialised as zeros; and
it holds no tensor that its op did not save, so a forward pass of them costs backprop's memory.

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
from pcsim.graph.ir import Vertex
from pcsim.ops.local import call


def aligned(t: torch.Tensor) -> torch.Tensor:
    """`t` itself when it owns contiguous storage from its start, else a fresh contiguous copy.

    MKL and the vectorised element-wise kernels can round differently on views that start inside
    a storage; every value a child reads must therefore start at an allocator-aligned address.
    """
    if t.is_contiguous() and t.storage_offset() == 0:
        return t
    return t.detach().clone(memory_format=torch.contiguous_format)


class _Attach(torch.autograd.Function):
    """A parent's value entering a child's local graph. Its backward hands the cotangent to the
    child (`holder[slot]`) instead of a leaf: no leaf tensor keeps the parent's storage alive,
    so a value lives exactly as long as the child's own op saves it, as in backprop."""

    @staticmethod
    def forward(ctx, value, token, holder, slot):
        ctx.holder, ctx.slot = holder, slot
        return value.view_as(value)

    @staticmethod
    def backward(ctx, cot):
        ctx.holder[ctx.slot] = cot
        return None, None, None, None


class LocalVJP:
    """`mu` of one vertex, and the pullback of one cotangent to the tracked parents and parameters.

    Only the output's gradient edge is kept, not the output tensor: after the forward pass the
    caller may drop `mu` (set it to None) and the vertex then holds only what its op saved.
    """

    __slots__ = ("mu", "_edge", "_tracked", "_cots", "_token", "_param_names", "_param_leaves")

    def __init__(self, vertex: Vertex, parents: Sequence[torch.Tensor], track: Sequence[bool],
                 params: Mapping[str, torch.Tensor], constants: Mapping[str, torch.Tensor], wrt_params: bool):
        self._tracked = tuple(track)
        self._cots: dict[int, torch.Tensor] = {}
        self._token = torch.empty((), requires_grad=True) if any(track) else None
        names = vertex.params if wrt_params else ()
        self._param_names = names
        self._param_leaves = [params[n].detach().requires_grad_(True) for n in names]
        if names:
            params = {**params, **dict(zip(names, self._param_leaves, strict=True))}
        if self._token is None and not names:
            out = call(vertex, parents, params, constants)
        else:
            with torch.enable_grad():
                args = [_Attach.apply(p, self._token, self._cots, i) if t else p
                        for i, (p, t) in enumerate(zip(parents, track, strict=True))]
                out = call(vertex, args, params, constants)
        self._edge = get_gradient_edge(out) if out.requires_grad else None
        self.mu = out.detach()

    def pullback(self, cotangent: torch.Tensor, hebbian: bool = True, feedback: bool = True
                 ) -> tuple[list[torch.Tensor | None], dict[str, torch.Tensor]]:
        """(J^T cot per parent, None where untracked or unused; (d mu/d theta)^T cot per parameter reached).

        `hebbian=False` skips the parameter terms (autograd then computes no weight products),
        `feedback=False` the parents' terms.
        Frees this vertex's autograd graph: each vertex is pulled back once.
        """
        edge, self._edge = self._edge, None
        own = self._param_leaves if hebbian else []
        token = [] if self._token is None or not feedback else [self._token]
        leaves = token + own
        param_cots = {}
        if edge is not None and leaves:
            grads = torch.autograd.grad([edge], leaves, [cotangent], allow_unused=True)
            for name, g in zip(self._param_names, grads[len(leaves) - len(own):], strict=False):
                if g is not None:
                    param_cots[name] = g
        cots, self._cots = self._cots, {}
        return [cots.get(i) for i in range(len(self._tracked))], param_cots


def pull_back(items: Sequence[tuple[LocalVJP, torch.Tensor, bool, bool]]
              ) -> list[tuple[list[torch.Tensor | None], dict[str, torch.Tensor]]]:
    """`LocalVJP.pullback` for many vertices in one autograd call: (vertex, cotangent, hebbian, feedback).

    The local graphs share nothing, so each vertex gets exactly the terms its own pullback would
    (same kernels, nothing summed across vertices); one engine call per step or level instead of
    one per vertex removes most of the per-vertex overhead that backprop does not have.
    """
    edges, cots, leaves, spans = [], [], [], []
    for lin, cot, hebbian, feedback in items:
        edge, lin._edge = lin._edge, None
        own = lin._param_leaves if hebbian else []
        token = [] if lin._token is None or not feedback else [lin._token]
        if edge is None or not (own or token):
            spans.append((0, 0, 0))
            continue
        edges.append(edge)
        cots.append(cot)
        spans.append((len(leaves) + len(token), len(own), 1))
        leaves.extend(token + own)
    grads = torch.autograd.grad(edges, leaves, cots, allow_unused=True) if edges else ()
    out = []
    for (lin, _, _, _), (start, n, _) in zip(items, spans, strict=True):
        param_cots = {name: g for name, g in zip(lin._param_names, grads[start:start + n], strict=False)
                      if g is not None}
        held, lin._cots = lin._cots, {}
        out.append(([held.get(i) for i in range(len(lin._tracked))], param_cots))
    return out


class Sums(dict):
    """Running sums by key, bit for bit `prev + term` in arrival order, with one allocation per key.

    The first term is stored as given (a VJP result may alias a cotangent still in use); the
    second makes a fresh tensor that this object owns, and later terms are added into that one
    in place. A weight shared by many vertices (an unrolled RNN's) then costs one buffer, as in
    autograd's own accumulation, instead of a new allocation per term. A popped tensor is the
    caller's: it is never written again.
    """

    __slots__ = ("_owned",)

    def __init__(self) -> None:
        super().__init__()
        self._owned: set[str] = set()

    def add(self, key: str, term: torch.Tensor) -> None:
        prev = self.get(key)
        if prev is None:
            self[key] = term
        elif key in self._owned and prev.shape == term.shape and prev.dtype == term.dtype:
            prev.add_(term)
        else:
            self[key] = prev + term
            self._owned.add(key)

    def pop(self, key: str, *default):
        self._owned.discard(key)
        return super().pop(key, *default)


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


def advance(latent: Sequence[str], outputs: set[str], neg_disp: Mapping[str, torch.Tensor],
            delta: Mapping[str, torch.Tensor], neg_feedback: Mapping[str, torch.Tensor],
            gamma: float) -> dict[str, torch.Tensor]:
    """x_i += gamma (-eps_i + feedback_i) for every hidden vertex, carried in autograd's sign.

    Everything is negated: `delta = -eps`, `neg_feedback = -feedback` (the pullbacks of delta),
    and the returned displacements are `-(x - x_ff)`. Negation is exact, so this is
    `pcsim.algorithms.inference.advance` term for term with every bit mirrored, and no tensor
    is ever negated. Vertices in neither `delta` nor `neg_feedback` were still (zero drive).
    """
    new = dict(neg_disp)
    for name in latent:
        if name in outputs or (name not in delta and name not in neg_feedback):
            continue
        if name not in delta:
            drive = neg_feedback[name]  # -0 + f is f bit for bit: a still vertex's drive is its feedback
        elif name in neg_feedback:
            drive = neg_feedback[name] - delta[name]
        else:
            drive = -delta[name]
        step = (gamma * drive).contiguous()  # one layout for every state, see Problem.feedforward
        if name not in new and not bool((step != 0).any()):
            continue  # an unmoved population keeps its feed-forward tensor: same bits, same alignment
        new[name] = step if name not in new else new[name] + step
    return new
