"""Fa-Z-IL: Z-IL without a global schedule, in two readings that both equal Z-IL.

wavefront: the error wave is followed explicitly; at step t only vertices at distance t are
    touched, each linearised once at its feed-forward state and pulled back once: the work of
    one backward pass. Untouched vertices are skipped because their errors are exactly zero.
autonomous: the full synchronous dynamics run with no clock; each vertex's plasticity gate
    opens at the first step its own error population is non-zero after the target appears and
    closes after that step. A gate whose pre-synaptic values have already moved can no longer
    open (the wave has passed: a vertex whose error was exactly zero then has BP gradient zero).
"""

from __future__ import annotations

import torch

from pcsim.algorithms.inference import State, accumulate, advance, sweep
from pcsim.algorithms.problem import Problem, _fresh
from pcsim.graph.ir import Graph

MODES = ("wavefront", "autonomous")


def fa_zil(graph: Graph, inputs, target, loss="mse", *, mode: str = "wavefront", gamma: float = 1.0,
           params=None) -> dict[str, torch.Tensor]:
    """Fa-Z-IL on the levelled graph; returns dL/dtheta per parameter (autograd's sign)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got '{mode}'")
    g = graph.level()
    problem = Problem.build(g, inputs, target, loss, params)
    run = _wavefront if mode == "wavefront" else _autonomous
    return run(problem, gamma)


def _wavefront(problem: Problem, gamma: float) -> dict[str, torch.Tensor]:
    g = problem.graph
    x0: dict[str, torch.Tensor] = {}
    lins = {}
    for name in g.latent:  # forward pass, keeping each vertex's local linearisation
        lins[name] = problem.linearise(name, x0)
        x0[name] = _fresh(lins[name].mu)  # the storage the synchronous state uses
    by_level: dict[int, list[str]] = {}
    for name in g.latent:
        if name in g.min_distance:
            by_level.setdefault(g.min_distance[name], []).append(name)
    outputs = set(g.outputs)
    feedback: dict[str, torch.Tensor] = {}
    grads = problem.zero_grads()
    for t in sorted(by_level):
        for name in by_level[t]:
            lin = lins.pop(name)
            if name in outputs:
                eps = problem.output_error(name, lin.mu)
            else:  # one inference step of a vertex whose error was zero: x += gamma * J^T eps_c;
                # eps = (x0 - mu) + disp, and x0 is mu itself here, so eps is the displacement
                fb = feedback.pop(name, None)
                eps = torch.zeros_like(lin.mu) if fb is None else gamma * fb
            parent_cots, hebbian = lin.pullback(eps)
            accumulate(grads, hebbian)
            for p, c in zip(g[name].parents, parent_cots, strict=True):
                if c is not None and p in x0:
                    feedback[p] = c if p not in feedback else feedback[p] + c
    return grads


WAITING, FIRED, LOCKED = "waiting", "fired", "locked"


def _autonomous(problem: Problem, gamma: float) -> dict[str, torch.Tensor]:
    g = problem.graph
    x = State.feedforward(problem)  # the state when the target appears: all hidden errors zero
    reachable = [n for n in g.latent if n in g.min_distance]
    gate = dict.fromkeys(reachable, WAITING)
    latent_parents = {n: [p for p in g[n].parents if p in x] for n in reachable}
    grads = problem.zero_grads()
    for _ in range(len(g.latent) + 1):  # the wave crosses at most every vertex once
        s = sweep(problem, x)
        for name in reachable:
            if gate[name] != WAITING:
                continue
            if any(x.moved(p) for p in latent_parents[name]):
                gate[name] = LOCKED
            elif bool((s.eps[name] != 0).any()):
                accumulate(grads, s.hebbian[name])
                gate[name] = FIRED
        if all(v != WAITING for v in gate.values()):
            break
        x = advance(problem, x, s, gamma)
    return grads
