"""Tsit5/Dopri5(compile=True): the step fused with the field and compiled follows scipy's DOP853.

The oracle is scipy's DOP853 at rtol 1e-12 on pcsim's eager field (held to closed forms and to the Euler
path elsewhere); the fused step evaluates the field through IL's steady step instead, inside one compiled
function, so a wrong stage sum, a dropped time constant or a wrong drive shows up as a different trajectory.
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import pcsim
from tests.dynamics.models import deep_tanh_problem

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # each network compiles once (seconds)
TIMES = [0.25, 0.5, 1.0, 2.0]
ORACLE = pcsim.Scipy("DOP853", rtol=1e-12, atol=1e-14)


class Gated(nn.Module):
    """Branches, a product of populations, a layer norm and a sigmoid gate: ops the steady step relinearises."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.l1, self.l2, self.l3 = nn.Linear(3, 6), nn.Linear(6, 6), nn.Linear(6, 4)
        self.norm = nn.LayerNorm(6)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.8)

    def forward(self, x):
        h = torch.tanh(self.l1(x))
        return self.l3(torch.sigmoid(self.l2(h)) * h + self.norm(h))


def _networks():
    model, inputs, target = deep_tanh_problem(depth=3)
    yield "deep tanh, mse", pcsim.trace(model, *inputs), inputs, target, "mse"
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    gated = Gated().double()
    yield "gated, cross-entropy", pcsim.trace(gated, x), (x,), torch.tensor([0, 3, 1, 2, 3]), "ce"


# Each case compiles a step for its network and tableau (most of a case's time), so each method runs on one
# network: Tsit5 on the gated network (products, layer norm, sigmoid gate, cross-entropy) and Dopri5 on the
# deep tanh chain (mse), which covers both tableaus, both networks and both losses. (Tsit5 on the deep tanh
# chain is compiled again by test_pieces_it_cannot_fuse_run_eagerly_and_say_so.)
PAIRS = {"gated, cross-entropy": pcsim.Tsit5, "deep tanh, mse": pcsim.Dopri5}


@pytest.mark.parametrize("case", list(_networks()), ids=lambda c: f"{PAIRS[c[0]].__name__}-{c[0]}")
def test_the_fused_step_follows_scipy(case):
    method = PAIRS[case[0]]
    _, graph, inputs, target, loss = case
    kw = dict(t_end=2.0, tau_x={n: 0.5 + 0.25 * (i % 2) for i, n in enumerate(graph.latent)}, loss=loss,
              record={"times": TIMES})
    ref = pcsim.simulate(graph, inputs, target, solver=ORACLE, **kw)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="pcsim")  # no piece ran eagerly, compiling did not fail
        got = pcsim.simulate(graph, inputs, target, solver=method(rtol=1e-10, atol=1e-12, compile=True), **kw)
    moved = max(np.abs(ref.values[n][-1] - ref.values[n][0]).max() for n in graph.latent)
    assert moved > 1e-2  # the populations did move: a frozen trajectory would not pass for the oracle's
    for name in graph.latent:
        np.testing.assert_allclose(got.values[name], ref.values[name], rtol=0, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(got.errors[name], ref.errors[name], rtol=0, atol=1e-9, err_msg=name)


def test_pieces_it_cannot_fuse_run_eagerly_and_say_so():
    """Before the onset the output is free, and after the gate opens plasticity integrates: both eager; the
    piece between them is fused (its accumulators stand still)."""
    model, inputs, target = deep_tanh_problem(depth=3)
    graph = pcsim.trace(model, *inputs)
    kw = dict(t_end=2.0, tau_x=0.5, t_on=0.3, plasticity=pcsim.after(0.7), record={"times": TIMES})
    ref = pcsim.simulate(graph, inputs, target, solver=ORACLE, **kw)
    with pytest.warns(RuntimeWarning, match=r"ran these pieces eagerly: \[0, 0.3\]: the target is not shown; "
                                            r"\[0.7, 2\]: plasticity is on$"):
        got = pcsim.simulate(graph, inputs, target, solver=pcsim.Tsit5(rtol=1e-10, atol=1e-12, compile=True), **kw)
    for p, u in ref.updates.items():
        np.testing.assert_allclose(got.updates[p], u, rtol=0, atol=1e-9, err_msg=p)
