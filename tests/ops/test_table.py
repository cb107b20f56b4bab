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
