"""A graph reads buffers and frozen parameters as constants (pcsim/graph/ties.py, pcsim/capture/ties.py).

Read as they are, they stay views of the module's tensors, and a change in place is read by every rule. A value
computed from them alone is folded into a constant at the trace, and a tensor replaced since is not the one the
graph holds: there the rules computed with the trace's values while the module computed with the new ones (0.84
relative off autograd for a buffer's function, 0.39 for a frozen weight's, 0.40 for a replaced buffer, silently).
Those are refused, naming the tensor. The oracle is autograd on the module itself."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import pcsim
from tests.graph.helpers import DT, Net, assert_grads_match, mse, seeded

pytestmark = pytest.mark.usefixtures("one_thread")
RULES = {"bp": pcsim.bp, "zil": pcsim.zil, "fa_zil": pcsim.fa_zil,
         "fa_zil_autonomous": lambda *a: pcsim.fa_zil(*a, mode="autonomous"), "il": pcsim.il, "ipc": pcsim.ipc}
EXACT = ("bp", "zil", "fa_zil", "fa_zil_autonomous")


def _scaled_by_buffer(s, x):
    return s.b(torch.tanh(s.a(x)) * s.scale.exp())  # a function of a buffer alone: folded at the trace


def _frozen_weight_norm(s, x):
    w = s.a.weight / s.a.weight.norm(dim=1, keepdim=True)  # a function of a frozen parameter alone: folded too
    return s.b(torch.tanh(x @ w.t() + s.a.bias))


def _read_as_is(s, x):
    return s.b(torch.tanh(s.a(x)) * s.scale)


def module_grads(module, inputs, targets):
    """The oracle: autograd of 0.5 * sum((out - y)^2) on the module, a frozen parameter's gradient zero."""
    trained = [p for p in module.parameters() if p.requires_grad]
    grads = iter(torch.autograd.grad(mse(module(*inputs), targets), trained))
    return {n: next(grads) if p.requires_grad else torch.zeros_like(p) for n, p in module.named_parameters()}


def _net(body):
    with seeded(0):
        net = Net(body, a=nn.Linear(4, 6), b=nn.Linear(6, 3)).to(DT)
        net.register_buffer("scale", torch.rand(6, dtype=DT))
        x, y = torch.randn(5, 4, dtype=DT), torch.randn(5, 3, dtype=DT)
    return net, x, y


def _change_buffer(net):
    with torch.no_grad():
        net.scale.mul_(0.9).add_(0.3)  # an exponential moving average's step


def _change_frozen_weight(net):
    net.a.weight.data.mul_(2.0).add_(0.1)  # an EMA teacher's update, through .data: no version count moves


def _replace_buffer(net):
    net.scale = torch.full((6,), 0.7, dtype=DT)


CHANGES = {"buffer-function": (_scaled_by_buffer, _change_buffer, r"buffer 'scale' changed since the trace"),
           "frozen-weight-function": (_frozen_weight_norm, _change_frozen_weight,
                                      r"frozen parameter 'a.weight' changed since the trace"),
           "buffer-replaced": (_read_as_is, _replace_buffer, r"buffer 'scale' was replaced by another tensor")}


@pytest.mark.parametrize("change", CHANGES, ids=str)
def test_a_source_changed_where_the_graph_cannot_see_it_is_refused_by_name(change):
    body, mutate, message = CHANGES[change]
    net, x, y = _net(body)
    if body is _frozen_weight_norm:
        net.a.weight.requires_grad_(False)
    g = pcsim.trace(net, x)
    assert_grads_match(pcsim.zil(g, (x,), (y,)), module_grads(net, (x,), (y,)))  # as traced: exact
    mutate(net)
    for rule in RULES.values():
        with pytest.raises(pcsim.InputError, match=message + r".*trace again"):
            rule(g, (x,), y)
    g = pcsim.trace(net, x)
    ref = module_grads(net, (x,), (y,))
    for name in EXACT:
        assert_grads_match(RULES[name](g, (x,), y), ref)


def test_a_source_read_as_it_is_and_changed_in_place_is_read_changed():
    """A buffer and a BatchNorm's running statistics changed in place: the graph reads them live, and stays exact."""
    net, x, y = _net(_read_as_is)
    with seeded(1):
        bn = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).to(DT).eval()
    graphs = [(net, pcsim.trace(net, x)), (bn, pcsim.trace(bn, x))]
    _change_buffer(net)
    with torch.no_grad():
        bn[1].running_mean.add_(0.5)
        bn[1].running_var.mul_(3.0)
    for module, g in graphs:
        ref = module_grads(module, (x,), (y,))
        for name in EXACT:
            assert_grads_match(RULES[name](g, (x,), y), ref)


def _scaled(module, inputs, output):
    return output * 2.0


@pytest.mark.parametrize("change", ["remove", "add", "global"])
def test_a_forward_hook_added_or_removed_since_the_trace_is_refused(change):
    # before: the graph computed what forward() did with the trace's hooks; zil was 1.38 relative off autograd on
    # the module once the hook was removed, without a word
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(DT)
    handle = net[0].register_forward_hook(_scaled) if change == "remove" else None
    x, y = torch.randn(2, 4, dtype=DT), torch.randn(2, 3, dtype=DT)
    graph = pcsim.trace(net, x)
    assert_grads_match(pcsim.zil(graph, (x,), y), module_grads(net, (x,), (y,)))  # with the hook, as traced
    if change == "remove":
        handle.remove()
    elif change == "add":
        handle = net[2].register_forward_pre_hook(lambda m, args: (args[0] ** 2,))
    else:
        handle = nn.modules.module.register_module_forward_hook(_scaled)
    try:
        where = {"remove": "module '0'", "add": "module '2'", "global": "nn.Module's global forward hooks"}[change]
        with pytest.raises(pcsim.InputError, match=f"{where}.*other.*than when.*traced.*trace again"):
            pcsim.zil(graph, (x,), y)
    finally:
        if change != "remove":
            handle.remove()
    if change != "remove":  # the hooks as at the trace again: the graph holds
        assert_grads_match(pcsim.zil(graph, (x,), y), module_grads(net, (x,), (y,)))


class _Tempered(nn.Module):
    def __init__(self):
        super().__init__()
        self.temperature = 2.0
        self.calls = 0
        self.body = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))

    def forward(self, x):
        self.calls += 1  # a counter forward() changes: warned about at the trace, and not a setting
        return self.body(x) / self.temperature


def test_a_python_setting_changed_since_the_trace_is_warned_about_once():
    # before: `m.temperature = 0.5` after the trace left the graph dividing by 2.0, and zil 0.83 relative off
    # autograd on the module, without a word
    torch.manual_seed(0)
    net = _Tempered().to(DT)
    x, y = torch.randn(2, 4, dtype=DT), torch.randn(2, 3, dtype=DT)
    with pytest.warns(UserWarning, match=r"self.calls \(0 -> 1\)"):
        graph = pcsim.trace(net, x)
    net(x)  # the counter moves on: no setting of the graph's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_grads_match(pcsim.zil(graph, (x,), y), module_grads(net, (x,), (y,)))
    net.temperature = 0.5
    net.body[0].note = "a new attribute: not read when traced"
    net.body[2].in_features = 6
    with pytest.warns(UserWarning) as record:
        pcsim.zil(graph, (x,), y)
    messages = [str(r.message) for r in record]
    assert any("self.temperature is 0.5 now but was 2.0 when the module was traced" in m for m in messages), messages
    assert any("self.body.2.in_features is 6 now but was 5" in m for m in messages), messages
    assert not any("note" in m for m in messages), messages
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per setting
        pcsim.zil(graph, (x,), y)
