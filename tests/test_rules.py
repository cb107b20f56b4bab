"""The rule registry (pcsim/rules.py): what each rule says about itself holds, checked against autograd."""

import dataclasses

import pytest
import torch
from torch import nn

import pcsim
from pcsim.rules import RULES, Rule, get, register
from tests.graph.helpers import seeded


def _net():
    with seeded(0):
        net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    return net, x, y


@pytest.mark.parametrize("name", sorted(RULES))
def test_a_rule_is_exact_exactly_when_it_says_so(name):
    """`exact` rules equal autograd to rounding; the others (IL, iPC) are approximations and do not."""
    net, x, y = _net()
    report = pcsim.check(net, (x,), y, rule=name)
    assert report.passed == RULES[name].exact, report.table()
    assert report.n_vertices > 0 and (report.identity_vertices >= 0)
    # the table says which deviations are a rule's nature rather than a fault
    assert ("approximates backprop" in report.table()) == (not RULES[name].exact)


def test_the_cli_offers_every_registered_rule():
    from pcsim.cli import _parser

    (check,) = [a for a in _parser()._subparsers._group_actions[0].choices["check"]._actions if a.dest == "rule"]
    assert set(check.choices) == set(RULES)


def test_a_new_rule_is_one_registration(monkeypatch):
    """Registered, it is a `check` rule at once (here: BP through the graph, under another name)."""
    monkeypatch.setitem(RULES, "graph-bp", Rule("graph-bp", pcsim.bp, "BP again", exact=True))
    net, x, y = _net()
    assert pcsim.check(net, (x,), y, rule="graph-bp").passed


def test_names_are_unique_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="already registered"):
        register(dataclasses.replace(RULES["zil"]))
    with pytest.raises(ValueError, match="unknown rule 'hebb'; choose one of"):
        get("hebb")


def test_an_option_the_rule_fixes_cannot_be_overridden():
    # before: check(rule="fa-zil-autonomous", mode="wavefront") ran the wavefront under the autonomous name
    net, x, y = _net()
    with pytest.raises(ValueError, match="rule 'fa-zil-autonomous' is mode='autonomous', got mode='wavefront'"):
        pcsim.check(net, (x,), y, rule="fa-zil-autonomous", mode="wavefront")
    graph = pcsim.trace(net, x)
    same = RULES["fa-zil-autonomous"](graph, (x,), y, mode="autonomous")  # restating it is fine
    reference = pcsim.check(net, (x,), y, rule="bp").reference  # autograd on the module
    assert all(torch.allclose(same[n], reference[n], rtol=pcsim.tolerance(torch.float64), atol=0) for n in reference)


def test_an_option_a_rule_does_not_take_is_refused_naming_the_rule_and_its_options():
    """`check(rule="zil", steps=5)` said only Python's "zil() got an unexpected keyword argument 'steps'"."""
    import inspect

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"rule 'zil' takes no option steps; its options: gamma, init, level, lr, "
                                        r"params, schedule, seed, update_timing"):
        pcsim.check(net, (x,), y, rule="zil", steps=5)
    # the options listed are the function's own keywords (the oracle: its signature), less those the rule fixes
    rule = get("fa-zil-autonomous")
    listed = set(inspect.signature(rule.fn).parameters) - {"graph", "inputs", "target", "loss", "mode"}
    with pytest.raises(TypeError, match=", ".join(sorted(listed))):
        rule(pcsim.trace(net, x), (x,), y, steps=3)
    with pytest.raises(TypeError, match=r"rule 'il' takes no option stpes \(did you mean steps\?\); its options"):
        pcsim.check(net, (x,), y, rule="il", stpes=5)
    assert pcsim.check(net, (x,), y, rule="zil", gamma=1.0).passed  # an option it takes still runs
