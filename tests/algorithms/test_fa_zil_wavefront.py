"""The wavefront's plan (vertices sharing one tuple-valued call) keeps its result BP's.

The oracle is torch autograd on the module itself (`nn.LSTM` and `nn.GRU` run their own fused
kernels there); at gamma != 1 it is the reference wave of `reference_rules.py`.
"""

import pytest
import torch
from torch import nn

import pcsim
from pcsim.algorithms.fa_zil_wavefront import WavePlan
from tests.algorithms import reference_rules as ref
from tests.graph.helpers import assert_grads_match, module_grads


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


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_wavefront_on_stacked_recurrent_layers_equals_autograd(kind):
    module, x, target, g = _problem(kind)
    assert WavePlan.of(g.level()).tuple_calls  # the gates of each step come from one split
    assert_grads_match(pcsim.fa_zil(g, (x,), target, "mse"), module_grads(module, (x,), (target,)))


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_wavefront_with_gamma_equals_the_reference_wave(kind):
    _, x, target, g = _problem(kind)
    assert_grads_match(pcsim.fa_zil(g, (x,), target, "mse", gamma=0.5),
                       ref.fa_zil_wavefront(g, (x,), target, "mse", gamma=0.5))
