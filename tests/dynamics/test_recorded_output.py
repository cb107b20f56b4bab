"""A shown MSE output is clamped to its target (README: continuous time), so its recorded value is the target at every
recorded time from the onset on, with instantaneous or leaky errors, on every backend. With leaky errors the
recording read prediction + leaky error, which lags the clamp: 0.77 off the target at the onset on this MLP.

Oracle: the target itself (a closed form); before the onset the output is free at its feed-forward value, torch's
forward pass on the module.
"""

import numpy as np
import pytest
import torch

import pcsim
from pcsim.numerics import tolerance


def _mlp():
    gen = torch.Generator().manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    x = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    return module, x, torch.randn(2, 2, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("solver", [pcsim.Euler(0.1), pcsim.Euler(0.1, fast=False), pcsim.RK4(0.1),
                                    pcsim.Scipy("RK45"), pcsim.Brian2(0.1)], ids=lambda s: f"{s.backend}-{s.method}")
@pytest.mark.parametrize("tau_e", [0.0, 0.1])
def test_shown_output_records_its_target(solver, tau_e):
    module, x, y = _mlp()
    graph = pcsim.trace(module, x)
    (out,) = graph.outputs
    traj = pcsim.simulate(graph, (x,), y, solver=solver, t_end=1.0, tau_x=0.5, tau_e=tau_e, t_on=0.3,
                          record=pcsim.Record(times=[0.0, 0.2, 0.3, 0.4, 0.7, 1.0]))
    tol = 10 * tolerance(torch.float64)
    shown = traj.t >= 0.3
    with torch.no_grad():
        free = module(x).numpy()
    assert np.abs(traj.values[out][~shown] - free).max() <= tol * np.abs(free).max()
    assert np.abs(traj.values[out][shown] - y.numpy()).max() <= tol * np.abs(y.numpy()).max()
