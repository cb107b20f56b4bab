"""trace(..., fused=...): nn.RNN / nn.LSTM / nn.GRU kept whole, one call of torch's ATen kernel per layer.

A fused layer is one call (`aten.lstm.input`, `aten.gru.input`, `aten.rnn_tanh.input`) whose outputs
are picked by vertices that select its items (`Vertex.select`): no gate populations. Oracles,
independent of pcsim: the module's own forward (the graph's feed-forward outputs equal it to 1e-12
in float64) and torch autograd on the module (Z-IL and both Fa-Z-IL modes within `pcsim.tolerance`).
The same modules and configurations as the unrolled layers' tests (test_recurrent_and_attention.py).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import pcsim
from tests.capture.test_recurrent_and_attention import (
    EXACT,
    RECURRENT,
    TOL,
    VARIANTS,
    _rnn,
    assert_exact_rules,
    assert_forward_matches,
    autograd_grads,
    capture,
    op_counts,
    random_target,
)
from tests.graph.helpers import DT, Net, assert_grads_match, seeded

aten = torch.ops.aten
OP = {nn.RNN: "rnn_tanh", nn.LSTM: "lstm", nn.GRU: "gru"}
KERNEL = {nn.RNN: aten.rnn_tanh.input, nn.LSTM: aten.lstm.input, nn.GRU: aten.gru.input}

pytestmark = pytest.mark.usefixtures("one_thread")


def layer_vertices(graph: pcsim.Graph, op: str) -> list[pcsim.Vertex]:
    return [graph[n] for n in graph.latent if graph[n].op == op]


def _rules_for(cls, variant: str) -> tuple[str, ...]:
    """Every rule on the smallest configuration; elsewhere one per case, in turn over types and configurations."""
    if variant == "seq-first":
        return EXACT
    return (EXACT[(list(VARIANTS).index(variant) + RECURRENT.index(cls) + 1) % 3],)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("cls", RECURRENT, ids=lambda c: c.__name__)
def test_fused_layer_is_one_call_predicts_what_the_module_returns_and_is_exact(cls, variant):
    net, inputs = _rnn(cls, **VARIANTS[variant])
    graph = capture(net, inputs, _rules_for(cls, variant), fused=True)
    layer = layer_vertices(graph, OP[cls])
    items = 3 if cls is nn.LSTM else 2  # output, h_n (, c_n): each read, each one selector
    assert sorted(v.select for v in layer) == list(range(items))
    assert all(v.fn is KERNEL[cls] for v in layer)
    assert all((v.args, v.kwargs, v.parents) == (layer[0].args, layer[0].kwargs, layer[0].parents) for v in layer)
    ops = op_counts(graph)  # no gate populations: only the Linear before it (and InitialState's tanh)
    assert not {"sigmoid", "split_with_sizes", "mul"} & set(ops)
    assert ops["tanh"] == (1 if VARIANTS[variant].get("h0") else 0)


def _all_items(s, x):
    r = s.m(s.lin(x))
    return r[0], r[1][0], r[1][1]


def test_fused_lstm_with_projection():
    with seeded(0):
        net = Net(_all_items, lin=nn.Linear(3, 3), m=nn.LSTM(3, 5, proj_size=2)).to(DT)
        x = torch.randn(4, 2, 3, dtype=DT)
    graph = capture(net, (x,), ("zil", "fa-zil-wavefront"), fused=(nn.LSTM,))
    assert [graph[o].shape for o in graph.outputs] == [(4, 2, 2), (1, 2, 2), (1, 2, 5)]  # h has the projection's width


def _lstm_classifier(index):
    """An LSTM whose classifier reads its final hidden state through `index(lstm(h))`."""
    with seeded(0):
        net = Net(lambda s, x: s.head(index(s.m(s.lin(x)))[-1]), lin=nn.Linear(3, 3),
                  m=nn.LSTM(3, 4, batch_first=True), head=nn.Linear(4, 2)).to(DT)
        x = torch.randn(5, 3, 3, dtype=DT)
    return net, (x,)


@pytest.mark.parametrize(("index", "item"), [(lambda r: r[1][0], 1), (lambda r: r[-1][-2], 1), (lambda r: r[1][1], 2),
                                             (lambda r: r[1][:1][0], 1)],
                         ids=["h_n", "negative-indices", "c_n", "slice-of-the-tuple"])
def test_nested_items_of_a_fused_lstm_are_picked_by_index(index, item):
    """Indexing the returned tuples is Python on the exported call's result: a slice of the tuple (refused
    by the old fx capture) is picked like any index."""
    net, inputs = _lstm_classifier(index)
    graph = capture(net, inputs, ("zil",), fused=True)
    (layer,) = layer_vertices(graph, "lstm")  # only the item read is a vertex
    assert layer.select == item


def _counting(graph: pcsim.Graph, op: str) -> tuple[pcsim.Graph, dict]:
    """The graph with the fused layer's call wrapped to count its calls (one wrapper for all its selectors)."""
    calls = {"n": 0}
    wrappers = {}

    def wrap(fn):
        def counted(*args, **kwargs):
            calls["n"] += 1
            return fn(*args, **kwargs)
        return counted

    vertices = tuple(dataclasses.replace(v, fn=wrappers.setdefault(v.fn, wrap(v.fn))) if v.op == op else v
                     for v in graph.vertices)
    counted = pcsim.Graph(vertices=vertices, inputs=graph.inputs, outputs=graph.outputs, params=graph.params,
                          constants=graph.constants, param_names=graph.param_names)
    return counted, calls


def _summed_items(s, x):
    r = s.m(x)
    return r[0].sum(0) + r[1][0][0] + r[1][1][0]


RULE_CALLS = {"fa-zil-wavefront": lambda g, x, y: pcsim.fa_zil(g, x, y, mode="wavefront"),
              "zil": pcsim.zil,
              "fa-zil-autonomous": lambda g, x, y: pcsim.fa_zil(g, x, y, mode="autonomous")}


def test_each_rule_runs_the_fused_kernel_as_often_as_it_must():
    """The wavefront runs the layer once for all its selectors; Z-IL and Fa-Z-IL compute only the item an
    output reads (h_n here); the autonomous dynamics also relinearise the layer once its input has moved.
    Every one gives autograd's gradients."""
    net, inputs = _lstm_classifier(lambda r: r[1][0])
    target = random_target(net, inputs)
    reference = autograd_grads(net, inputs, target)
    graph, calls = _counting(pcsim.trace(net, *inputs, fused=True), "lstm")
    for rule, most in [("fa-zil-wavefront", 1), ("zil", 1), ("fa-zil-autonomous", 3)]:
        calls["n"] = 0
        assert_grads_match(RULE_CALLS[rule](graph, inputs, target), reference)
        assert 1 <= calls["n"] <= most, (rule, calls["n"])
    with seeded(0):  # all three items read: still one call for the wave
        net = Net(_summed_items, m=nn.LSTM(3, 4)).to(DT)
        x = torch.randn(5, 2, 3, dtype=DT)
    graph, calls = _counting(pcsim.trace(net, x, fused=True), "lstm")
    assert len(layer_vertices(graph, "lstm")) == 3
    target = random_target(net, (x,))
    assert_grads_match(pcsim.fa_zil(graph, (x,), target), autograd_grads(net, (x,), target))
    assert calls["n"] == 1


def test_a_mutated_schedule_fails_on_a_fused_graph():
    """The exactness above is no accident of the oracle: a slightly wrong step or a late update is caught."""
    net, inputs = _rnn(nn.LSTM, bf=True, layers=1)
    target = random_target(net, inputs)
    reference = autograd_grads(net, inputs, target)
    graph = pcsim.trace(net, *inputs, fused=True)
    assert_grads_match(pcsim.zil(graph, inputs, target), reference)
    layered = graph.level()
    layer = next(v.name for v in layered.vertices if v.op == "lstm" and v.name in layered.min_distance)
    for wrong in (pcsim.zil(graph, inputs, target, gamma=0.99999),
                  pcsim.zil(graph, inputs, target, schedule={layer: layered.min_distance[layer] + 1})):
        with pytest.raises(AssertionError):
            assert_grads_match(wrong, reference)
        worst = max(float((wrong[n] - r).norm() / r.norm()) for n, r in reference.items() if r.norm() > 0)
        assert worst > 1e-6


def test_unknown_fused_types_are_refused():
    net, inputs = _rnn(nn.LSTM, bf=True, layers=1)
    for bad in ((nn.Linear,), (nn.LSTM, nn.LSTMCell)):  # cells are unrolled by torch, never fused
        with pytest.raises(pcsim.InputError, match=rf"'{bad[-1].__name__}'.*nn\.RNN, nn\.LSTM, nn\.GRU"):
            pcsim.trace(net, *inputs, fused=bad)
    for bad in ("lstm", 3):
        with pytest.raises(pcsim.InputError, match=r"takes True or module types.*got"):
            pcsim.trace(net, *inputs, fused=bad)


def test_fused_layer_dropout_in_training_mode_runs_as_in_eval_mode():
    net, inputs = _rnn(nn.LSTM, bf=True, layers=2)
    net.m.dropout = 0.3
    graph = pcsim.trace(net.train(), *inputs, fused=True)
    assert_forward_matches(graph, net.eval(), inputs)
    assert_exact_rules(graph, net, inputs, ("zil",))


@pytest.mark.parametrize("cls", [nn.GRU, nn.LSTM], ids=lambda c: c.__name__)
def test_a_bare_fused_module_traces_as_the_root_with_one_output_per_tensor(cls):
    with seeded(0):
        m = cls(3, 4).to(DT)
        x = torch.randn(2, 5, 3, dtype=DT)
    graph = pcsim.trace(m, x, fused=True)
    with torch.no_grad():
        want = [m(x)[0], *(m(x)[1] if cls is nn.LSTM else (m(x)[1],))]
    assert [graph[o].op for o in graph.outputs] == [OP[cls]] * len(want)
    assert [graph[o].shape for o in graph.outputs] == [tuple(w.shape) for w in want]
    if cls is nn.LSTM:  # pcsim.check end to end, tracing its own copy
        report = pcsim.check(m, (x,), random_target(m, (x,)), rule="fa-zil-wavefront", fused=True)
        assert report.max_rel_diff <= TOL, report.table()
    else:
        assert_exact_rules(graph, m, (x,), ("fa-zil-autonomous",))


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


def test_a_state_tuple_handed_on_whole_fused_and_unrolled():
    """Both captures are exact; they differ only in granularity (one call per layer, or per gate and step)."""
    with seeded(0):
        net = Seq2Seq().to(DT)
        inputs = (torch.randn(2, 3, 3, dtype=DT), torch.randn(2, 2, 2, dtype=DT))
    fused = capture(net, inputs, EXACT, fused=True)
    unrolled = capture(net, inputs, ("zil",))
    (dec,) = [v for v in layer_vertices(fused, "lstm") if len(v.parents) > 1]  # the decoder reads y, h_n, c_n
    assert [fused[p].op for p in dec.parents] == ["input", "lstm", "lstm"]
    assert len(fused.latent) < len(unrolled.latent) / 5
    # three gates per step, 3 + 2 steps, less the encoder's first forget gate (it acts on the zero cell state)
    assert not {"sigmoid"} & set(op_counts(fused)) and op_counts(unrolled)["sigmoid"] == 3 * (3 + 2) - 1
