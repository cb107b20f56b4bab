"""A fixed-step solver's grid times are k dt, which rounding may put just below the time a switch is meant at:
3 * 0.3 = 0.8999999999999999 < 0.9. A target shown at t_on = 0.9 came a step late on every fixed-step solver
(torch's Euler, the field's Euler, Brian2), so Z-IL's windows, set from t_on, missed the error wave: the updates
were 100% off BP's, without a word. Switches are now read a rounding-proof fraction of a step after each grid time.

Oracle: torch autograd on the module (Z-IL at dt = tau_x gives its gradients).
"""

import numpy as np
import pytest
import torch

import pcsim
from pcsim.numerics import tolerance
from tests.backends.brian2_oracle import quiet_pyparsing

DT = 0.3


def _mlp():
    gen = torch.Generator().manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    x = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    return module, x, torch.randn(2, 2, generator=gen, dtype=torch.float64)


CASES = [(s, t_on, tau_e) for s in (pcsim.Euler(DT), pcsim.Euler(DT, fast=False)) for t_on, tau_e in
         ((0.9, 0.0), (0.9, DT), (1.8, 0.0))] + [(pcsim.Brian2(DT), 0.9, DT)]


@quiet_pyparsing
@pytest.mark.parametrize("solver,t_on,tau_e", CASES,
                         ids=lambda v: f"{v.backend}-{getattr(v, 'fast', '')}" if hasattr(v, "backend") else str(v))
def test_zil_with_the_onset_at_a_grid_time_that_rounds_below_it_equals_autograd(solver, t_on, tau_e):
    assert round(t_on / DT) * DT < t_on  # the grid point meant is a rounding below the onset
    module, x, y = _mlp()
    graph = pcsim.trace(module, x)
    tr = pcsim.simulate(graph, (x,), y, solver=solver, t_end=t_on + 12 * DT, tau_x=DT, tau_e=tau_e, t_on=t_on,
                        plasticity="zil", record=[])
    loss = 0.5 * ((module(x) - y) ** 2).sum()
    names = [n for n, _ in module.named_parameters()]
    for name, ref in zip(names, torch.autograd.grad(loss, list(module.parameters())), strict=True):
        err = np.abs(tr.updates[name] - ref.numpy()).max() / ref.abs().max().item()
        assert err <= 10 * tolerance(torch.float64), name


@pytest.mark.parametrize("solver", [pcsim.Euler(DT), pcsim.Euler(DT, fast=False)], ids=["il-step", "field"])
def test_a_gate_opening_at_a_grid_time_that_rounds_below_it_opens_there(solver):
    """pcsim.after(0.9) at dt = 0.3 gates the Hebbian term from step 3 on: its update is the sum of the Hebbian terms
    (dt / tau_w) e x^T of steps 3.. (Euler), which with the target shown from t = 0 and the input clamped is, for the
    first layer's bias, the sum of its errors from step 3. Oracle: the same run gated 'always', minus its first three
    steps' terms, read from a run that ends at step 3."""
    module, x, y = _mlp()
    graph = pcsim.trace(module, x)
    kw = dict(solver=solver, tau_x=DT, record=[])
    gated = pcsim.simulate(graph, (x,), y, t_end=6 * DT, plasticity=pcsim.after(0.9), **kw)
    whole = pcsim.simulate(graph, (x,), y, t_end=6 * DT, plasticity="always", **kw)
    first = pcsim.simulate(graph, (x,), y, t_end=3 * DT, plasticity="always", **kw)
    for name in gated.updates:
        ref = whole.updates[name] - first.updates[name]
        assert np.abs(gated.updates[name] - ref).max() <= 10 * tolerance(torch.float64) * np.abs(ref).max(), name
