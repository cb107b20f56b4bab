"""Continuous-time dynamics against closed forms: the fixed point, expm, a linear solve."""

import numpy as np
import pytest
import scipy.linalg
import torch

import pcsim
from tests.dynamics.models import LinearChain, deep_tanh_problem, linear_system


def test_without_a_target_the_network_stays_at_its_feedforward_state():
    model, inputs, _ = deep_tanh_problem()
    graph = pcsim.trace(model, *inputs)
    tr = pcsim.simulate(graph, inputs, None, t_end=5.0, tau_x=0.5, method="RK45")
    ff = pcsim.algorithms.Problem.build(graph, inputs, torch.zeros(2, 2)).feedforward()
    for name in graph.latent:
        assert np.abs(tr.errors[name]).max() < 1e-12, name
        assert np.abs(tr.values[name] - ff[name].numpy()).max() < 1e-12, name


@pytest.mark.parametrize("method", ["RK45", "DOP853", "Radau"])
def test_linear_network_follows_the_matrix_exponential(method):
    torch.manual_seed(0)
    model = LinearChain()
    s, y = torch.randn(1, 3), torch.randn(1, 2)
    tau = 0.7
    graph = pcsim.trace(model, s)
    times = np.linspace(0, 3.0, 13)
    tr = pcsim.simulate(graph, (s,), y, t_end=3.0, tau_x=tau, method=method, rtol=1e-11, atol=1e-13,
                        record={"times": times})
    A, b = linear_system(model, s[0], y[0], tau)
    A, b = A.numpy(), b.numpy()
    z_star = np.linalg.solve(A, -b)
    x1, x2 = (graph.latent[0], graph.latent[1])
    z0 = np.concatenate([tr.values[x1][0, 0], tr.values[x2][0, 0]])
    assert np.allclose(tr.t, times)
    for k, t in enumerate(times):
        expected = z_star + scipy.linalg.expm(A * t) @ (z0 - z_star)
        got = np.concatenate([tr.values[x1][k, 0], tr.values[x2][k, 0]])
        np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10)


def test_equilibrium_solves_the_fixed_point_equations():
    """Clamped-target equilibrium of a linear network = the solution of A z + b = 0."""
    torch.manual_seed(1)
    model = LinearChain()
    s, y = torch.randn(3, 3), torch.randn(3, 2)
    graph = pcsim.trace(model, s)
    tr = pcsim.simulate(graph, (s,), y, t_end=200.0, tau_x=1.0, method="LSODA", rtol=1e-12, atol=1e-14,
                        record={"times": [200.0]})
    x1, x2 = graph.latent[0], graph.latent[1]
    for i in range(3):
        A, b = (m.numpy() for m in linear_system(model, s[i], y[i], 1.0))
        z = np.concatenate([tr.values[x1][-1, i], tr.values[x2][-1, i]])
        assert np.linalg.norm(A @ z + b) < 1e-8
        np.testing.assert_allclose(z, np.linalg.solve(A, -b), rtol=1e-8, atol=1e-10)
