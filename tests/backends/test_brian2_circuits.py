"""Ops with more than one presynaptic variable per synapse, as Brian2 circuits (circuits.py): products and
quotients of populations, a matrix product of two populations, softmax, layer norm, batch norm with batch
statistics and with running ones, max pooling, and the cross-entropy output error.

Oracle: pcsim's own explicit Euler (the scipy backend's vector field) step by step, under settings the
Z-IL checks do not reach: leaky errors, a target shown late, plasticity throughout, per-sample rows.
"""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import pcsim
from tests.backends.brian2_oracle import PATH_TOL, path_distance, quiet_pyparsing

pytest.importorskip("brian2")
pytestmark = quiet_pyparsing


class EveryCircuit(nn.Module):
    """(B, 1, 4, 4) -> conv -> batch norm -> tanh -> max pool (padded, overlapping) -> q, k, gate;
    softmax(q k^T) k; gate * v / (1 + gate^2); a linear mix; layer norm; log_softmax; a head with class logits
    (before, no fast test ran log_softmax's circuit: its feedback's exp(mu) term x 1.001 passed)."""

    def __init__(self, train_stats: bool):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.q, self.k, self.g = nn.Linear(8, 6), nn.Linear(8, 6), nn.Linear(8, 6)
        self.mix, self.norm, self.bn, self.head = nn.Linear(6, 6), nn.LayerNorm(6), nn.BatchNorm2d(2), nn.Linear(6, 3)
        self.bn.train(train_stats)
        if not train_stats:
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        # (norms over well-spread values: over a near-constant row their gain 1 / std makes Euler unstable
        # at this step, which only pcsim's exact zeros before the error wave would hide)
        h = F.max_pool2d(torch.tanh(self.bn(self.conv(x))), 3, stride=2, padding=1).flatten(1)
        q, k = self.q(h).view(-1, 2, 3), self.k(h).view(-1, 2, 3)
        v = (torch.softmax(q @ k.transpose(1, 2), dim=-1) @ k).flatten(1)
        g = torch.sigmoid(self.g(h))
        return self.head(F.log_softmax(self.norm(self.mix(g * v / (1 + g * g))), dim=1))


@pytest.mark.parametrize("train_stats", [True, False])
def test_every_circuit_is_pcsims_euler_path_with_leaky_errors_and_late_target(train_stats):
    torch.manual_seed(0)
    module = EveryCircuit(train_stats).double()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 1, 4, 4, generator=g, dtype=torch.float64), torch.tensor([0, 2, 1, 1])
    graph = pcsim.trace(module, x)
    ops = {v.op for v in graph.vertices}
    assert {"mul", "div", "bmm", "_softmax", "native_layer_norm", "max_pool2d_with_indices"} <= ops, ops
    assert ("_native_batch_norm_legit_no_training" in ops) != train_stats
    kw = dict(t_end=1.5, dt=0.05, method="euler", tau_x=0.5, tau_e=0.1, t_on=0.2, plasticity="always", loss="ce",
              record=pcsim.Record(every_step=True))
    ref = pcsim.simulate(graph, (x,), y, backend="scipy", **kw)
    got = pcsim.simulate(graph, (x,), y, backend="brian2", **kw)
    moved = {name for name, u in ref.updates.items() if np.abs(u).max() > 0}
    assert {"head.weight", "bn.weight", "bn.bias", "norm.weight", "norm.bias"} <= moved, moved  # scale and shift
    distance = path_distance(got, ref)
    assert distance <= PATH_TOL, distance


def test_describe_shows_the_circuit():
    """A product gate reads its two factors through copies (summed variables of one synapse each), and a
    softmax pools its normaliser in a helper group."""
    from pcsim.backends.brian2 import describe

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(3, 4)

        def forward(self, x):
            return torch.softmax(self.a(x) * self.b(x), dim=-1)

    x = torch.randn(2, 3, dtype=torch.float64)
    graph = pcsim.trace(Gate().double(), x)
    problem = pcsim.algorithms.problem.Problem.build(graph, (x,), torch.rand(2, 4, dtype=torch.float64))
    text = describe(pcsim.dynamics.VectorField(problem, tau_x=1.0), dt=0.1, t_end=0.2)
    assert "mu = (xp0 * xp1) : 1" in text and "xp0_post = x_pre : 1 (summed)" in text
    assert "fb_0_pre = err_post * d0_post : 1 (summed)" in text  # d0 = xp1: sympy's derivative of the product
    assert "(helper of _softmax" in text and "s_post = exp(x_pre) : 1 (summed)" in text


def test_a_log_softmax_output_under_cross_entropy_is_rendered():
    """The log_softmax circuit and the cross-entropy's output both named their normaliser zr: a model ending in
    log_softmax with loss='ce' stopped in Brian2 ('Duplicate definition of variable zr'). Oracles: pcsim's Euler
    path (scipy) and, at Z-IL's discretisation, autograd's gradients on the module."""
    from tests.backends.brian2_oracle import check_zil_on_brian2

    torch.manual_seed(0)

    class LogSoftmaxHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(3, 5), nn.Linear(5, 4)

        def forward(self, x):
            return F.log_softmax(self.fc2(torch.tanh(self.fc1(x))), dim=1)

    x, y = torch.randn(3, 3, dtype=torch.float64), torch.tensor([0, 3, 1])
    check_zil_on_brian2(LogSoftmaxHead().double(), (x,), y, "ce")
