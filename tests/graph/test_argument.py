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


# -- settings held to their types and ranges at the boundary (pcsim/graph/argument.py: `checked`) ----------------
# Each case: the call, and what the message must name. Without the check, the silent ones returned (NaN updates
# at gamma = nan or inf; a string flag ran as True) and the others stopped inside the rule with Python's or
# torch's words ("'>' not supported between instances of 'str' and 'int'", "only integer tensors of a single
# element can be converted to an index", "'list' object has no attribute 'items'").
def _silent_cases():
    return {
        "zil gamma nan": (lambda g, x, y: pcsim.zil(g, (x,), y, gamma=float("nan")), "gamma"),
        "zil gamma inf": (lambda g, x, y: pcsim.zil(g, (x,), y, gamma=float("inf")), "gamma"),
        "zil gamma 0": (lambda g, x, y: pcsim.zil(g, (x,), y, gamma=0.0), "gamma"),
        "fa_zil gamma nan": (lambda g, x, y: pcsim.fa_zil(g, (x,), y, gamma=float("nan")), "gamma"),
        "fa_zil autonomous gamma inf": (lambda g, x, y: pcsim.fa_zil(g, (x,), y, mode="autonomous",
                                                                     gamma=float("inf")), "gamma"),
        "zil level 'no'": (lambda g, x, y: pcsim.zil(g, (x,), y, level="no"), "level must be True or False"),
        "zil immediate lr nan": (lambda g, x, y: pcsim.zil(g, (x,), y, update_timing="immediate", lr=float("nan")),
                                 "lr must be > 0"),
        "fa_zil compile 'no'": (lambda g, x, y: pcsim.fa_zil(g, (x,), y, compile="no"), "compile must be True or"),
        "il progress 'no'": (lambda g, x, y: pcsim.il(g, (x,), y, steps=2, progress="no"), "progress must be True"),
        "il steps True": (lambda g, x, y: pcsim.il(g, (x,), y, steps=True), "steps must be an integer"),
        "simulate level 'no'": (lambda g, x, y: pcsim.simulate(g, (x,), y, t_end=1.0, method="euler", dt=1.0,
                                                               plasticity="zil", level="no"), "level must be True"),
        "simulate tau_x '1'": (lambda g, x, y: pcsim.simulate(g, (x,), y, t_end=1.0, tau_x="1"), "tau_x must be a"),
        "Euler compile 'no'": (lambda g, x, y: pcsim.Euler(0.1, compile="no"), "Euler: compile must be True"),
        "Record every_step 'no'": (lambda g, x, y: pcsim.Record(every_step="no"), "every_step must be True"),
        "record dict every_step 'no'": (lambda g, x, y: pcsim.simulate(g, (x,), y, t_end=1.0, method="euler", dt=0.5,
                                                                       record={"every_step": "no"}), "every_step"),
        "after nan": (lambda g, x, y: pcsim.after(float("nan")), "t must be a finite time"),
        "after inf": (lambda g, x, y: pcsim.after(float("inf")), "t must be a finite time"),
        "discretise plasticity None": (lambda g, x, y: pcsim.discretise(tau_x=1.0, dt=1.0, plasticity=None),
                                       "plasticity must be one of"),  # it returned IL, 'not exact'
    }


def _raw_cases():
    rules = {"zil": pcsim.zil, "fa_zil": pcsim.fa_zil, "il": pcsim.il, "ipc": pcsim.ipc}
    cases = {f"{n} gamma {v!r}": (lambda g, x, y, r=r, v=v: r(g, (x,), y, gamma=v), "gamma must be a number")
             for n, r in rules.items() for v in ("0.1", None)}
    cases.update({
        "ipc lr '0.1'": (lambda g, x, y: pcsim.ipc(g, (x,), y, lr="0.1"), "lr must be a number"),
        "il output_precision '1'": (lambda g, x, y: pcsim.il(g, (x,), y, output_precision="1"), "output_precision"),
        "zil seed '1'": (lambda g, x, y: pcsim.zil(g, (x,), y, init="random", seed="1"), "seed must be an integer"),
        "zil schedule list": (lambda g, x, y: pcsim.zil(g, (x,), y, schedule=[1, 2]), "schedule must be"),
        "simulate t_end '5'": (lambda g, x, y: pcsim.simulate(g, (x,), y, t_end="5"), "t_end must be a number"),
        "simulate tau_e '0'": (lambda g, x, y: pcsim.simulate(g, (x,), y, tau_e="0"), "tau_e must be a number"),
        "after None": (lambda g, x, y: pcsim.after(None), "t must be a number"),
        "Record populations 3": (lambda g, x, y: pcsim.Record(populations=3), "populations must be a list"),
        "discretise tau_e '0'": (lambda g, x, y: pcsim.discretise(tau_x=1.0, dt=1.0, tau_e="0"), "tau_e must be"),
    })
    for n in ("bp", "zil", "il", "ipc", "simulate"):
        taker = GRAPH_TAKERS[n]
        cases[f"{n} params list"] = (lambda g, x, y, t=taker: t(g, (x,), y, params=list(g.params.values())),
                                     "params must be a dict")
        cases[f"{n} params numpy"] = (lambda g, x, y, t=taker: t(g, (x,), y, params={
            k: v.detach().numpy() for k, v in g.params.items()}), "params\\['0.weight'\\] must be a tensor")
    return cases


def _assert_refused_by_pcsim(call, match, error=(ValueError, TypeError)):
    net, x, y = _net()
    graph = pcsim.trace(net, x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x0, y0 = x.clone(), y.clone()
    with pytest.raises(error, match=match) as caught:
        call(graph, x, y)
    last = caught.traceback[-1].path
    assert "pcsim" in str(last) and "site-packages" not in str(last), last  # pcsim's own check, not a stack in torch
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items()) and torch.equal(x, x0) \
        and torch.equal(y, y0)


@pytest.mark.parametrize("case", sorted(_silent_cases()))
def test_a_setting_that_ran_silently_wrong_is_refused_by_name(case):
    call, match = _silent_cases()[case]
    _assert_refused_by_pcsim(call, match)


@pytest.mark.parametrize("case", sorted(_raw_cases()))
def test_a_setting_of_the_wrong_type_is_refused_by_name_before_the_rule_runs(case):
    call, match = _raw_cases()[case]
    _assert_refused_by_pcsim(call, match)


@pytest.mark.parametrize("name", ["bp", "zil", "fa_zil", "il", "ipc", "trace"])
def test_a_misspelt_keyword_is_named_with_the_one_meant(name):
    net, x, y = _net()
    graph = pcsim.trace(net, x)
    call = (lambda: pcsim.trace(net, x, fuse=True)) if name == "trace" else \
        (lambda: GRAPH_TAKERS[name](graph, (x,), y, parms=None))
    meant = r"takes no argument '(fuse|parms)' \(did you mean (fused|params)"
    with pytest.raises(TypeError, match=f"{name}\\(\\) {meant}"):
        call()


def test_a_complex_input_is_called_complex():
    net, x, y = _net()
    with pytest.raises(pcsim.InputError, match="has complex dtype torch.complex128"):  # it said 'integer dtype'
        pcsim.zil(pcsim.trace(net, x), (x.to(torch.complex128),), y)


def test_numbers_and_flags_of_numpy_and_torch_are_still_taken():
    """A numpy scalar, a 0-d tensor and 1/0 for a flag are numbers and flags: the check refuses strings, not these.
    The oracle: autograd on the module (Z-IL at gamma = 1 is BP's gradient)."""
    import numpy as np

    net, x, y = _net()
    net.zero_grad()
    (0.5 * ((net(x) - y) ** 2).sum()).backward()
    graph = pcsim.trace(net, x)
    for got in (pcsim.zil(graph, (x,), y, gamma=np.float64(1.0), level=np.bool_(True)),
                pcsim.zil(graph, (x,), y, gamma=torch.tensor(1.0, dtype=DT), level=1),
                pcsim.fa_zil(graph, (x,), y, gamma=1, compile=0)):
        for n, p in net.named_parameters():
            assert relative_difference(got[n], p.grad) <= TOL, n
    assert pcsim.Euler(np.float64(0.5), compile=np.bool_(False)).dt == 0.5
