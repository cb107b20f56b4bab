"""The wavefront's plan (vertices sharing one tuple-valued call) keeps its result BP's.

The oracle is torch autograd on the module itself (`nn.LSTM` and `nn.GRU` run their own fused
kernels there); at gamma != 1 it is the reference wave of `reference_rules.py`.
"""

import pytest
import torch
from torch import nn

import pcsim
from pcsim.algorithms.wavefront import WavePlan
from pcsim.numerics import relative_difference, rounding_floor, tolerance
from tests.algorithms import reference_rules as ref


class _Recurrent(nn.Module):
    def __init__(self, kind: type[nn.Module]):
        super().__init__()
        self.rnn = kind(3, 5, num_layers=2, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        out = self.rnn(x)[0]
        return self.head(out[:, -1])


def _problem(kind):
    torch.manual_seed(0)
    module = _Recurrent(kind).double().eval()
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    target = torch.randn(4, 2, dtype=torch.float64)
    return module, x, target, pcsim.trace(module, x)


def _assert_close(got, want):
    scale = max(float(t.norm()) for t in want.values())
    for name, w in want.items():
        rel = relative_difference(got[name], w, rounding_floor(scale, w.dtype))
        assert rel <= tolerance(w.dtype), f"{name}: relative difference {rel:.2e}"


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_wavefront_on_stacked_recurrent_layers_equals_autograd(kind):
    module, x, target, g = _problem(kind)
    plan = WavePlan.of(g.level())
    assert plan.tuple_calls  # the gates of each step come from one split
    loss = 0.5 * ((module(x) - target) ** 2).sum()
    names = [n for n, _ in module.named_parameters()]
    want = dict(zip(names, torch.autograd.grad(loss, list(module.parameters())), strict=True))
    _assert_close(pcsim.fa_zil(g, (x,), target, "mse"), want)


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_wavefront_with_gamma_equals_the_reference_wave(kind):
    _, x, target, g = _problem(kind)
    _assert_close(pcsim.fa_zil(g, (x,), target, "mse", gamma=0.5),
                  ref.fa_zil_wavefront(g, (x,), target, "mse", gamma=0.5))
