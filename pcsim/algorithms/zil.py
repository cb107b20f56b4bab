"""Z-IL: inference learning under conditions C1-C3, whose updates equal backprop's.

C1 feed-forward start (all hidden errors zero); C3 gamma = 1; C2 the parameters of vertex i
take their update at step t = d_i, its distance to the output. On a levelled graph the error of
vertex i at t = d_i is exactly BP's delta_i while its parents still hold their feed-forward
values, so the Hebbian term equals -dL/dtheta. Shared parameters sum one term per use, each
taken at that use's own step, and (by default) are applied only after inference.
The keyword arguments that break these conditions exist for the mutation tests and studies.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pcsim.algorithms.inference import State, accumulate, advance, sweep
from pcsim.algorithms.problem import Problem
from pcsim.graph.ir import Graph

UPDATE_TIMINGS = ("deferred", "immediate")
INITS = ("feedforward", "random")


def prepare_graph(graph: Graph, level: bool) -> Graph:
    """The graph Z-IL runs on: levelled unless the caller asks to study the unlevelled one."""
    return graph.level() if level else graph


def initial_state(problem: Problem, init: str, seed: int) -> State:
    state = State.feedforward(problem)
    if init == "feedforward":
        return state
    if init != "random":
        raise ValueError(f"init must be one of {INITS}, got '{init}'")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    outputs = set(problem.graph.outputs)
    disp = {n: torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device) - v
            for n, v in state.base.items() if n not in outputs}
    return State(state.base, disp)


def zil(graph: Graph, inputs, target, loss="mse", *, gamma: float = 1.0, level: bool = True,
        schedule: Mapping[str, int] | None = None, init: str = "feedforward",
        update_timing: str = "deferred", lr: float = 1.0, params=None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Synchronous Z-IL; returns dL/dtheta per parameter (autograd's sign, module's names).

    gamma: inference rate (C3 is gamma = 1; otherwise level d's update is scaled by gamma^d).
    level: level the graph first (identity vertices on skip edges); False runs it as traced.
    schedule: override the update step of some vertices (default: distance to the output).
    init: 'feedforward' (C1) or 'random' hidden values.
    update_timing: 'deferred' applies parameter changes after inference; 'immediate' applies
        each at its step with learning rate `lr`, so later steps see the changed parameters.
    """
    if update_timing not in UPDATE_TIMINGS:
        raise ValueError(f"update_timing must be one of {UPDATE_TIMINGS}, got '{update_timing}'")
    g = prepare_graph(graph, level)
    problem = Problem.build(g, inputs, target, loss, params)
    steps = dict(g.min_distance)
    if schedule:
        unknown = sorted(set(schedule) - set(g.latent))
        if unknown:
            raise ValueError(f"schedule names vertices not in the graph: {unknown}")
        steps.update(schedule)
    x = initial_state(problem, init, seed)
    params = dict(problem.params)
    grads = problem.zero_grads()
    for t in range(max(steps.values()) + 1):
        due = [n for n in g.latent if steps.get(n) == t]
        s = sweep(problem, x, params=params, plastic=set(due))
        for name in due:
            accumulate(grads, s.hebbian[name])
        if update_timing == "immediate":
            for name in due:
                for p, h in s.hebbian[name].items():
                    params[p] = params[p] + lr * h
        x = advance(problem, x, s, gamma)
    return grads
