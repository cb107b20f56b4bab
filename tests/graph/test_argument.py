"""The rules take the graph pcsim.trace returns, and check takes the module (pcsim/graph/argument.py).

Passing one for the other is the first mistake the README's two calls invite (`pcsim.check(net, ...)` beside
`pcsim.zil(graph, ...)`): it failed with an AttributeError from inside the rule ('Sequential' object has no
attribute 'level', 'pruned', 'literal_inputs' or 'sources'; for check, 'Graph' object has no attribute
'named_modules'), naming neither the call nor what to pass. Each is now a TypeError saying both. The rules'
results on a graph are unchanged: autograd on the module is their oracle here.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pcsim
from pcsim import analysis
from pcsim.dynamics.zil_euler import zil_euler
from pcsim.numerics import relative_difference
from tests.graph.helpers import DT, TOL, seeded

GRAPH_TAKERS = {
    "bp": pcsim.bp, "il": pcsim.il, "zil": pcsim.zil, "fa_zil": pcsim.fa_zil, "ipc": pcsim.ipc,
    "simulate": pcsim.simulate, "zil_euler": zil_euler, "locality_audit": analysis.locality_audit,
    "timing_sensitivity": analysis.timing_sensitivity, "il_convergence": analysis.il_convergence,
    "energy_trace": analysis.energy_trace,
}


def _net():
    with seeded():
        net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DT)
        return net, torch.randn(5, 3, dtype=DT), torch.randn(5, 2, dtype=DT)


@pytest.mark.parametrize("name", sorted(GRAPH_TAKERS))
@pytest.mark.parametrize("given", ["module", "none"])
def test_a_rule_given_the_module_says_to_trace_it(name, given):
    net, x, y = _net()
    wrong = net if given == "module" else None
    with pytest.raises(TypeError) as caught:
        GRAPH_TAKERS[name](wrong, (x,), y)
    text = str(caught.value)
    assert f"{name}()" in text and "pcsim.trace(module, *inputs)" in text
    assert ("Sequential (a torch.nn.Module)" in text and "pcsim.check" in text) if given == "module" else "None" in text


def test_a_graph_passed_by_keyword_is_taken():
    net, x, y = _net()
    net.zero_grad()
    (0.5 * ((net(x) - y) ** 2).sum()).backward()  # the oracle: autograd on the module
    got = pcsim.zil(graph=pcsim.trace(net, x), inputs=(x,), target=y)
    for n, p in net.named_parameters():
        assert relative_difference(got[n], p.grad) <= TOL, n


def test_check_given_a_graph_says_it_takes_the_module():
    net, x, y = _net()
    with pytest.raises(TypeError, match=r"check\(\) takes the module itself .* got a Graph: .*pcsim.zil\(graph"):
        pcsim.check(pcsim.trace(net, x), (x,), y)


def test_trace_given_a_class_names_it():
    with pytest.raises(TypeError, match="trace.. needs a torch.nn.Module, got the class Linear"):
        pcsim.trace(nn.Linear, torch.randn(2, 3))
