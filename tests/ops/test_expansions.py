"""Expanded modules: nn.RNN / nn.LSTM / nn.GRU, nn.MultiheadAttention, nn.TransformerEncoder(Layer).

Two oracles, both independent of pcsim: the module's own forward (the traced graph's feed-forward
outputs must equal it to 1e-12 in float64, output by output) and torch autograd on the module
(`pcsim.check`: Z-IL and both Fa-Z-IL modes within `pcsim.tolerance`). Structure tests check that
the expansion really is elementary: one vertex per gate, projection, score and softmax.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pcsim
from pcsim.algorithms.problem import Problem
from tests.graph.helpers import DT, seeded

TOL = pcsim.tolerance(DT)
EXACT = ("zil", "fa-zil-wavefront", "fa-zil-autonomous")


pytestmark = pytest.mark.usefixtures("one_thread")


def flat(out) -> list[torch.Tensor]:
    """A module's outputs in the order fx sees them (nested tuples flattened, None dropped)."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out if o is not None for t in flat(o)]


def graph_outputs(module: nn.Module, inputs: tuple) -> tuple[pcsim.Graph, list[torch.Tensor]]:
    graph = pcsim.trace(module, *inputs)
    targets = tuple(torch.zeros(graph[o].shape, dtype=DT) for o in graph.outputs)
    values = Problem.build(graph, inputs, targets if len(targets) > 1 else targets[0]).feedforward()
    return graph, [values[o] for o in graph.outputs]


def assert_forward_matches(module: nn.Module, inputs: tuple) -> pcsim.Graph:
    with torch.no_grad():
        want = flat(module(*inputs))
    graph, got = graph_outputs(module, inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert torch.allclose(g, w, rtol=0, atol=1e-12), float((g - w).abs().max())
    return graph


def assert_exact_rules(module: nn.Module, inputs: tuple, rules=EXACT) -> None:
    with torch.no_grad(), seeded(7):
        target = tuple(torch.randn(o.shape, dtype=DT) for o in flat(module(*inputs)))
    for rule in rules:
        report = pcsim.check(module, inputs, target if len(target) > 1 else target[0], rule=rule)
        assert report.max_rel_diff <= TOL, report.table(rule)
        assert any(float(r.norm()) > 0 for r in report.reference.values())


class Head(nn.Module):
    """A Linear before the module under test, so its input is a latent vertex; returns all outputs."""

    def __init__(self, m: nn.Module, n_in: int, width: int, state: nn.Module | None = None):
        super().__init__()
        self.lin, self.m = nn.Linear(n_in, width), m
        self.state = state  # module computing an initial state from the input, or None

    def forward(self, x):
        h = self.lin(x)
        if self.state is None:
            return self.m(h)
        return self.m(h, self.state(x))


# -- recurrent layers ---------------------------------------------------------------------------------
STEPS, BATCH, N_IN, HIDDEN = 3, 3, 3, 4


def _rnn(cls, bf: bool, layers: int, bias: bool = True, bidirectional: bool = False, h0: bool = False,
         unbatched: bool = False):
    with seeded(0):
        m = cls(N_IN, HIDDEN, num_layers=layers, batch_first=bf, bias=bias, bidirectional=bidirectional)
        dirs = 2 if bidirectional else 1
        time_dim = 1 if (bf and not unbatched) else 0
        state = InitialState(cls is nn.LSTM, layers * dirs, time_dim, unbatched) if h0 else None
        net = Head(m, N_IN, N_IN, state=state).to(DT).eval()
        shape = (STEPS, N_IN) if unbatched else ((BATCH, STEPS, N_IN) if bf else (STEPS, BATCH, N_IN))
        x = torch.randn(shape, dtype=DT)
    return net, (x,)


class InitialState(nn.Module):
    """h0, or (h0, c0), of shape (layers * directions, batch, hidden), computed from the input."""

    def __init__(self, lstm: bool, k: int, time_dim: int, unbatched: bool):
        super().__init__()
        self.lstm, self.k, self.time_dim, self.unbatched = lstm, k, time_dim, unbatched
        self.h, self.c = nn.Linear(N_IN, k * HIDDEN), nn.Linear(N_IN, k * HIDDEN)

    def _shape(self, t):
        return t.reshape(self.k, HIDDEN) if self.unbatched else t.reshape(-1, self.k, HIDDEN).transpose(0, 1)

    def forward(self, x):
        summary = x.mean(dim=self.time_dim)
        h = self._shape(torch.tanh(self.h(summary)))
        return (h, self._shape(self.c(summary))) if self.lstm else h


RECURRENT = (nn.RNN, nn.LSTM, nn.GRU)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bf", [False, True], ids=["seq-first", "batch-first"])
@pytest.mark.parametrize("cls", RECURRENT, ids=lambda c: c.__name__)
def test_recurrent_forward_equals_the_module(cls, bf, layers):
    net, inputs = _rnn(cls, bf, layers)
    graph = assert_forward_matches(net, inputs)
    n_out = 3 if cls is nn.LSTM else 2  # output, h_n (, c_n)
    assert len(graph.outputs) == n_out


RECURRENT_VARIANTS = {  # variant -> (_rnn options, rules checked)
    "batch-first-2-layers": (dict(bf=True, layers=2), ("zil", "fa-zil-wavefront")),
    "seq-first-h0": (dict(bf=False, layers=1, h0=True), EXACT),
    "no-bias": (dict(bf=True, layers=1, bias=False), ("zil",)),
    "bidirectional": (dict(bf=False, layers=1, bidirectional=True), ("zil",)),
    "bidirectional-2-layers": (dict(bf=True, layers=2, bidirectional=True), ("fa-zil-wavefront",)),
    "unbatched-h0": (dict(bf=False, layers=1, unbatched=True, h0=True), ("zil",)),
}
SLOW_VARIANTS = {"bidirectional", "no-bias"}


def _variant_cases():
    for cls in RECURRENT:
        for variant in sorted(RECURRENT_VARIANTS):
            marks = [pytest.mark.slow] if variant in SLOW_VARIANTS else []
            yield pytest.param(cls, variant, marks=marks, id=f"{cls.__name__}-{variant}")


@pytest.mark.parametrize(("cls", "variant"), list(_variant_cases()))
def test_recurrent_variants_forward_and_exact_rules(cls, variant):
    options, rules = RECURRENT_VARIANTS[variant]
    net, inputs = _rnn(cls, **options)
    assert_forward_matches(net, inputs)
    assert_exact_rules(net, inputs, rules)


@pytest.mark.parametrize("cls", RECURRENT, ids=lambda c: c.__name__)
def test_one_vertex_per_gate_and_step(cls):
    net, inputs = _rnn(cls, bf=True, layers=1)
    graph = pcsim.trace(net, *inputs)
    ops = [v.op for v in graph.vertices]
    sigmoids = {nn.RNN: 0, nn.LSTM: 3, nn.GRU: 2}[cls]  # LSTM: i, f, o; GRU: r, z
    assert ops.count("sigmoid") == sigmoids * STEPS
    assert ops.count("linear") == 2 * STEPS - 1 + 1  # W_ih x_t every step, W_hh h_{t-1} after the first; lin
    assert set(graph.users) >= {"m.weight_ih_l0", "m.weight_hh_l0"}
    assert len(graph.users["m.weight_ih_l0"]) == STEPS  # one shared weight, one use per step


def test_a_bare_lstm_traces_as_the_root_module():
    with seeded(1):
        lstm = nn.LSTM(N_IN, HIDDEN, num_layers=2, batch_first=True).to(DT)
        x = torch.randn(BATCH, STEPS, N_IN, dtype=DT)
    graph = assert_forward_matches(lstm, (x,))
    assert len(graph.inputs) == 1 and "weight_ih_l1" in graph.users  # parameters keep their own names
    assert_exact_rules(lstm, (x,), ("zil",))


def test_recurrent_dropout_in_training_mode_is_refused():
    net, inputs = _rnn(nn.GRU, bf=True, layers=2)
    net.m.dropout = 0.3
    net.train()
    with pytest.raises(pcsim.UnsupportedOpError, match=r"GRU\(dropout=0.3\).*eval"):
        pcsim.trace(net, *inputs)
    net.eval()  # in eval mode torch skips the dropout too
    assert_forward_matches(net, inputs)


# -- attention ------------------------------------------------------------------------------------------
E, HEADS, L = 6, 2, 4


def _attention(call, bf: bool, unbatched: bool = False, **kwargs):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(E, E)
            self.m = nn.MultiheadAttention(E, HEADS, batch_first=bf, **kwargs)

        def forward(self, x):
            return call(self, self.lin(x))

    with seeded(2):
        net = Net().to(DT).eval()
        shape = (L, E) if unbatched else ((BATCH, L, E) if bf else (L, BATCH, E))
        x = torch.randn(shape, dtype=DT)
    return net, (x,)


CAUSAL = torch.ones(L, L, dtype=torch.bool).triu(1)
ATTENTION = {
    "self": lambda s, h: s.m(h, h, h),
    "self-per-head-weights": lambda s, h: s.m(h, h, h, average_attn_weights=False),
    "self-no-weights": lambda s, h: s.m(h, h, h, need_weights=False)[0],
    "cross": lambda s, h: s.m(h, torch.tanh(h), 2 * h)[0],
    "bool-causal-mask": lambda s, h: s.m(h, h, h, attn_mask=CAUSAL)[0],
    "float-causal-mask": lambda s, h: s.m(h, h, h, attn_mask=nn.Transformer.generate_square_subsequent_mask(L))[0],
}


@pytest.mark.parametrize("case", sorted(ATTENTION))
@pytest.mark.parametrize("bf", [False, True], ids=["seq-first", "batch-first"])
def test_attention_forward_and_exact_rules(case, bf):
    net, inputs = _attention(ATTENTION[case], bf)
    graph = assert_forward_matches(net, inputs)
    # every rule on the plain and the cross attention; one rule per layout on the rest (the same arithmetic)
    rules = EXACT if (case, bf) in (("self", True), ("cross", False)) else (("zil",) if bf else ("fa-zil-wavefront",))
    assert_exact_rules(net, inputs, rules)
    ops = [v.op for v in graph.vertices]
    assert ops.count("bmm") == 2  # scores and weighted values
    assert ops.count("softmax") + ops.count("attention_softmax") == 1


def test_attention_key_padding_mask_kdim_vdim_and_unbatched():
    pad = torch.tensor([[False] * (L - 1) + [True]] + [[False] * L] * (BATCH - 1))
    net, inputs = _attention(lambda s, h: s.m(h, h, h, key_padding_mask=pad)[0], bf=True)
    assert_forward_matches(net, inputs)
    assert_exact_rules(net, inputs, ("zil",))
    net, inputs = _attention(lambda s, h: s.m(h, h[..., :4], h[..., 1:])[0], bf=False, kdim=4, vdim=5)
    assert_forward_matches(net, inputs)
    assert {"m.q_proj_weight", "m.k_proj_weight", "m.v_proj_weight"} <= set(pcsim.trace(net, *inputs).users)
    assert_exact_rules(net, inputs, ("zil",))
    net, inputs = _attention(lambda s, h: s.m(h, h, h), bf=False, unbatched=True)
    assert_forward_matches(net, inputs)


def test_attention_options_that_change_the_function_are_refused():
    net, inputs = _attention(lambda s, h: s.m(h, h, h)[0], bf=True, add_bias_kv=True)
    with pytest.raises(pcsim.UnsupportedOpError, match="add_bias_kv"):
        pcsim.trace(net, *inputs)
    net, inputs = _attention(lambda s, h: s.m(h, h, h)[0], bf=True, dropout=0.2)
    net.train()
    with pytest.raises(pcsim.UnsupportedOpError, match="eval"):
        pcsim.trace(net, *inputs)


def _encoder_cases():
    for bf in (False, True):
        for norm_first in (False, True):
            for activation in ("relu", "gelu"):
                all_rules = (bf, norm_first, activation) in ((True, False, "gelu"), (False, True, "relu"))
                yield pytest.param(bf, norm_first, activation, all_rules,
                                   id=f"{'bf' if bf else 'sf'}-{'prenorm' if norm_first else 'postnorm'}-{activation}")


@pytest.mark.parametrize(("bf", "norm_first", "activation", "all_rules"), list(_encoder_cases()))
def test_transformer_encoder_layer(bf, norm_first, activation, all_rules):
    with seeded(3):
        layer = nn.TransformerEncoderLayer(E, HEADS, 8, dropout=0.1, batch_first=bf, norm_first=norm_first,
                                           activation=activation)
        net = Head(layer, E, E).to(DT).eval()
        x = torch.randn((BATCH, L, E) if bf else (L, BATCH, E), dtype=DT)
    graph = assert_forward_matches(net, (x,))
    assert sum(v.op == "layer_norm" for v in graph.vertices) == 2
    assert activation in {v.op for v in graph.vertices}
    assert_exact_rules(net, (x,), EXACT if all_rules else ("fa-zil-wavefront",))


@pytest.mark.slow
def test_transformer_encoder_stack_with_final_norm():
    with seeded(4):
        enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(E, HEADS, 8, batch_first=True), 2,
                                    norm=nn.LayerNorm(E), enable_nested_tensor=False)
        net = Head(enc, E, E).to(DT).eval()
        x = torch.randn(BATCH, L, E, dtype=DT)
    graph = assert_forward_matches(net, (x,))
    assert {"m.layers.0.self_attn.in_proj_weight", "m.layers.1.linear2.weight", "m.norm.weight"} <= set(graph.users)
    assert_exact_rules(net, (x,), ("fa-zil-wavefront",))
