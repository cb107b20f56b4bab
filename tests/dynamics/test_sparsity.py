"""The Jacobian pattern given to implicit solvers covers every non-zero of the true Jacobian."""

import numpy as np
import pytest
import torch

import pcsim
from pcsim.algorithms.problem import Problem
from pcsim.dynamics.field import VectorField
from pcsim.dynamics.protocol import Always
from pcsim.dynamics.sparsity import jacobian_sparsity
from tests.equivalence.archs import ARCHS


def _jacobian_columns(field, t, state, columns):
    """Central differences of the packed field, for some columns: the oracle for the pattern."""
    y = field.pack(state)
    h = 1e-6
    cols = []
    for j in columns:
        e = np.zeros_like(y)
        e[j] = h
        plus = field.pack(field(t, field.unpack(y + e)))
        minus = field.pack(field(t, field.unpack(y - e)))
        cols.append((plus - minus) / (2 * h))
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("tau_e", [0.0, 0.3], ids=["instant", "leaky"])
@pytest.mark.parametrize("arch,plastic", [("mlp_tanh_bias", True), ("residual_block", True), ("cnn_pools", False),
                                          ("attention", False)])
def test_pattern_covers_the_finite_difference_jacobian(arch, plastic, tau_e):
    module, inputs, target = ARCHS[arch](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    field = VectorField(Problem.build(graph, inputs, target), tau_x=0.5, tau_e=tau_e,
                        gate=Always() if plastic else None)
    gen = torch.Generator().manual_seed(1)
    state = {k: 0.1 * torch.randn(v.shape, generator=gen) for k, v in field.initial_state().items()}
    columns = np.random.default_rng(0).choice(field.size, size=min(field.size, 150), replace=False)
    dense = _jacobian_columns(field, 1.0, state, columns)
    pattern = jacobian_sparsity(field).toarray()[:, columns]
    outside = np.abs(dense) * ~pattern
    assert outside.max() < 1e-7, f"{int((outside > 1e-7).sum())} entries outside the pattern"
    assert pattern.mean() < 0.9 or field.size < 50  # the pattern is not simply dense


def test_batch_locality_is_detected_for_a_linear_layer():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    x, y = torch.randn(4, 5), torch.randn(4, 2)
    field = VectorField(Problem.build(pcsim.trace(net, x), (x,), y), tau_x=1.0)
    pattern = jacobian_sparsity(field)
    per_sample = (6 + 6 + 2)  # state neurons of one sample
    # no entry couples different samples: count what a dense-per-sample pattern would allow
    assert pattern.nnz <= 4 * per_sample ** 2


def test_implicit_solver_agrees_with_explicit_one():
    module, inputs, target = ARCHS["mlp_sigmoid_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    runs = [pcsim.simulate(graph, inputs, target, t_end=2.0, tau_x=0.5, tau_e=0.1, method=m, rtol=1e-10,
                           atol=1e-12, record={"times": [2.0]}, plasticity="always") for m in ("BDF", "DOP853")]
    for name in graph.latent:
        np.testing.assert_allclose(runs[0].values[name], runs[1].values[name], rtol=1e-6, atol=1e-8)
    for name in runs[0].updates:
        np.testing.assert_allclose(runs[0].updates[name], runs[1].updates[name], rtol=1e-6, atol=1e-8)
