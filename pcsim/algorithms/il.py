"""IL: inference learning. Feed-forward start, T synchronous inference steps, one update.

Approximates BP; two knobs bring it closer (Whittington & Bogacz 2017; Millidge et al. 2020):
a small output precision (weak feedback; the update is divided by it, the learning-rate
compensation) and the fixed-prediction variant (predictions and Jacobians frozen at their
feed-forward values, whose fixed point is BP's errors on any graph; gamma 1 with as many
steps as the longest path is exact).
"""

from __future__ import annotations

import functools
import math
import operator

import torch
from tqdm.auto import tqdm

from pcsim.algorithms import il_compiled
from pcsim.algorithms.descent import energies, feedforward_energy, refuse_climb
from pcsim.algorithms.problem import Problem
from pcsim.algorithms.relaxation import Relaxation, check_finite
from pcsim.graph.argument import takes_graph
from pcsim.graph.ir import Graph
from pcsim.ops.local import records_autograd


@takes_graph
@records_autograd
def il(graph: Graph, inputs, target, loss="mse", *, gamma: float = 0.1, steps: int = 100,
       fixed_prediction: bool = False, output_precision: float = 1.0, params=None,
       progress: bool = False, compile: bool = False) -> dict[str, torch.Tensor]:
    """IL's update after `steps` inference steps, as dL/dtheta estimates (autograd's sign).

    `gamma`: the inference rate, each synchronous step's size; `steps`: T, from the feed-forward state.
    `fixed_prediction`: every vertex's prediction and Jacobian stay at the feed-forward state (the update then
    tends to BP's as T grows). `output_precision`: the output error's weight (its precision) in the energy.
    `compile`: once the error wave has reached every vertex, run each remaining step as one
    inductor-compiled function (`pcsim.algorithms.il_compiled`): the same dynamics with the element-wise
    work fused. The first call per graph and layout compiles (seconds); it needs a C++ compiler,
    and falls back to the eager loop with a warning where compiling fails.
    """
    fresh = functools.partial(relaxation, graph, inputs, target, loss, params, steps, gamma, output_precision,
                              fixed_prediction)
    relax = fresh()
    problem = relax.problem
    start = feedforward_energy(relax)
    bar = lambda r: tqdm(r, desc="IL inference", disable=not progress, leave=False)  # noqa: E731
    if compile:
        il_compiled.run(relax, steps, bar)
    else:
        relax.run(steps, bar)
    plastic = {n for n in relax.latent if problem.graph[n].params}  # only their errors enter the update
    eps = relax.errors(only=plastic | relax.outputs)
    # their energy, a lower bound of F's (the others' errors are not recomputed); fixed prediction descends no energy
    end = None if fixed_prediction else energies(relax, eps, plastic | relax.outputs)
    update = _update(problem, relax.hebbian(eps), output_precision)

    def replay():  # built only if a replay is asked for: on failure
        yield from fresh().errors_along(steps)
    update = check_finite(update, "IL", problem, gamma, replay())
    if end is not None:
        refuse_climb("IL", relax, start, end, steps, partial=len(end) < len(relax.latent))
    return update


def _update(problem: Problem, hebbian: dict[str, dict[str, torch.Tensor]], scale: float) -> dict[str, torch.Tensor]:
    """The oracle's `accumulate` of every vertex's Hebbian terms onto zero, in the terms' own storage: they are
    fresh tensors nobody else reads (`Op.hebbian`), so no allocation per weight matrix."""
    grads: dict[str, torch.Tensor] = {}
    for terms in hebbian.values():  # graph order, as `accumulate` would add them
        for p, h in terms.items():
            if not h.is_contiguous():  # an expanded view, say: no writing into it
                h = h.contiguous()
            h = h.neg_() if scale == 1.0 else h.div_(-scale)  # 0 - h / scale, in the term's own storage
            grads[p] = h if p not in grads else grads[p].add_(h)
    return problem.complete(grads)  # zero where no vertex with an error reads the parameter


@takes_graph
@records_autograd
def il_path(graph: Graph, inputs, target, loss="mse", *, gamma: float = 0.1, steps: int = 100,
            fixed_prediction: bool = False, output_precision: float = 1.0, params=None) -> list[dict]:
    """The errors of every latent vertex at steps 0..steps (for comparing with continuous time)."""
    relax = relaxation(graph, inputs, target, loss, params, steps, gamma, output_precision, fixed_prediction)
    return [{n: eps[n].clone() if n in eps else torch.zeros_like(relax.base[n]) for n in relax.latent}
            for eps in relax.errors_along(steps)]


def relaxation(graph, inputs, target, loss, params, steps: int, gamma: float, precision: float, fixed: bool
               ) -> Relaxation:
    """IL's inference from the feed-forward state, its settings checked: what il, il_path and energy_trace run."""
    if count(steps, "steps") < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not 0 < precision < math.inf:  # inf: an infinite output error, reported as a divergence 'at gamma'
        raise ValueError(f"output_precision must be > 0 and finite, got {precision}")
    if not isinstance(fixed, bool) and fixed not in (0, 1):  # "no" is truthy: it ran the fixed-prediction variant
        raise ValueError(f"fixed_prediction must be True or False, got {fixed!r}")
    if fixed and gamma >= 2:  # each error steps as e <- (1 - gamma) e + gamma drive: |1 - gamma| >= 1 never settles
        raise ValueError(f"gamma must be < 2 with fixed_prediction, got {gamma}: each error moves as "
                         "e <- (1 - gamma) e + gamma (its children's feedback), which converges (to BP's error) only "
                         "for 0 < gamma < 2")
    return Relaxation(Problem.build(graph, inputs, target, loss, params), gamma, precision, fixed)


def count(value, name: str) -> int:
    """A number of steps: an integer (an int, numpy's or a 0-d integer tensor), else a ValueError naming it
    (a float was a TypeError from inside range())."""
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
