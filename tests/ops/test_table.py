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
