"""The oracle: backpropagation by torch autograd over the same graph."""

from __future__ import annotations

import torch

from pcsim.algorithms.problem import Problem, traced_shape
from pcsim.graph.argument import takes_graph
from pcsim.graph.ir import Graph
from pcsim.ops.local import call, records_autograd


@takes_graph
@records_autograd
def bp(graph: Graph, inputs, target, loss="mse", *, params=None) -> dict[str, torch.Tensor]:
    """dL/dtheta for every parameter of the traced module (zeros for unused ones)."""
    graph = graph.pruned()  # a vertex that reaches no output is no part of the loss
    problem = Problem.build(graph, inputs, target, loss, params)
    used = [n for n in problem.params if graph.users.get(n)]
    leaves = {n: problem.params[n].detach().requires_grad_(True) for n in used}
    params = {**problem.params, **leaves}
    with torch.enable_grad():
        values = dict(problem.clamped)
        for name in graph.latent:
            v = graph[name]
            values[name] = traced_shape(v, call(v, [values[p] for p in v.parents], params, graph.constants))
        total = problem.loss_value(values)
        grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    return problem.complete({n: g for n, g in zip(leaves, grads, strict=True) if g is not None})
