"""The literal synchronous inference sweep: the tests' oracle for the one PC step (`Relaxation`).

Every vertex is linearised at every step and the step is applied as written; the package's
`pcsim.algorithms.relaxation` skips what is exactly unchanged, and the tests hold the two together.

From the state at step t, every vertex computes its prediction, its error, the feedback it
sends its parents (`J^T eps`) and its Hebbian term (`(d mu/d theta)^T eps`); nothing is applied
until all of them are known, so one step reads only the previous step's state.

Each value population is stored as its feed-forward value plus a displacement, x = base + disp,
and its error as eps = (base - mu) + disp. The dynamics are unchanged; what changes is rounding:
an error that is a small difference of two large values (x0 + delta - x0) is not computed by
cancellation, so exactness is limited by the VJPs' own rounding, as backprop's is.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field

import torch

from pcsim.algorithms.problem import Problem
from pcsim.ops.local import Autograd


def linearise(problem: Problem, name: str, x: Mapping[str, torch.Tensor],
              params: Mapping[str, torch.Tensor] | None = None, wrt_params: bool = True) -> Autograd:
    """Vertex `name`'s prediction from the state `x` (clamped values where `x` has none), ready to pull back."""
    return Autograd(problem.graph[name], problem.parent_values(name, x), problem.params if params is None else params,
                    problem.graph.constants, wrt_params=wrt_params)


@dataclass(frozen=True, eq=False)
class SweepState:
    """Value populations of the latent vertices: `base` (feed-forward values) plus `disp`."""

    base: Mapping[str, torch.Tensor]
    disp: Mapping[str, torch.Tensor] = field(default_factory=dict)  # absent: zero

    @staticmethod
    def feedforward(problem: Problem) -> SweepState:
        return SweepState(problem.feedforward())

    def __getitem__(self, name: str) -> torch.Tensor:
        d = self.disp.get(name)
        return self.base[name] if d is None else self.base[name] + d

    def __contains__(self, name: str) -> bool:
        return name in self.base

    def values(self) -> dict[str, torch.Tensor]:
        return {n: self[n] for n in self.base}

    def moved(self, name: str) -> bool:
        d = self.disp.get(name)
        return d is not None and bool((d != 0).any())

    def error(self, name: str, mu: torch.Tensor) -> torch.Tensor:
        d = self.disp.get(name)
        e = self.base[name] - mu
        return e if d is None else e + d


@dataclass(frozen=True)
class Sweep:
    """Everything computed from one state: per latent vertex mu, eps, feedback and Hebbian terms."""

    mu: dict[str, torch.Tensor]
    eps: dict[str, torch.Tensor]
    feedback: dict[str, torch.Tensor]  # sum over children c of J_ci^T eps_c (absent: zero)
    hebbian: dict[str, dict[str, torch.Tensor]]  # vertex -> parameter -> (d mu/d theta)^T eps

    def energy(self, problem: Problem, precision: float = 1.0) -> float:
        """F = sum over hidden vertices of 1/2 ||eps||^2, plus the output precision times the loss
        (`Problem.energy`, per population)."""
        return sum(float(t) for t in problem.energy(self.mu, self.eps, precision=precision).values())


def sweep(problem: Problem, state: SweepState, *, params: Mapping[str, torch.Tensor] | None = None,
          precision: float = 1.0, fixed: Mapping[str, Autograd] | None = None,
          vertices: Iterable[str] | None = None, plastic: Container[str] | None = None) -> Sweep:
    """Errors, feedback and Hebbian terms of `state`.

    `fixed` holds linearisations frozen at the feed-forward state (the fixed-prediction variant);
    otherwise each vertex is linearised at the current state with `params`.
    `plastic`: the vertices whose Hebbian terms are wanted (default all); the others get none,
    so a step whose gates are closed costs no weight-gradient products.
    """
    graph = problem.graph
    outputs = set(graph.outputs)
    latent = set(graph.latent)
    values = state.values() if fixed is None else {}
    mu, eps, feedback, hebbian = {}, {}, {}, {}
    for name in graph.latent if vertices is None else vertices:
        want = plastic is None or name in plastic
        lin = fixed[name] if fixed is not None else linearise(problem, name, values, params, wrt_params=want)
        mu[name] = lin.mu
        e = problem.output_error(name, lin.mu, precision) if name in outputs else state.error(name, lin.mu)
        eps[name] = e
        parent_cots, heb = lin.pullback(e, retain=fixed is not None)
        if want:
            hebbian[name] = heb
        for p, c in zip(graph[name].parents, parent_cots, strict=True):
            if c is not None and p in latent:
                feedback[p] = c if p not in feedback else feedback[p] + c
    return Sweep(mu, eps, feedback, hebbian)


def advance_values(problem: Problem, state: SweepState, s: Sweep, gamma: float) -> SweepState:
    """x_i <- x_i + gamma (-eps_i + sum_c J_ci^T eps_c) for every hidden vertex (outputs stay free)."""
    outputs = set(problem.graph.outputs)
    disp = dict(state.disp)
    for name in problem.graph.latent:
        if name in outputs:
            continue
        drive = -s.eps[name]
        if name in s.feedback:
            drive = drive + s.feedback[name]
        step = (gamma * drive).contiguous()  # one layout for every state, see Problem.feedforward
        if name not in disp and not bool((step != 0).any()):
            continue  # an unmoved population keeps its feed-forward tensor: same bits, same alignment
        disp[name] = step if name not in disp else disp[name] + step
    return SweepState(state.base, disp)


def accumulate(grads: dict[str, torch.Tensor], hebbian: Mapping[str, torch.Tensor], scale: float = 1.0) -> None:
    """Add a vertex's Hebbian terms to `grads` in autograd's sign: dL/dtheta = -(d mu/d theta)^T eps."""
    for p, h in hebbian.items():
        grads[p] = grads[p] - (h if scale == 1.0 else h / scale)
