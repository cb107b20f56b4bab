"""Autonomous Fa-Z-IL (`pcsim/algorithms/fa_zil.py`): a vertex holds once its gate has fired or locked.

Oracle: autograd on the module itself (`tests.graph.helpers.module_grads`).
"""

from __future__ import annotations

import torch
from torch import nn

import pcsim
from tests.graph.helpers import DT, assert_grads_match, module_grads, seeded


class _OneKeyAttention(nn.Module):
    """Attention over a single key: its softmax is constantly 1, so q and k have an exactly zero gradient and their
    gates never fire. Above it, log(exp(h)) leaves its domain once the unstable gamma = 1 dynamics above the wave
    move exp's value below zero."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(4, 4) for _ in range(4))

    def forward(self, x):  # x: (B, 1, 4)
        h = (self.q(x) @ self.k(x).transpose(1, 2)).softmax(-1) * self.v(x)
        return self.o(torch.log(torch.exp(h)))


def test_a_gate_waiting_on_a_zero_gradient_is_not_fired_by_the_dynamics_above_the_wave():
    """The vertices the wave had passed ran on to the end (depth + 1 steps); log's prediction became NaN there, and
    NaN times the softmax's zero Jacobian is NaN: q's waiting gate fired with it (q.weight all NaN, where
    autograd's gradient is 0; Hugging Face's LeViT at one token gave NaN for 12 parameters so)."""
    with seeded(0):
        net = _OneKeyAttention().to(DT)
        x, y = torch.randn(2, 1, 4, dtype=DT), 100 * torch.randn(2, 1, 4, dtype=DT)
    want = module_grads(net, (x,), (y,))
    assert want["q.weight"].abs().max() == 0 and want["v.weight"].abs().max() > 0
    got = pcsim.fa_zil(pcsim.trace(net, x), (x,), y, mode="autonomous")
    assert all(bool(torch.isfinite(t).all()) for t in got.values())
    assert_grads_match(got, want)
