"""Fa-Z-IL's wavefront: one forward pass recording one autograd graph, then the wave as one engine call.

The wave's step t pulls back every vertex at distance t from the outputs, once, after all its children:
a vertex's error is the sum of its children's pullbacks (times gamma: one inference step from a zero
error) and its Hebbian term the pullback of that error to its parameters. Autograd's engine runs exactly
that sweep, in autograd's sign (delta = -eps, so each result is dL/dtheta), with backprop's work and
memory. It orders each sum its own way, so the result equals the reference wave to rounding.

`WavePlan` keeps it at backprop's cost on graphs traced into many small vertices: only vertices that
reach an output are computed, each value freed after its last child, and the vertices that select items
of the same tuple-valued call (an LSTM step's four `chunk(...)[k]` gates) share one call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass

import torch

from pcsim.algorithms.compiled import compile_function, flatten, layout_key, unflatten
from pcsim.algorithms.problem import Problem, traced_shape
from pcsim.graph.ir import Graph, Vertex
from pcsim.ops.local import call


@dataclass(frozen=True)
class WavePlan:
    """What the wavefront does per vertex, worked out once per graph from its structure alone."""

    order: tuple[str, ...]  # latent vertices that reach an output, topologically
    frees: dict[str, tuple[str, ...]]  # values no later vertex reads, dropped after this vertex
    tuple_calls: dict[str, Hashable]  # vertex -> key of the tuple-valued call it shares with others
    tuple_users: dict[Hashable, int]  # key -> number of vertices selecting from that call
    vertices: tuple[Vertex, ...]  # those of `order`, looked up once rather than at every call
    wanted: tuple[str, ...]  # the parameters they read, in first-use order
    outputs: frozenset[str]

    @classmethod
    def of(cls, g: Graph) -> WavePlan:
        order = tuple(n for n in g.latent if n in g.min_distance)
        keys = {}  # selecting vertex -> the call it indexes into (the same call on the same tensors)
        for v in (g[n] for n in order if g[n].select is not None):
            key = (v.fn, v.args, v.kwargs, v.parents)
            try:
                hash(key)
            except TypeError:  # a list or dict literal in the call: not merged
                continue
            keys[v.name] = key
        shared = {k: c for k, c in Counter(keys.values()).items() if c > 1}
        frees: dict[str, list[str]] = {}  # vertex -> the values it is the last to read
        for p, last in {p: n for n in order for p in g[n].parents}.items():
            if p not in g.clamped:
                frees.setdefault(last, []).append(p)
        return cls(order, {n: tuple(ps) for n, ps in frees.items()},
                   {n: k for n, k in keys.items() if k in shared}, shared, tuple(g[n] for n in order),
                   tuple(dict.fromkeys(q for n in order for q in g[n].params)), frozenset(g.outputs))


def wavefront(problem: Problem, gamma: float, plan: WavePlan, constants=None) -> dict[str, torch.Tensor]:
    """dL/dtheta per parameter by the wave (see the module docstring); `plan` is `WavePlan.of(problem.graph)`.

    `constants`: the graph's constant tensors, or others in their place (`compiled_wavefront` passes
    them as arguments)."""
    g = problem.graph
    constants = g.constants if constants is None else constants
    outputs, frees, tuple_calls, clamped = plan.outputs, plan.frees, plan.tuple_calls, problem.clamped
    leaves = {q: problem.params[q].detach().requires_grad_(True) for q in plan.wanted}
    params = {**problem.params, **leaves}
    values: dict[str, torch.Tensor] = {}  # the values some later vertex still reads
    calls: dict[Hashable, list] = {}  # tuple-valued results still to select from, with their count
    roots, cotangents = [], []
    with torch.enable_grad():
        for v in plan.vertices:  # the forward pass
            name = v.name
            parents = [values[p] if p in values else clamped[p] for p in v.parents]
            if v.inserted:  # an identity level() inserted: the parent's tensor, no call to make
                out = parents[0]
            elif name in tuple_calls:
                out = _selected(v, tuple_calls[name], plan.tuple_users, calls, parents, params, constants)
            else:
                out = traced_shape(v, call(v, parents, params, constants))
            if name in outputs:  # a sink (Graph.validate): its error is its loss's alone
                if out.requires_grad:
                    roots.append(out)
                    cotangents.append(problem.output_gradient(name, out.detach()))
            else:
                if gamma != 1.0 and out.requires_grad:
                    if any(out is p for p in parents):
                        out = out.view_as(out)  # its own node, so the scaling is this vertex's alone
                    out.register_hook(lambda delta: gamma * delta)
                values[name] = out
            del parents, out
            for p in frees.get(name, ()):
                values.pop(p, None)
    del values
    grads = torch.autograd.grad(roots, list(leaves.values()), cotangents, allow_unused=True) if roots else ()
    return problem.complete({q: d for q, d in zip(leaves, grads, strict=False) if d is not None})


def _selected(v: Vertex, key: Hashable, users: dict[Hashable, int], calls: dict[Hashable, list],
              parents, params, constants) -> torch.Tensor:
    """`v`'s item of a tuple-valued call it shares: the call runs at its first selector, is dropped after its last."""
    if key not in calls:
        args, kwargs = v.bind(parents, params, constants)
        calls[key] = [v.fn(*args, **kwargs), users[key]]
    entry = calls[key]
    entry[1] -= 1
    if not entry[1]:
        del calls[key]
    return entry[0][v.select]


def compiled_wavefront(problem: Problem, gamma: float, plan: WavePlan) -> dict[str, torch.Tensor]:
    """`wavefront`, forward pass and wave, as one compiled function of the data and parameters: inductor fuses
    what the eager wave runs as separate kernels and autograd nodes (an LSTM step's gates, products and their
    VJPs). The same wave's result, to rounding; `wavefront` itself where compiling fails."""
    g = problem.graph
    source = {"clamped": problem.clamped, "target": problem.targets, "param": problem.params, "const": g.constants}
    names, tensors = flatten(source)

    def wave(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:  # the problem rebuilt around its arguments
        parts = unflatten(names, args, source)
        rebuilt = Problem(g, parts["param"], parts["clamped"], parts["target"], problem.losses)
        grads = wavefront(rebuilt, gamma, plan, parts["const"])
        return tuple(grads[n] for n in g.params)

    losses = tuple(problem.losses.items())  # their gradients are traced into the function
    fn = g.derived(("fa-zil-wavefront", gamma, losses, names, layout_key(tensors)),
                   lambda _: compile_function(wave, tensors, "the Fa-Z-IL wavefront", fold=True,
                                              options=_inductor_options(g, plan)))
    if fn is None:
        return wavefront(problem, gamma, plan)
    return dict(zip(g.params, fn(*tensors), strict=True))


def _inductor_options(g: Graph, plan: WavePlan) -> dict:
    """Inductor's channels-last conversion off on graphs with batch norm, where it stored each normalised
    activation once per layout its readers ask for (benchmarks/results/design_measurements.md)."""
    return {"layout_optimization": False} if any("batch_norm" in g[n].op for n in plan.order) else {}
