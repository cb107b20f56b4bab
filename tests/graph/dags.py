"""Hand-built graphs: each latent vertex is tanh(sum_j W_vj x_pj), one weight per incoming edge.

`reference_grads` evaluates the same specification with plain autograd, without pcsim's
templates or evaluator, so it is an independent oracle for `pcsim.bp` on these graphs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from pcsim.graph.ir import Graph, ParamArg, ParentArg, Vertex
from tests.graph.helpers import DT, seeded

WIDTH, BATCH = 3, 2


def tanh_linear_sum(*pairs):
    """tanh(sum_j F.linear(parent_j, weight_j)) for arguments (parent_0, weight_0, parent_1, ...)."""
    return torch.tanh(sum(F.linear(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)))


def weight_name(vertex: str, j: int) -> str:
    return f"w.{vertex}.{j}"


def make_params(spec: Mapping[str, Sequence[str]], seed: int = 0) -> dict[str, torch.Tensor]:
    with seeded(seed):
        return {weight_name(v, j): torch.randn(WIDTH, WIDTH, dtype=DT) / WIDTH ** 0.5 + 0.3
                for v, ps in spec.items() for j in range(len(ps))}


def latent_sinks(spec: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    used = {p for ps in spec.values() for p in ps}
    return tuple(v for v in spec if v not in used)


def build_graph(spec: Mapping[str, Sequence[str]], inputs: Sequence[str] = ("x",),
                outputs: Sequence[str] | None = None, seed: int = 0) -> Graph:
    """spec: latent vertex -> its parents, in topological order. Outputs default to the latent sinks."""
    params = make_params(spec, seed)
    vertices = [Vertex(name, "input", (BATCH, WIDTH), DT) for name in inputs]
    for name, parents in spec.items():
        args = tuple(a for j in range(len(parents)) for a in (ParentArg(j), ParamArg(weight_name(name, j))))
        vertices.append(Vertex(name, "tanh_linear_sum", (BATCH, WIDTH), DT, parents=tuple(parents),
                               fn=tanh_linear_sum, args=args))
    outs = latent_sinks(spec) if outputs is None else tuple(outputs)
    return Graph(tuple(vertices), tuple(inputs), outs, params=params, param_names=tuple(params))


def example_data(graph: Graph, seed: int = 1):
    with seeded(seed):
        inputs = tuple(torch.randn(BATCH, WIDTH, dtype=DT) for _ in graph.inputs)
        targets = tuple(torch.randn(BATCH, WIDTH, dtype=DT) for _ in graph.outputs)
    return inputs, targets


def reference_grads(spec: Mapping[str, Sequence[str]], params: Mapping[str, torch.Tensor], input_names,
                    inputs, outputs, targets) -> dict[str, torch.Tensor]:
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    values = dict(zip(input_names, inputs, strict=True))
    with torch.enable_grad():
        for name, parents in spec.items():
            pre = sum(values[p] @ leaves[weight_name(name, j)].T for j, p in enumerate(parents))
            values[name] = torch.tanh(pre)
        loss = sum(0.5 * ((values[o] - y) ** 2).sum() for o, y in zip(outputs, targets, strict=True))
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g
            for (n, p), g in zip(leaves.items(), grads, strict=True)}


def path_lengths(spec: Mapping[str, Sequence[str]], outputs: Sequence[str]) -> dict[str, set[int]]:
    """Every path length from each latent vertex to any output, by explicit enumeration."""
    children: dict[str, list[str]] = {v: [] for v in spec}
    for v, ps in spec.items():
        for p in ps:
            if p in children:
                children[p].append(v)
    lengths: dict[str, set[int]] = {}

    def walk(v: str) -> set[int]:
        if v not in lengths:
            found = {0} if v in outputs else set()
            for c in children[v]:
                found |= {n + 1 for n in walk(c)}
            lengths[v] = found
        return lengths[v]
    for v in spec:
        walk(v)
    return {v: s for v, s in lengths.items() if s}
