"""trace(..., fused=...): nn.RNN / nn.LSTM / nn.GRU kept whole, one vertex per call on torch's kernel.

Oracles, independent of pcsim: the module's own forward (the graph's feed-forward outputs equal
it to 1e-12 in float64) and torch autograd on the module (`pcsim.check`: Z-IL and both Fa-Z-IL
modes within `pcsim.tolerance`). The same modules and variants as the unrolled expansion's tests.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pcsim
from pcsim.algorithms.problem import Problem
from pcsim.ops.fused import RecurrentLayer
from tests.graph.helpers import DT, Net, seeded, trace_and_compare
from tests.ops.test_expansions import RECURRENT, _rnn, flat

TOL = pcsim.tolerance(DT)
EXACT = ("zil", "fa-zil-wavefront", "fa-zil-autonomous")
OP = {nn.RNN: "rnn", nn.LSTM: "lstm", nn.GRU: "gru"}
VARIANTS = {
    "seq-first": dict(bf=False, layers=1),
    "batch-first-2-layers": dict(bf=True, layers=2),
    "seq-first-h0": dict(bf=False, layers=1, h0=True),
    "no-bias": dict(bf=True, layers=1, bias=False),
    "bidirectional-2-layers": dict(bf=True, layers=2, bidirectional=True),
    "unbatched-h0": dict(bf=False, layers=1, unbatched=True, h0=True),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _target(module, inputs):
    with torch.no_grad(), seeded(7):
        target = tuple(torch.randn(o.shape, dtype=DT) for o in flat(module(*inputs)))
    return target if len(target) > 1 else target[0]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("cls", RECURRENT, ids=lambda c: c.__name__)
def test_fused_layer_is_one_call_and_predicts_what_the_module_returns(cls, variant):
    net, inputs = _rnn(cls, **VARIANTS[variant])
    graph = pcsim.trace(net, *inputs, fused=True)
    layer = [v for v in graph.vertices if v.op == OP[cls]]
    assert len(layer) == (3 if cls is nn.LSTM else 2)  # output, h_n (, c_n): one selector each
    (fn,) = {v.fn for v in layer}  # one call shared by its selectors; an LSTM's nested result flattened
    assert isinstance(getattr(fn, "fn", fn), RecurrentLayer)
    assert not {"sigmoid", "chunk", "mul"} & {v.op for v in graph.vertices}  # no gate populations
    with torch.no_grad():
        want = flat(net(*inputs))
    targets = tuple(torch.zeros(graph[o].shape, dtype=DT) for o in graph.outputs)
    values = Problem.build(graph, inputs, targets if len(targets) > 1 else targets[0]).feedforward()
    got = [values[o] for o in graph.outputs]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert torch.allclose(g, w, rtol=0, atol=1e-12), float((g - w).abs().max())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("cls", RECURRENT, ids=lambda c: c.__name__)
def test_exact_rules_on_fused_layers_match_autograd(cls, variant):
    net, inputs = _rnn(cls, **VARIANTS[variant])
    target = _target(net, inputs)
    for rule in EXACT:
        report = pcsim.check(net, inputs, target, rule=rule, fused=True)
        assert report.max_rel_diff <= TOL, report.table(rule)
        assert all(float(r.norm()) > 0 for name, r in report.reference.items() if name.startswith("m."))


def _all_items(s, x):
    r = s.m(s.lin(x))
    return r[0], r[1][0], r[1][1]


def _summed_items(s, x):
    r = s.m(x)
    return r[0].sum(0) + r[1][0][0] + r[1][1][0]


def test_fused_lstm_with_projection_matches_autograd():
    with seeded(0):
        net = Net(_all_items, lin=nn.Linear(3, 3), m=nn.LSTM(3, 5, proj_size=2)).to(DT)
        x = torch.randn(4, 2, 3, dtype=DT)
    graph = trace_and_compare(net, (x,), fused=(nn.LSTM,))
    assert graph[graph.outputs[1]].shape == (1, 2, 2)  # h_n has the projection's width
    report = pcsim.check(net, (x,), _target(net, (x,)), rule="zil", fused=(nn.LSTM,))
    assert report.max_rel_diff <= TOL, report.table()


def _lstm_classifier(index):
    """An LSTM whose classifier reads its final hidden state through `index(lstm(h))`."""
    with seeded(0):
        net = Net(lambda s, x: s.head(index(s.m(s.lin(x)))[-1]), lin=nn.Linear(3, 3),
                  m=nn.LSTM(3, 4, batch_first=True), head=nn.Linear(4, 2)).to(DT)
        x = torch.randn(5, 3, 3, dtype=DT)
    return net, (x,)


@pytest.mark.parametrize("index", [lambda r: r[1][0], lambda r: r[-1][-2], lambda r: r[1][1]],
                         ids=["h_n", "negative-indices", "c_n"])
def test_nested_items_of_a_fused_lstm_are_picked_by_index(index):
    net, inputs = _lstm_classifier(index)
    graph = trace_and_compare(net, inputs, fused=True)
    report = pcsim.check(net, inputs, _target(net, inputs), rule="zil", fused=True)
    assert report.max_rel_diff <= TOL, report.table()
    assert len([v for v in graph.vertices if v.op == "lstm"]) == 1  # only the item read is a vertex


def test_a_slice_of_the_returned_tuple_is_refused_with_the_node_named():
    net, inputs = _lstm_classifier(lambda r: r[1][:1][0])
    with pytest.raises(pcsim.UnsupportedOpError, match=r"getitem.*indexes the tuple returned by.*slice"):
        pcsim.trace(net, *inputs, fused=True)


def _counting(monkeypatch) -> dict:
    calls = {"n": 0}
    run = RecurrentLayer.__call__

    def counted(self, *args):
        calls["n"] += 1
        return run(self, *args)

    monkeypatch.setattr(RecurrentLayer, "__call__", counted)
    return calls


def test_each_rule_runs_the_fused_kernel_as_often_as_it_must(monkeypatch):
    """The wavefront runs the layer once for all its selectors; Z-IL and Fa-Z-IL skip the items no
    output reads (the output sequence and c_n here); the autonomous dynamics also relinearise the
    layer once its input has moved. Every one gives autograd's gradients."""
    net, inputs = _lstm_classifier(lambda r: r[1][0])
    target = _target(net, inputs)
    calls = _counting(monkeypatch)
    for rule, most in [("fa-zil-wavefront", 1), ("zil", 1), ("fa-zil-autonomous", 3)]:
        calls["n"] = 0
        report = pcsim.check(net, inputs, target, rule=rule, fused=True)
        assert report.passed, report.table(rule)
        assert 1 <= calls["n"] <= most, (rule, calls["n"])
    with seeded(0):  # all three items read: still one call for the wave
        net = Net(_summed_items, m=nn.LSTM(3, 4)).to(DT)
        x = torch.randn(5, 2, 3, dtype=DT)
    graph = pcsim.trace(net, x, fused=True)
    calls["n"] = 0
    pcsim.fa_zil(graph, (x,), torch.zeros(2, 4, dtype=DT))
    assert calls["n"] == 1


def test_fused_and_unrolled_graphs_agree_and_differ_only_in_granularity():
    net, inputs = _rnn(nn.GRU, bf=True, layers=2)
    target = _target(net, inputs)
    unrolled, fused = pcsim.trace(net, *inputs), pcsim.trace(net, *inputs, fused=(nn.GRU,))
    assert len(fused.latent) < len(unrolled.latent) / 10
    a, b = pcsim.zil(unrolled, inputs, target), pcsim.zil(fused, inputs, target)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=TOL, atol=TOL * float(a[name].abs().max()))


def test_a_mutated_schedule_fails_on_a_fused_graph():
    net, inputs = _rnn(nn.LSTM, bf=True, layers=1)
    target = _target(net, inputs)
    assert pcsim.check(net, inputs, target, rule="zil", fused=True).passed
    report = pcsim.check(net, inputs, target, rule="zil", fused=True, gamma=0.99999)
    assert not report.passed and report.max_rel_diff > 1e-6
    graph = pcsim.trace(net, *inputs, fused=True).level()
    layer = next(v.name for v in graph.vertices if v.op == "lstm" and v.name in graph.min_distance)
    late = pcsim.check(net, inputs, target, rule="zil", fused=True, schedule={layer: graph.min_distance[layer] + 1})
    assert not late.passed and late.max_rel_diff > 1e-6


def test_unknown_fused_types_and_training_dropout_are_refused():
    net, inputs = _rnn(nn.LSTM, bf=True, layers=1)
    with pytest.raises(pcsim.InputError, match=r"'Linear'.*nn\.RNN, nn\.LSTM, nn\.GRU"):
        pcsim.trace(net, *inputs, fused=(nn.Linear,))
    for bad in ("lstm", 3):
        with pytest.raises(pcsim.InputError, match=r"takes True or module types.*got"):
            pcsim.trace(net, *inputs, fused=bad)
    with seeded(0):
        net = Net(lambda s, x: s.m(x)[0], m=nn.GRU(3, 4, num_layers=2, dropout=0.5)).to(DT)
    with pytest.raises(pcsim.UnsupportedOpError, match=r"dropout=0\.5.*\.eval\(\)"):
        pcsim.trace(net.train(), torch.randn(2, 1, 3, dtype=DT), fused=True)


@pytest.mark.parametrize("cls", [nn.GRU, nn.LSTM], ids=lambda c: c.__name__)
def test_a_bare_fused_module_traces_as_the_root_with_one_output_per_tensor(cls):
    with seeded(0):
        m = cls(3, 4).to(DT)
        x = torch.randn(2, 5, 3, dtype=DT)
    graph = pcsim.trace(m, x, fused=True)
    with torch.no_grad():
        want = flat(m(x))
    assert [graph[o].op for o in graph.outputs] == [OP[cls]] * len(want)
    assert [graph[o].shape for o in graph.outputs] == [tuple(w.shape) for w in want]
    report = pcsim.check(m, (x,), _target(m, (x,)), rule="fa-zil-wavefront", fused=True)
    assert report.max_rel_diff <= TOL, report.table()


class Seq2Seq(nn.Module):
    """An encoder LSTM whose final (h_n, c_n) is handed whole to a decoder LSTM."""

    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.LSTM(3, 4, batch_first=True), nn.LSTM(2, 4, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x, y):
        _, state = self.enc(x)
        out, _ = self.dec(y, state)
        return self.head(out)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unrolled"])
def test_a_state_tuple_handed_on_whole_is_traced(fused):
    with seeded(0):
        net = Seq2Seq().to(DT)
        inputs = (torch.randn(2, 5, 3, dtype=DT), torch.randn(2, 4, 2, dtype=DT))
    target = _target(net, inputs)
    for rule in EXACT:
        report = pcsim.check(net, inputs, target, rule=rule, fused=fused)
        assert report.max_rel_diff <= TOL, report.table(rule)
    if fused:
        graph = pcsim.trace(net, *inputs, fused=True)
        fed = [v for v in graph.vertices if v.op == "lstm" and v.name in graph.min_distance]
        assert any([graph[p].op for p in v.parents] == ["input", "lstm", "lstm"] for v in fed)  # y, h_n, c_n

