"""The op table (pcsim/ops/table.py): an entry is what its readers see, and a new one is one line."""

import pytest
import torch
from torch import nn

import pcsim
from pcsim.ops.table import entry, supported_summary
from tests.graph.helpers import seeded


@pytest.mark.parametrize("rule", ["zil", "fa-zil-wavefront", "fa-zil-autonomous"])
def test_hardswish_and_hardsigmoid_are_kept_whole_and_exact(rule):
    """Two entries and `KEPT_WHOLE`: one vertex each, elementwise activations, listed; the exact rules on a
    network of both equal the module's autograd to rounding. Decomposed (clamp, div), they would not: torch's
    hardsigmoid backward rounds 1/6 to float32 in float64, and backprop is the oracle."""
    with seeded(0):
        net = nn.Sequential(nn.Linear(4, 5), nn.Hardswish(), nn.Linear(5, 3), nn.Hardsigmoid(), nn.Linear(3, 2))
        x, y = torch.randn(6, 4), torch.randn(6, 2)
    graph = pcsim.trace(net.double(), x.double())
    assert [v.op for v in graph.vertices if v.op.startswith("hard")] == ["hardswish", "hardsigmoid"]
    for name in ("hardswish", "hardsigmoid"):
        spec = entry(name)
        assert spec.family == "activation" and spec.elementwise and name in supported_summary()
    report = pcsim.check(net, (x,), y, rule=rule)
    assert report.passed, report.table()


class _Assigned(nn.Module):
    """Item assignment into a fresh tensor and into a population: captured as `aten.copy` (no derivative of
    its own in torch) and `slice_scatter`."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(4, 6)

    def forward(self, x):
        out = torch.zeros(2, 3, 8, dtype=x.dtype)
        out[:, :, :6] = self.a(x)  # broadcast over the leading dimension
        out[:, :, 7].copy_(self.b(x)[:, 0])
        h = self.b(x)
        h[:, 1] *= 3
        h[1:, 2:4] = torch.tanh(self.a(x))[1:, :2]
        return out, h


@pytest.mark.parametrize("rule", ["zil", "fa-zil-wavefront", "fa-zil-autonomous"])
def test_item_assignment_copies_values_and_its_error_reaches_only_the_source(rule):
    """`copy` runs as the in-place `copy_` it stands for (refused before: 'derivative for aten::copy is not
    implemented'); the oracle is autograd on the module itself."""
    with seeded(0):
        net = _Assigned().double()
        x = torch.randn(3, 4, dtype=torch.float64)
        y = (torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64))
    assert "copy" in {v.op for v in pcsim.trace(net, x).vertices}
    report = pcsim.check(net, (x,), y, rule=rule)
    assert report.passed and report.max_rel_diff <= pcsim.tolerance(torch.float64), report.table()
    assert all(g.abs().max() > 0 for g in report.reference.values())


class _PermutedHead(nn.Module):
    """A convolution read by a flatten (a `view` that exists for a contiguous batch only) and, permuted, by a
    reshape (a `view` that exists for a channels_last batch only)."""

    def __init__(self):
        super().__init__()
        self.conv, self.a, self.b = nn.Conv2d(3, 4, 3), nn.Linear(64, 2), nn.Linear(64, 2)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        p = h.permute(0, 2, 3, 1)
        return self.a(h.flatten(1)) + self.b(p.reshape(p.shape[0], -1))


@pytest.mark.parametrize("rule", [pcsim.bp, pcsim.zil, pcsim.fa_zil,
                                  lambda *a: pcsim.fa_zil(*a, mode="autonomous")],
                         ids=["bp", "zil", "wavefront", "autonomous"])
def test_a_batch_in_another_memory_layout_than_the_traced_one_runs_the_same_function(rule):
    """Traced on a contiguous batch and run on its channels_last copy (or the other way round), bp and the
    wavefront stopped inside torch ('view size is not compatible with input tensor's size and stride'): the
    captured `view` holds for the example's strides only. It runs as a reshape, which is that view where one
    exists; the updates are the module's autograd gradients."""
    with seeded(0):
        net = _PermutedHead().double()
        x, y = torch.randn(2, 3, 6, 6, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    channels_last = x.to(memory_format=torch.channels_last)
    loss = 0.5 * ((net(x) - y) ** 2).sum()
    want = dict(zip([n for n, _ in net.named_parameters()], torch.autograd.grad(loss, list(net.parameters())),
                    strict=True))
    for traced, given in ((x, channels_last), (channels_last, x)):
        got = rule(pcsim.trace(net, traced), (given,), y)
        for n, w in want.items():
            assert torch.allclose(got[n], w, rtol=pcsim.tolerance(torch.float64), atol=0), n
