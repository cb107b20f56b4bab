"""One synchronous inference sweep, shared by IL, Z-IL and autonomous Fa-Z-IL.

From the state at step t, every vertex computes its prediction, its error, the feedback it
sends its parents (`J^T eps`) and its Hebbian term (`(d mu/d theta)^T eps`); nothing is applied
until all of them are known, so one step reads only the previous step's state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from pcsim.algorithms.problem import Problem
from pcsim.ops.local import Linearisation


@dataclass(frozen=True)
class Sweep:
    """Everything computed from one state: per latent vertex mu, eps, feedback and Hebbian terms."""

    mu: dict[str, torch.Tensor]
    eps: dict[str, torch.Tensor]
    feedback: dict[str, torch.Tensor]  # sum over children c of J_ci^T eps_c (absent: zero)
    hebbian: dict[str, dict[str, torch.Tensor]]  # vertex -> parameter -> (d mu/d theta)^T eps

    def energy(self, problem: Problem, precision: float = 1.0) -> float:
        """F = sum over hidden vertices of 1/2 ||eps||^2, plus the output precision times the loss."""
        outputs = set(problem.graph.outputs)
        hidden = sum(0.5 * float((e.double() ** 2).sum()) for n, e in self.eps.items() if n not in outputs)
        return hidden + precision * float(problem.loss_value(self.mu))


def sweep(problem: Problem, x: Mapping[str, torch.Tensor], *, params: Mapping[str, torch.Tensor] | None = None,
          precision: float = 1.0, fixed: Mapping[str, Linearisation] | None = None,
          vertices: Iterable[str] | None = None) -> Sweep:
    """Errors, feedback and Hebbian terms of state `x`.

    `fixed` holds linearisations frozen at the feed-forward state (the fixed-prediction variant);
    otherwise each vertex is linearised at the current state with `params`.
    """
    graph = problem.graph
    outputs = set(graph.outputs)
    latent = set(graph.latent)
    mu, eps, feedback, hebbian = {}, {}, {}, {}
    for name in graph.latent if vertices is None else vertices:
        lin = fixed[name] if fixed is not None else problem.linearise(name, x, params)
        mu[name] = lin.mu
        e = problem.output_error(name, lin.mu, precision) if name in outputs else x[name] - lin.mu
        eps[name] = e
        parent_cots, hebbian[name] = lin.pullback(e, retain=fixed is not None)
        for p, c in zip(graph[name].parents, parent_cots, strict=True):
            if c is not None and p in latent:
                feedback[p] = c if p not in feedback else feedback[p] + c
    return Sweep(mu, eps, feedback, hebbian)


def advance(problem: Problem, x: Mapping[str, torch.Tensor], s: Sweep, gamma: float) -> dict[str, torch.Tensor]:
    """x_i <- x_i + gamma (-eps_i + sum_c J_ci^T eps_c) for every hidden vertex (outputs stay free)."""
    outputs = set(problem.graph.outputs)
    new = dict(x)
    for name in problem.graph.latent:
        if name in outputs:
            continue
        drive = -s.eps[name]
        if name in s.feedback:
            drive = drive + s.feedback[name]
        new[name] = (x[name] + gamma * drive).contiguous()  # one layout, see Problem.feedforward
    return new


def accumulate(grads: dict[str, torch.Tensor], hebbian: Mapping[str, torch.Tensor], scale: float = 1.0) -> None:
    """Add a vertex's Hebbian terms to `grads` in autograd's sign: dL/dtheta = -(d mu/d theta)^T eps."""
    for p, h in hebbian.items():
        grads[p] = grads[p] - (h if scale == 1.0 else h / scale)
