"""Straightforward reference implementations of synchronous Z-IL and both Fa-Z-IL readings.

These are the rules as first written (before the exact shortcuts of the synchronous sweeps):
every vertex is linearised and pulled back at every step through `pcsim.ops.local.Autograd`,
with zero tensors for absent terms. The fast paths must return the same values bit for bit
(up to the sign of zero), so this module is their oracle. Not a test module itself.
"""

from __future__ import annotations

import torch

from pcsim.algorithms.problem import Problem
from tests.algorithms.sweep_reference import linearise


class _State:
    def __init__(self, base, disp=None):
        self.base, self.disp = base, dict(disp or {})

    def value(self, n):
        d = self.disp.get(n)
        return self.base[n] if d is None else self.base[n] + d

    def moved(self, n):
        d = self.disp.get(n)
        return d is not None and bool((d != 0).any())

    def error(self, n, mu):
        d = self.disp.get(n)
        e = self.base[n] - mu
        return e if d is None else e + d


def _sweep(problem: Problem, state: _State, params, plastic=None):
    g = problem.graph
    outputs, latent = set(g.outputs), set(g.latent)
    values = {n: state.value(n) for n in state.base}
    eps, feedback, hebbian = {}, {}, {}
    for name in g.latent:
        want = plastic is None or name in plastic
        lin = linearise(problem, name, values, params, wrt_params=want)
        e = problem.output_error(name, lin.mu) if name in outputs else state.error(name, lin.mu)
        eps[name] = e
        cots, heb = lin.pullback(e)
        if want:
            hebbian[name] = heb
        for p, c in zip(g[name].parents, cots, strict=True):
            if c is not None and p in latent:
                feedback[p] = c if p not in feedback else feedback[p] + c
    return eps, feedback, hebbian


def _advance(problem: Problem, state: _State, eps, feedback, gamma) -> _State:
    outputs = set(problem.graph.outputs)
    disp = dict(state.disp)
    for name in problem.graph.latent:
        if name in outputs:
            continue
        drive = -eps[name]
        if name in feedback:
            drive = drive + feedback[name]
        step = (gamma * drive).contiguous()
        if name not in disp and not bool((step != 0).any()):
            continue
        disp[name] = step if name not in disp else disp[name] + step
    return _State(state.base, disp)


def _accumulate(grads, hebbian):
    for p, h in hebbian.items():
        grads[p] = grads[p] - h


def zil(graph, inputs, target, loss="mse", *, gamma=1.0, level=True, schedule=None, init="feedforward",
        update_timing="deferred", lr=1.0, seed=0):
    g = graph.level() if level else graph
    problem = Problem.build(g, inputs, target, loss)
    steps = dict(g.min_distance)
    steps.update(schedule or {})
    state = _State(problem.feedforward())
    if init == "random":
        gen = torch.Generator(device="cpu").manual_seed(seed)
        outputs = set(g.outputs)
        state = _State(state.base, {n: torch.randn(v.shape, generator=gen, dtype=v.dtype) - v
                                    for n, v in state.base.items() if n not in outputs})
    params = dict(problem.params)
    grads = problem.complete({})
    for t in range(max(steps.values()) + 1):
        due = [n for n in g.latent if steps.get(n) == t]
        eps, feedback, hebbian = _sweep(problem, state, params, plastic=set(due))
        for name in due:
            _accumulate(grads, hebbian[name])
        if update_timing == "immediate":
            for name in due:
                for p, h in hebbian[name].items():
                    params[p] = params[p] + lr * h
        state = _advance(problem, state, eps, feedback, gamma)
    return grads


def fa_zil_wavefront(graph, inputs, target, loss="mse", *, gamma=1.0):
    g = graph.level()
    problem = Problem.build(g, inputs, target, loss)
    x0, lins = {}, {}
    for name in g.latent:
        lins[name] = linearise(problem, name, x0)
        x0[name] = lins[name].mu.clone(memory_format=torch.contiguous_format)
    by_level = {}
    for name in g.latent:
        if name in g.min_distance:
            by_level.setdefault(g.min_distance[name], []).append(name)
    outputs = set(g.outputs)
    feedback = {}
    grads = problem.complete({})
    for t in sorted(by_level):
        for name in by_level[t]:
            lin = lins.pop(name)
            if name in outputs:
                eps = problem.output_error(name, lin.mu)
            else:
                fb = feedback.pop(name, None)
                eps = torch.zeros_like(lin.mu) if fb is None else gamma * fb
            cots, hebbian = lin.pullback(eps)
            _accumulate(grads, hebbian)
            for p, c in zip(g[name].parents, cots, strict=True):
                if c is not None and p in x0:
                    feedback[p] = c if p not in feedback else feedback[p] + c
    return grads


def fa_zil_autonomous(graph, inputs, target, loss="mse", *, gamma=1.0):
    g = graph.level()
    problem = Problem.build(g, inputs, target, loss)
    x = _State(problem.feedforward())
    reachable = [n for n in g.latent if n in g.min_distance]
    gate = dict.fromkeys(reachable, "waiting")
    latent_parents = {n: [p for p in g[n].parents if p in x.base] for n in reachable}
    grads = problem.complete({})
    for _ in range(len(g.latent) + 1):
        eps, feedback, hebbian = _sweep(problem, x, problem.params)
        for name in reachable:
            if gate[name] != "waiting":
                continue
            if any(x.moved(p) for p in latent_parents[name]):
                gate[name] = "locked"
            elif bool((eps[name] != 0).any()):
                _accumulate(grads, hebbian[name])
                gate[name] = "fired"
        if all(v != "waiting" for v in gate.values()):
            break
        x = _advance(problem, x, eps, feedback, gamma)
    return grads
