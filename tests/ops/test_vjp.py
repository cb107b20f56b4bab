"""IL's closed-form local ops (`pcsim.ops.il_ops.local_op`) against autograd on the vertex's one call.

Oracle: `Autograd.pullback`, itself checked against finite differences in test_local.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pcsim
from pcsim.ops.il_ops import Add, Elementwise, Linear, Op, local_op
from pcsim.ops.local import Autograd
from tests.graph.helpers import DT, TOL, Net, seeded

CASES = {
    "linear_bias": (lambda m, x: m.lin(x), dict(lin=nn.Linear(4, 3)), (5, 4), "lin", Linear),
    "linear_nobias": (lambda m, x: m.lin(x), dict(lin=nn.Linear(4, 3, bias=False)), (5, 4), "lin", Linear),
    "linear_3d": (lambda m, x: m.lin(x), dict(lin=nn.Linear(4, 3)), (2, 5, 4), "lin", Linear),
    "tanh": (lambda m, x: torch.tanh(m.lin(x)), dict(lin=nn.Linear(4, 4)), (5, 4), "tanh", Elementwise),
    "sigmoid": (lambda m, x: torch.sigmoid(m.lin(x)), dict(lin=nn.Linear(4, 4)), (5, 4), "sigmoid", Elementwise),
    "relu": (lambda m, x: F.relu(m.lin(x)), dict(lin=nn.Linear(4, 4)), (5, 4), "relu", Elementwise),
    "relu_module": (lambda m, x: m.act(m.lin(x)), dict(lin=nn.Linear(4, 4), act=nn.ReLU()), (5, 4), "act",
                    Elementwise),
    "add": (lambda m, x: m.a(x) + m.b(x), dict(a=nn.Linear(4, 3), b=nn.Linear(4, 3)), (5, 4), "add", Add),
    "leaky_relu": (lambda m, x: F.leaky_relu(m.lin(x), 0.1), dict(lin=nn.Linear(4, 4)), (5, 4), "leaky_relu",
                   Op),
    "broadcast_add": (lambda m, x: m.lin(x) + m.lin(x)[:1], dict(lin=nn.Linear(4, 3)), (5, 4), "add", Op),
}


def _vertex(case: str):
    body, children, shape, name, _ = CASES[case]
    with seeded(3):
        module = Net(body, **children).to(DT)
        x = torch.randn(shape, dtype=DT)
    graph = pcsim.trace(module, x)
    names = [v.name for v in graph.vertices if v.name.startswith(name)]
    vertex = graph[names[0]]
    with seeded(4):  # parents at random points, not the forward pass's
        parents = [torch.randn(graph[p].shape, dtype=DT) for p in vertex.parents]
        cot = torch.randn(vertex.shape, dtype=DT)
    return graph, vertex, parents, cot


@pytest.mark.parametrize("case", list(CASES))
def test_explicit_kernels_equal_autograd(case):
    graph, vertex, parents, cot = _vertex(case)
    op = local_op(vertex, graph.params, graph.constants, [True] * len(parents), [p.shape for p in parents])
    assert type(op) is CASES[case][4]
    ref = Autograd(vertex, parents, graph.params, graph.constants)
    mu = op.at(parents)
    assert torch.allclose(mu, ref.mu, rtol=TOL, atol=0)
    ref_cots, ref_heb = ref.pullback(cot, retain=True)
    for got, want in zip(op.vjp(cot), ref_cots, strict=True):
        assert torch.allclose(got, want, rtol=TOL, atol=TOL)
    heb = op.hebbian(cot)
    assert set(heb) == set(ref_heb)
    for name, want in ref_heb.items():
        assert torch.allclose(heb[name], want, rtol=TOL, atol=TOL), name


@pytest.mark.parametrize("case", ["linear_bias", "tanh", "add", "leaky_relu"])
def test_unwanted_parents_get_no_feedback_and_a_known_mu_is_not_recomputed(case):
    graph, vertex, parents, cot = _vertex(case)
    op = local_op(vertex, graph.params, graph.constants, [False] * len(parents), [p.shape for p in parents])
    given = torch.full(vertex.shape, 7.0, dtype=DT)
    assert op.at(parents, mu=given) is given
    assert op.vjp(cot) == [None] * len(parents)


def test_buffers_are_reused_between_calls():
    graph, vertex, parents, cot = _vertex("tanh")
    op = local_op(vertex, graph.params, graph.constants, [True], [parents[0].shape])
    first_mu, (first_fb,) = op.at(parents), op.vjp(cot)
    second_mu, (second_fb,) = op.at([parents[0] * 2]), op.vjp(cot)
    assert second_mu.data_ptr() == first_mu.data_ptr() and second_fb.data_ptr() == first_fb.data_ptr()
    assert torch.allclose(second_mu, torch.tanh(parents[0] * 2), rtol=TOL, atol=0)


def test_linearisation_treats_unwanted_parents_as_constants():
    graph, vertex, parents, cot = _vertex("add")
    lin = Autograd(vertex, parents, graph.params, graph.constants, track=[True, False])
    cots, _ = lin.pullback(cot)
    assert torch.equal(cots[0], cot) and cots[1] is None
