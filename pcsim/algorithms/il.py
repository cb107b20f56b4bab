"""IL: inference learning. Feed-forward start, T synchronous inference steps, one update.

Approximates BP; two knobs bring it closer (Whittington & Bogacz 2017; Millidge et al. 2020):
a small output precision (weak feedback; the update is divided by it, the learning-rate
compensation) and the fixed-prediction variant (predictions and Jacobians frozen at their
feed-forward values, whose fixed point is BP's errors on any graph; gamma 1 with as many
steps as the longest path is exact).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from pcsim.algorithms.inference import State, accumulate, advance, sweep
from pcsim.algorithms.problem import Problem
from pcsim.graph.ir import Graph


def il(graph: Graph, inputs, target, loss="mse", *, gamma: float = 0.1, steps: int = 100,
       fixed_prediction: bool = False, output_precision: float = 1.0, params=None,
       progress: bool = False) -> dict[str, torch.Tensor]:
    """IL's update after `steps` inference steps, as dL/dtheta estimates (autograd's sign)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not output_precision > 0:
        raise ValueError(f"output_precision must be > 0, got {output_precision}")
    problem = Problem.build(graph, inputs, target, loss, params)
    *_, s = _inference(problem, gamma, steps, fixed_prediction, output_precision, progress)
    grads = problem.zero_grads()
    for name in graph.latent:
        accumulate(grads, s.hebbian[name], scale=output_precision)
    return grads


def _inference(problem: Problem, gamma: float, steps: int, fixed_prediction: bool, output_precision: float,
               progress: bool = False):
    """Yield the sweep of every state from step 0 to step `steps`."""
    x = State.feedforward(problem)
    fixed = None
    if fixed_prediction:
        fixed = {n: problem.linearise(n, x.base) for n in problem.graph.latent}
    for _ in tqdm(range(steps), desc="IL inference", disable=not progress, leave=False):
        s = sweep(problem, x, precision=output_precision, fixed=fixed)
        yield s
        x = advance(problem, x, s, gamma)
    yield sweep(problem, x, precision=output_precision, fixed=fixed)


def il_path(graph: Graph, inputs, target, loss="mse", *, gamma: float = 0.1, steps: int = 100,
            fixed_prediction: bool = False, output_precision: float = 1.0, params=None) -> list[dict]:
    """The errors of every latent vertex at steps 0..steps (for comparing with continuous time)."""
    problem = Problem.build(graph, inputs, target, loss, params)
    return [s.eps for s in _inference(problem, gamma, steps, fixed_prediction, output_precision)]
