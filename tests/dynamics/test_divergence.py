"""A run that diverges without overflowing is reported: explicit Euler past its stability limit grew a small
MLP to 1e18 in 100 steps and returned it without a word.

Oracle: the closed form of a linear network's Euler step. With a hidden layer h = W1 x and a clamped output
y ~ W2 h, the energy's Hessian in h is I + W2^T W2, so Euler (instantaneous errors) multiplies the deviation
from the equilibrium by I - (dt / tau_x)(I + W2^T W2): stable iff dt < 2 tau_x / lambda_max.
"""

import warnings

import numpy as np
import pytest
import torch

import pcsim
from pcsim.dynamics.divergence import DivergenceWarning


def _linear():
    gen = torch.Generator().manual_seed(3)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False), torch.nn.Linear(4, 2, bias=False)).double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    x = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 2, generator=gen, dtype=torch.float64)
    w2 = module[1].weight.detach().numpy()
    limit = 2.0 / np.linalg.eigvalsh(np.eye(4) + w2.T @ w2).max()  # tau_x = 1
    return module, x, y, limit


@pytest.mark.parametrize("backend", ["torch", "scipy"])
def test_euler_past_its_stability_limit_warns_naming_the_population(backend):
    module, x, y, limit = _linear()
    graph = pcsim.trace(module, x)
    dt = 1.1 * limit  # |1 - dt lambda_max| = 1.2: 1e6 of growth in about 80 steps
    with pytest.warns(DivergenceWarning, match=r"value population '0' reached .*dt = .*try a smaller dt"):
        tr = pcsim.simulate(graph, (x,), y, backend=backend, method="euler" if backend == "scipy" else None,
                            dt=dt, tau_x=1.0, t_end=200 * dt)
    assert np.abs(tr.values["0"]).max() > 1e6  # it did diverge, and still returns what it computed


def test_euler_within_its_stability_limit_is_quiet():
    module, x, y, limit = _linear()
    graph = pcsim.trace(module, x)
    dt = 0.95 * limit
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        tr = pcsim.simulate(graph, (x,), y, backend="torch", dt=dt, tau_x=1.0, t_end=400 * dt)
    # and it converged: the hidden error at t_end is the equilibrium's, W2^T (y - W2 h) = h - W1 x
    h, e = tr.values["0"][-1], tr.errors["0"][-1]
    w2 = module[1].weight.detach().numpy()
    assert np.abs(e - (y.numpy() - h @ w2.T) @ w2).max() < 1e-8


def test_a_leaky_error_past_dt_2_tau_e_is_named_with_its_limit():
    module, x, y, _ = _linear()
    graph = pcsim.trace(module, x)
    with pytest.warns(DivergenceWarning, match=r"leaky error only below dt = 2 tau_e \('0' has dt / tau_e = 5"):
        pcsim.simulate(graph, (x,), y, backend="torch", dt=0.05, tau_x=1.0, tau_e=0.01, t_end=20.0)
