"""The exact shortcuts (lean local VJPs, skipping still vertices, the wave in autograd's sign)
return the same values as the straightforward rules in `reference_rules.py`: Z-IL and autonomous
Fa-Z-IL bit for bit; the wavefront, whose sums over a vertex's children autograd's engine orders,
to rounding (bit for bit on 16 of the 19 test architectures)."""

import pytest
import torch

import pcsim
from pcsim.numerics import relative_difference, rounding_floor, tolerance
from tests.algorithms import reference_rules as ref
from tests.equivalence.archs import ARCHS, LOSSES


def _same(fast, slow):
    assert list(fast) == list(slow)
    for name in slow:
        assert fast[name].dtype == slow[name].dtype and fast[name].shape == slow[name].shape, name
        assert torch.equal(fast[name], slow[name]), f"{name}: max diff {(fast[name] - slow[name]).abs().max()}"


def _close(fast, slow):
    """Equal up to the order of the sums: the wavefront against the reference wave."""
    assert list(fast) == list(slow)
    scale = max(float(t.norm()) for t in slow.values())
    for name in slow:
        dtype = slow[name].dtype
        assert fast[name].dtype == dtype and fast[name].shape == slow[name].shape, name
        rel = relative_difference(fast[name], slow[name], rounding_floor(scale, dtype))
        assert rel <= tolerance(dtype), f"{name}: relative difference {rel:.2e}"


def _problem(arch, loss="mse", dtype=torch.float64):
    module, inputs, target = ARCHS[arch](dtype, loss)
    return pcsim.trace(module, *inputs), inputs, target


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_fast_rules_equal_the_reference(arch, loss, captured):
    _, inputs, target, g = captured(arch, torch.float64, loss)
    _same(pcsim.zil(g, inputs, target, loss), ref.zil(g, inputs, target, loss))
    _close(pcsim.fa_zil(g, inputs, target, loss, mode="wavefront"), ref.fa_zil_wavefront(g, inputs, target, loss))
    _same(pcsim.fa_zil(g, inputs, target, loss, mode="autonomous"), ref.fa_zil_autonomous(g, inputs, target, loss))


@pytest.mark.parametrize("arch", ["mlp_tanh_bias", "cnn_pools", "residual_block", "lstm_manual", "attention"])
def test_float32_equals_the_reference(arch):
    g, inputs, target = _problem(arch, "ce", torch.float32)
    _same(pcsim.zil(g, inputs, target, "ce"), ref.zil(g, inputs, target, "ce"))
    _close(pcsim.fa_zil(g, inputs, target, "ce"), ref.fa_zil_wavefront(g, inputs, target, "ce"))


@pytest.mark.parametrize("arch", ["mlp_tanh_bias", "residual_block", "rnn_shared", "resnet_conv_block"])
def test_zil_options_bit_for_bit(arch):
    """The study options that break C1-C3 still follow the full synchronous dynamics exactly.

    From a random start, an inserted identity whose parent has moved computes its error as
    `neg_disp - neg_disp_parent` (`displacement.identity_delta`) where the reference forms both values
    first, `(x_ff - d_p) - x_ff + d`: the same dynamics, to rounding rather than bit for bit.
    """
    g, inputs, target = _problem(arch)
    first = g.level().latent[0]
    for kwargs in ({"gamma": 0.5}, {"level": False}, {"update_timing": "immediate", "lr": 0.1},
                   {"schedule": {first: 0}}, {"schedule": {first: 0}, "update_timing": "immediate", "lr": 0.3}):
        _same(pcsim.zil(g, inputs, target, **kwargs), ref.zil(g, inputs, target, **kwargs))
    random = {"init": "random", "seed": 3}
    _close(pcsim.zil(g, inputs, target, **random), ref.zil(g, inputs, target, **random))


@pytest.mark.parametrize("arch", ["mlp_sigmoid_bias", "residual_block", "gru"])
def test_fa_zil_gamma_equals_the_reference(arch):
    g, inputs, target = _problem(arch)
    _close(pcsim.fa_zil(g, inputs, target, gamma=0.5), ref.fa_zil_wavefront(g, inputs, target, gamma=0.5))
    _same(pcsim.fa_zil(g, inputs, target, mode="autonomous", gamma=0.5),
          ref.fa_zil_autonomous(g, inputs, target, gamma=0.5))


class _OutputFeedsOutput(torch.nn.Module):
    """Two outputs, the second computed from the first (trace routes the first through an identity sink)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)

    def forward(self, x):
        y1 = torch.tanh(self.a(x))
        return y1, self.b(y1)


@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_wavefront_with_an_output_that_feeds_another(gamma):
    torch.manual_seed(0)
    module = _OutputFeedsOutput().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    targets = (torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64))
    g = pcsim.trace(module, x)
    got = pcsim.fa_zil(g, (x,), targets, gamma=gamma)
    _close(got, ref.fa_zil_wavefront(g, (x,), targets, gamma=gamma))
    _same(pcsim.fa_zil(g, (x,), targets, mode="autonomous", gamma=gamma),
          ref.fa_zil_autonomous(g, (x,), targets, gamma=gamma))
    assert float(got["a.weight"].norm()) > 0 and float(got["b.weight"].norm()) > 0
