"""Fa-Z-IL's wavefront: one forward pass recording one autograd graph, then the wave as one engine call.

The wave's step t pulls back every vertex at distance t from the outputs, once, after all its
children: a reverse topological sweep in which a vertex's error is the sum of its children's
pullbacks (times gamma: one inference step from a zero error) and its Hebbian term the pullback
of that error to its parameters. Autograd's engine runs exactly that sweep, in C++, on the
tensors the forward pass saved, with one node per vertex op: the work and the memory of backprop.
It is carried in autograd's sign, delta = -eps, so each parameter's result is dL/dtheta itself.
The engine orders each vertex's sum of its children's terms (and each shared weight's) its own
way, so the result equals the reference wave (tests/algorithms) to rounding, not always bit for bit.

Three things keep it at backprop's cost on graphs traced into many small vertices (`WavePlan`):
only vertices that reach an output are computed, each value is freed after its last child; the
vertices that select one item of the same tuple-valued call (the four gates of an LSTM step,
each `chunk(...)[k]`) share one call, so the engine sees one split instead of four; and linear
layers applied by several vertices (a recurrent weight) sum their Hebbian terms in place
(`pcsim.ops.shared`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch

from pcsim.algorithms.problem import Problem
from pcsim.algorithms.wave import complete
from pcsim.graph.ir import Graph
from pcsim.ops.local import call
from pcsim.ops.shared import SharedLinear, WeightSum
from pcsim.ops.vjp import is_linear

Layer = tuple[str, str | None]  # (weight, bias) parameter names of a linear vertex


@dataclass(frozen=True)
class WavePlan:
    """What the wavefront does per vertex, worked out once per graph from its structure alone."""

    order: tuple[str, ...]  # latent vertices that reach an output, topologically
    frees: dict[str, tuple[str, ...]]  # values no later vertex reads, dropped after this vertex
    tuple_calls: dict[str, Hashable]  # vertex -> key of the tuple-valued call it selects from
    tuple_users: dict[Hashable, int]  # key -> number of vertices selecting from that call
    shared: dict[str, Layer]  # linear vertices whose (weight, bias) another linear vertex applies too

    @classmethod
    def of(cls, g: Graph) -> WavePlan:
        reach = g.min_distance
        order = tuple(n for n in g.latent if n in reach)
        tuple_calls = _tuple_calls(g, order)
        users: dict[Hashable, int] = {}
        for key in tuple_calls.values():
            users[key] = users.get(key, 0) + 1
        tuple_calls = {n: k for n, k in tuple_calls.items() if users[k] > 1}
        layers: dict[Layer, list[str]] = {}
        for n in order:
            v = g[n]
            if is_linear(v) and g.params[v.args[1].name].dim() == 2:
                bias = v.args[2].name if len(v.args) > 2 and v.args[2] is not None else None
                layers.setdefault((v.args[1].name, bias), []).append(n)
        layers = {layer: names for layer, names in layers.items() if len(names) > 1}
        shared = {n: layer for layer, names in layers.items() for n in names}
        return cls(order, _frees(g, order), tuple_calls, {k: c for k, c in users.items() if c > 1}, shared)


def _tuple_calls(g: Graph, order: tuple[str, ...]) -> dict[str, Hashable]:
    """Selecting vertex -> a key naming the call it indexes into (the same call on the same tensors)."""
    keys = {}
    for n in order:
        v = g[n]
        if v.select is None:
            continue
        key = (v.fn, v.args, v.kwargs, v.parents)
        try:
            hash(key)
        except TypeError:  # a list or dict literal in the call: not merged
            continue
        keys[n] = key
    return keys


def _frees(g: Graph, order: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Vertex -> the values it is the last to read."""
    last_reader = {p: n for n in order for p in g[n].parents}
    frees: dict[str, list[str]] = {}
    for p, n in last_reader.items():
        if p not in g.clamped:
            frees.setdefault(n, []).append(p)
    return {n: tuple(ps) for n, ps in frees.items()}


def wavefront(problem: Problem, gamma: float, plan: WavePlan) -> dict[str, torch.Tensor]:
    """dL/dtheta per parameter by the wave (see the module docstring); `plan` is `WavePlan.of(problem.graph)`."""
    g = problem.graph
    outputs = set(g.outputs)
    wanted = list(dict.fromkeys(q for n in plan.order for q in g[n].params))
    leaves = {q: problem.params[q].detach().requires_grad_(True) for q in wanted}
    forward = _Forward(problem, plan, leaves)
    roots, cotangents = [], []
    with torch.enable_grad():
        for name in plan.order:  # the forward pass
            out, parents = forward.compute(name)
            if name in outputs:  # a sink (Graph.validate): its error is its loss's alone
                if out.requires_grad:
                    roots.append(out)
                    cotangents.append(problem.output_gradient(name, out.detach()))
            else:
                if gamma != 1.0 and out.requires_grad:
                    if any(out is p for p in parents):
                        out = out.view_as(out)  # its own node, so the scaling is this vertex's alone
                    out.register_hook(lambda delta: gamma * delta)
                forward.values[name] = out
            del parents, out
            for p in plan.frees.get(name, ()):
                forward.values.pop(p, None)
    forward.values.clear()
    grads = torch.autograd.grad(roots, list(leaves.values()), cotangents, allow_unused=True) if roots else ()
    total = {q: d for q, d in zip(leaves, grads, strict=False) if d is not None}
    for (weight, bias), s in forward.sums.items():
        for q, d in ((weight, s.weight), (bias, s.bias)):
            if q is not None and d is not None:
                total[q] = d if q not in total else d.add_(total[q])
    return complete(total, problem)


class _Forward:
    """The wavefront's forward pass, one vertex at a time, with the plan's shared calls."""

    def __init__(self, problem: Problem, plan: WavePlan, leaves: dict[str, torch.Tensor]):
        self.problem, self.plan, self.leaves = problem, plan, leaves
        self.params = {**problem.params, **leaves}
        self.sums = {layer: WeightSum() for layer in dict.fromkeys(plan.shared.values())}
        self.values: dict[str, torch.Tensor] = {}  # the values some later vertex still reads
        self._calls: dict[Hashable, list] = {}  # tuple-valued results still to select from, with their count

    def _read(self, names) -> list[torch.Tensor]:
        return [self.values[p] if p in self.values else self.problem.clamped[p] for p in names]

    def _linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        weight, bias = layer = self.plan.shared[name]
        return SharedLinear.apply(x, self.leaves[weight], bias and self.leaves[bias], self.sums[layer])

    def compute(self, name: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the vertex's value, the parent values it was computed from)."""
        plan, g = self.plan, self.problem.graph
        v = g[name]
        parents = self._read(v.parents)
        if name in plan.shared:
            return self._linear(name, parents[0]), parents
        if name in plan.tuple_calls:  # one call for all the vertices that select from it
            key = plan.tuple_calls[name]
            if key not in self._calls:
                args, kwargs = v.bind(parents, self.params, g.constants)
                self._calls[key] = [v.fn(*args, **kwargs), plan.tuple_users[key]]
            entry = self._calls[key]
            entry[1] -= 1
            out = entry[0][v.select]
            if not entry[1]:
                del self._calls[key]
            return out, parents
        return call(v, parents, self.params, g.constants), parents
