"""Recurrent layers and cells, nn.MultiheadAttention and nn.TransformerEncoder(Layer), as torch decomposes them.

`pcsim.trace` captures these modules through torch.export: torch's own decompositions unroll a
recurrent layer into per-gate, per-step ATen ops, and attention into its projections, score
products and softmax. Two oracles, both independent of pcsim: the module's own forward (the
captured graph's feed-forward outputs equal it to 1e-12 in float64, output by output) and torch
autograd on the module itself (Z-IL and both Fa-Z-IL modes on the captured graph equal its
gradients within `pcsim.tolerance`). Structure tests count the populations the architecture
implies (each gate of each step of each layer and direction; one softmax over the heads' scores).

Each graph is traced once and every rule runs on it (`pcsim.check` would trace again per rule):
tracing is most of these tests' time. `pcsim.check` itself is exercised where its own handling
matters (a bare module, dropout in training mode).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

import pcsim
from pcsim.algorithms.problem import Problem
from tests.graph.helpers import DT, assert_grads_match, seeded

TOL = pcsim.tolerance(DT)
EXACT = ("zil", "fa-zil-wavefront", "fa-zil-autonomous")
RULES = {
    "zil": pcsim.zil,
    "fa-zil-wavefront": lambda g, x, y: pcsim.fa_zil(g, x, y, mode="wavefront"),
    "fa-zil-autonomous": lambda g, x, y: pcsim.fa_zil(g, x, y, mode="autonomous"),
}

pytestmark = pytest.mark.usefixtures("one_thread")


# -- oracles ------------------------------------------------------------------------------------------
def flat(out) -> list[torch.Tensor]:
    """A module's outputs in the order the capture returns them (nested tuples flattened, None dropped)."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out if o is not None for t in flat(o)]


def one_or_tuple(ts):
    return ts[0] if len(ts) == 1 else tuple(ts)


def random_target(module: nn.Module, inputs: tuple):
    """One target per output of the module, shaped like it."""
    with torch.no_grad(), seeded(7):
        return one_or_tuple([torch.randn(o.shape, dtype=DT) for o in flat(module(*inputs))])


def autograd_grads(module: nn.Module, inputs: tuple, target) -> dict[str, torch.Tensor]:
    """The oracle: autograd of pcsim's default loss, 0.5 * sum((out - y)^2) over outputs, on the module itself."""
    targets = target if isinstance(target, tuple) else (target,)
    params = dict(module.named_parameters())
    with torch.enable_grad():
        outs = flat(module(*inputs))
        assert len(outs) == len(targets)
        loss = sum(0.5 * ((o - y) ** 2).sum() for o, y in zip(outs, targets, strict=True))
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(params.items(), grads, strict=True)}


def graph_outputs(graph: pcsim.Graph, inputs: tuple) -> list[torch.Tensor]:
    """The captured graph's feed-forward values at its outputs."""
    zeros = one_or_tuple([torch.zeros(graph[o].shape, dtype=DT) for o in graph.outputs])
    values = Problem.build(graph, inputs, zeros).feedforward()
    return [values[o] for o in graph.outputs]


def assert_forward_matches(graph: pcsim.Graph, module: nn.Module, inputs: tuple) -> None:
    with torch.no_grad():
        want = flat(module(*inputs))
    got = graph_outputs(graph, inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert torch.allclose(g, w, rtol=0, atol=1e-12), float((g - w).abs().max())


def assert_exact_rules(graph: pcsim.Graph, module: nn.Module, inputs: tuple, rules=EXACT) -> None:
    """Each rule on the captured graph gives the module's autograd gradients, within `pcsim.tolerance`."""
    target = random_target(module, inputs)
    reference = autograd_grads(module, inputs, target)
    for rule in rules:
        assert_grads_match(RULES[rule](graph, inputs, target), reference)  # refuses an all-zero reference


def capture(module: nn.Module, inputs: tuple, rules=EXACT, **trace_kwargs) -> pcsim.Graph:
    """Trace, check the forward and the rules against the module; returns the graph."""
    graph = pcsim.trace(module, *inputs, **trace_kwargs)
    assert_forward_matches(graph, module, inputs)
    assert_exact_rules(graph, module, inputs, rules)
    return graph


def op_counts(graph: pcsim.Graph) -> Counter:
    return Counter(graph[n].op for n in graph.latent)


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
STEPS, BATCH, N_IN, HIDDEN = 2, 3, 3, 4  # two steps: the first from the zero state, one after it
RECURRENT = (nn.RNN, nn.LSTM, nn.GRU)
# per gate population of one step of one layer and direction: the gates through a sigmoid
# (LSTM: input, forget, output; GRU: reset, update) and the tanh units (RNN: the new state;
# LSTM: the cell candidate and tanh(c); GRU: the candidate state)
SIGMOIDS = {nn.RNN: 0, nn.LSTM: 3, nn.GRU: 2}
TANHS = {nn.RNN: 1, nn.LSTM: 2, nn.GRU: 1}


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
    """h0, or (h0, c0), of shape (layers * directions, batch, hidden), computed from the input (one tanh)."""

    def __init__(self, lstm: bool, k: int, time_dim: int, unbatched: bool):
        super().__init__()
        self.lstm, self.k, self.time_dim, self.unbatched = lstm, k, time_dim, unbatched
        self.h = nn.Linear(N_IN, k * HIDDEN)
        self.c = nn.Linear(N_IN, k * HIDDEN) if lstm else None

    def _shape(self, t):
        return t.reshape(self.k, HIDDEN) if self.unbatched else t.reshape(-1, self.k, HIDDEN).transpose(0, 1)

    def forward(self, x):
        summary = x.mean(dim=self.time_dim)
        h = self._shape(torch.tanh(self.h(summary)))
        return (h, self._shape(self.c(summary))) if self.lstm else h


VARIANTS = {  # variant -> _rnn options (the same configurations as tests/capture/test_fused.py)
    "seq-first": dict(bf=False, layers=1),
    "batch-first-2-layers": dict(bf=True, layers=2),
    "seq-first-h0": dict(bf=False, layers=1, h0=True),
    "no-bias": dict(bf=True, layers=1, bias=False),
    "bidirectional-2-layers": dict(bf=True, layers=2, bidirectional=True),
    "unbatched-h0": dict(bf=False, layers=1, unbatched=True, h0=True),
}


def _rules_for(cls, variant: str) -> tuple[str, ...]:
    """Every rule on the smallest configuration; one rule per case elsewhere, taken in turn so that each
    rule meets every layer type and every configuration (tracing dominates; the rules are cheap)."""
    if variant == "seq-first":
        return EXACT
    rule = EXACT[(list(VARIANTS).index(variant) + RECURRENT.index(cls)) % 3]
    if cls is nn.GRU and variant == "no-bias" and rule == "fa-zil-autonomous":
        return ("zil",)  # see test_autonomous_fa_zil_on_a_gru_cell_without_bias (a pcsim bug)
    return (rule,)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("cls", RECURRENT, ids=lambda c: c.__name__)
def test_recurrent_layer_forward_structure_and_exact_rules(cls, variant):
    options = VARIANTS[variant]
    net, inputs = _rnn(cls, **options)
    graph = capture(net, inputs, _rules_for(cls, variant))
    assert len(graph.outputs) == (3 if cls is nn.LSTM else 2)  # output, h_n (, c_n)
    # one population per gate, per step, per layer and direction
    chains = options["layers"] * (2 if options.get("bidirectional") else 1)
    units = STEPS * chains
    # from a zero state, the first step's LSTM forget gate acts on c0 = 0, and without biases the GRU's reset
    # gate on W_hh h0 = 0: structural zeros, so those gates are left out (backprop's gradient there is 0 too)
    idle = cls is nn.LSTM or (cls is nn.GRU and options.get("bias") is False)
    ops = op_counts(graph)
    assert ops["sigmoid"] == SIGMOIDS[cls] * units - (chains if idle and not options.get("h0") else 0)
    assert ops["tanh"] == TANHS[cls] * units + (1 if options.get("h0") else 0)  # (InitialState's own tanh)
    assert not {"lstm", "gru", "rnn_tanh"} & set(ops)  # unrolled: no fused kernel
    if options.get("h0"):  # the recurrent weight multiplies the previous state at every step
        assert len(graph.users["m.weight_hh_l0"]) == STEPS
    if options.get("bidirectional"):  # the reverse direction of the second layer reads the two directions' outputs
        assert {"m.weight_ih_l1_reverse", "m.weight_hh_l1_reverse"} <= set(graph.users)


def test_a_bare_lstm_traces_as_the_root_module():
    with seeded(1):
        lstm = nn.LSTM(N_IN, HIDDEN, num_layers=2, batch_first=True).to(DT)
        x = torch.randn(BATCH, STEPS, N_IN, dtype=DT)
    graph = pcsim.trace(lstm, x)
    assert_forward_matches(graph, lstm, (x,))
    assert len(graph.inputs) == 1 and "weight_ih_l1" in graph.users  # parameters keep their own names
    report = pcsim.check(lstm, (x,), random_target(lstm, (x,)), rule="zil")
    assert report.max_rel_diff <= TOL, report.table()


# -- recurrent cells ----------------------------------------------------------------------------------
class CellLoop(nn.Module):
    """A cell applied at every step of a Linear's output; the state starts at zero (None) or is computed
    from the input (one tanh); returns the hidden state of every step."""

    def __init__(self, cls, given: bool):
        super().__init__()
        self.lin, self.cell = nn.Linear(N_IN, N_IN), cls(N_IN, HIDDEN)
        self.h0 = nn.Linear(N_IN, HIDDEN) if given else None

    def forward(self, x):
        h = self.lin(x)
        state = None
        if self.h0 is not None:
            s = torch.tanh(self.h0(x[0]))
            state = (s, 0.5 * s) if isinstance(self.cell, nn.LSTMCell) else s
        hidden = []
        for t in range(h.shape[0]):
            state = self.cell(h[t], state)
            hidden.append(state[0] if isinstance(state, tuple) else state)
        return torch.stack(hidden)


@pytest.mark.parametrize(("cls", "given"), [(nn.RNNCell, True), (nn.LSTMCell, False), (nn.GRUCell, True)],
                         ids=["RNNCell-state-given", "LSTMCell-zero-state", "GRUCell-state-given"])
def test_cell_applied_at_every_step(cls, given):
    with seeded(5):
        net = CellLoop(cls, given).to(DT)
        x = torch.randn(STEPS, BATCH, N_IN, dtype=DT)
    graph = capture(net, (x,), EXACT)
    layer = {nn.RNNCell: nn.RNN, nn.LSTMCell: nn.LSTM, nn.GRUCell: nn.GRU}[cls]
    ops = op_counts(graph)
    forget_on_zero = cls is nn.LSTMCell and not given  # f * c0 with c0 = 0: left out, with its gate
    assert ops["sigmoid"] == SIGMOIDS[layer] * STEPS - forget_on_zero
    assert ops["tanh"] == TANHS[layer] * STEPS + given
    assert len(graph.users["cell.weight_ih"]) >= STEPS  # one shared weight, used at every step


# -- dropout in training mode -------------------------------------------------------------------------
def test_recurrent_dropout_in_training_mode_is_captured_as_in_eval_mode():
    """pcsim runs dropout as the identity (PC and BP must see one deterministic function). torch's
    decomposition of a layer's inter-layer dropout leaves it out (torch 2.13's `_rnn_helper` zeroes it): the
    unrolled graph of an LSTM(dropout=0.3) in training mode is the module in eval mode, and the rules give
    eval-mode autograd's gradients. (The fused layer does not: test_fused.py.)"""
    net, inputs = _rnn(nn.LSTM, bf=True, layers=2)
    net.m.dropout = 0.3
    graph = pcsim.trace(net.train(), *inputs)
    assert net.training  # trace leaves the mode as it was
    assert not {"dropout", "native_dropout"} & set(op_counts(graph))
    assert_forward_matches(graph, net.eval(), inputs)
    assert_exact_rules(graph, net.eval(), inputs, ("zil",))


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


def assert_one_attention(graph: pcsim.Graph, batch: int = BATCH, queries: int = L, keys: int = L) -> None:
    """One softmax over every head's scores, and two batched products: scores and weighted values."""
    ops = op_counts(graph)
    softmax = [graph[n] for n in graph.latent if graph[n].op in ("_softmax", "_safe_softmax")]
    assert len(softmax) == 1
    assert softmax[0].shape[-1] == keys and torch.Size(softmax[0].shape).numel() == batch * HEADS * queries * keys
    assert ops["bmm"] == 2


CAUSAL = torch.ones(L, L, dtype=torch.bool).triu(1)
ATTENTION = {
    "self": lambda s, h: s.m(h, h, h),
    "self-per-head-weights": lambda s, h: s.m(h, h, h, average_attn_weights=False),
    "self-no-weights": lambda s, h: s.m(h, h, h, need_weights=False)[0],
    "cross": lambda s, h: s.m(h, torch.tanh(h), 2 * h)[0],
    "bool-causal-mask": lambda s, h: s.m(h, h, h, attn_mask=CAUSAL)[0],
    "float-causal-mask": lambda s, h: s.m(h, h, h, attn_mask=nn.Transformer.generate_square_subsequent_mask(L))[0],
}


def _attention_cases():
    """Self and cross attention with every rule, the other options with one; the layouts alternate."""
    for i, case in enumerate(ATTENTION):
        bf = i % 2 == 0
        rules = EXACT if case in ("self", "cross") else (EXACT[i % 3],)
        yield pytest.param(case, bf, rules, id=f"{case}-{'batch-first' if bf else 'seq-first'}")


@pytest.mark.parametrize(("case", "bf", "rules"), list(_attention_cases()))
def test_attention_forward_structure_and_exact_rules(case, bf, rules):
    net, inputs = _attention(ATTENTION[case], bf)
    graph = capture(net, inputs, rules)
    assert_one_attention(graph)
    if case == "self-per-head-weights":
        assert graph[graph.outputs[1]].shape == (BATCH, HEADS, L, L)


def test_attention_key_padding_mask_kdim_vdim_and_unbatched():
    pad = torch.tensor([[False] * (L - 1) + [True]] + [[False] * L] * (BATCH - 1))
    net, inputs = _attention(lambda s, h: s.m(h, h, h, key_padding_mask=pad)[0], bf=True)
    assert_one_attention(capture(net, inputs, ("zil",)))
    net, inputs = _attention(lambda s, h: s.m(h, h[..., :4], h[..., 1:])[0], bf=False, kdim=4, vdim=5)
    graph = capture(net, inputs, ("fa-zil-wavefront",))
    assert {"m.q_proj_weight", "m.k_proj_weight", "m.v_proj_weight"} <= set(graph.users)
    net, inputs = _attention(lambda s, h: s.m(h, h, h), bf=False, unbatched=True)
    assert_one_attention(capture(net, inputs, ("fa-zil-autonomous",)), batch=1)


def test_attention_options_that_extend_the_keys_are_exact():
    """add_bias_kv and add_zero_attn were refused by the old hand-written expansion; torch's own code
    computes them now."""
    net, inputs = _attention(lambda s, h: s.m(h, h, h)[0], bf=True, add_bias_kv=True, add_zero_attn=True)
    graph = capture(net, inputs, ("zil", "fa-zil-wavefront"))
    assert_one_attention(graph, keys=L + 2)  # two more keys: the learnt bias, then zeros
    assert {"m.bias_k", "m.bias_v"} <= set(graph.users)


def test_attention_dropout_in_training_mode_is_captured_as_in_eval_mode():
    """The attention weights' dropout runs as the identity: the graph of the module in training mode is
    the module in eval mode, and the rules give eval-mode autograd's gradients."""
    net, inputs = _attention(lambda s, h: s.m(h, h, h)[0], bf=True, dropout=0.2)
    graph = pcsim.trace(net.train(), *inputs)
    assert {"dropout", "native_dropout"} & set(op_counts(graph))
    assert_forward_matches(graph, net.eval(), inputs)
    assert_exact_rules(graph, net.eval(), inputs, ("zil",))


# -- pcsim.check on modules whose dropout is not an nn.Dropout -------------------------------------------
def test_check_in_training_mode_compares_with_dropout_as_the_identity():
    net, inputs = _rnn(nn.RNN, bf=True, layers=2)
    net.m.dropout = 0.3
    report = pcsim.check(net.train(), inputs, random_target(net, inputs), rule="zil")
    assert report.max_rel_diff <= TOL, report.table()


# -- transformer encoder ----------------------------------------------------------------------------------
ENCODERS = [  # (batch_first, norm_first, activation, rules): each layout, norm placement and activation once
    (False, False, "relu", EXACT),
    (True, True, "gelu", ("fa-zil-wavefront",)),
]


@pytest.mark.parametrize(("bf", "norm_first", "activation", "rules"), ENCODERS,
                         ids=[f"{'bf' if c[0] else 'sf'}-{'prenorm' if c[1] else 'postnorm'}-{c[2]}" for c in ENCODERS])
def test_transformer_encoder_layer(bf, norm_first, activation, rules):
    with seeded(3):
        layer = nn.TransformerEncoderLayer(E, HEADS, 8, dropout=0.1, batch_first=bf, norm_first=norm_first,
                                           activation=activation)
        net = Head(layer, E, E).to(DT).eval()
        x = torch.randn((BATCH, L, E) if bf else (L, BATCH, E), dtype=DT)
    graph = capture(net, (x,), rules)
    ops = op_counts(graph)
    assert ops["native_layer_norm"] == 2
    assert ops[activation] == 1
    assert_one_attention(graph)


def test_transformer_encoder_stack_with_final_norm():
    with seeded(4):
        enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(E, HEADS, 8, batch_first=True), 2,
                                    norm=nn.LayerNorm(E), enable_nested_tensor=False)
        net = Head(enc, E, E).to(DT).eval()
        x = torch.randn(BATCH, L, E, dtype=DT)
    graph = capture(net, (x,), ("fa-zil-wavefront",))
    assert {"m.layers.0.self_attn.in_proj_weight", "m.layers.1.linear2.weight", "m.norm.weight"} <= set(graph.users)
    assert op_counts(graph)["native_layer_norm"] == 2 * 2 + 1


# -- known pcsim bugs -------------------------------------------------------------------------------------
def test_autonomous_fa_zil_on_a_gru_cell_without_bias():
    with seeded(0):
        cell = nn.GRUCell(2, 2, bias=False).to(DT)
        x, y = torch.randn(1, 2, dtype=DT), torch.randn(1, 2, dtype=DT)
    graph = pcsim.trace(cell, x)
    got = pcsim.fa_zil(graph, (x,), y, mode="autonomous")
    assert all(torch.isfinite(g).all() for g in got.values())
    assert_grads_match(got, autograd_grads(cell, (x,), y))
