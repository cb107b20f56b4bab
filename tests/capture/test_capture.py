"""pcsim.trace through torch.export: what becomes a population, what does not, and gradients through both.

Oracle: `pcsim.check`, i.e. autograd on the module itself (never on pcsim's graph), in float64 at
`pcsim.tolerance`; structure is checked against what the module visibly computes.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pcsim
from pcsim.numerics import relative_difference, tolerance
from tests.graph.helpers import DT, Net, seeded

pytestmark = pytest.mark.usefixtures("one_thread")
RULES = ("zil", "fa-zil-wavefront", "fa-zil-autonomous")


def _x(*shape, seed=0):
    with seeded(seed):
        return torch.randn(*shape, dtype=DT)


def _net(body, **children) -> nn.Module:
    with seeded(0):
        return Net(body, **children).to(DT)


def _exact(module, inputs, target, loss="mse"):
    for rule in RULES:
        rep = pcsim.check(module, inputs, target, rule=rule, loss=loss)
        worst = sorted(rep.per_param.items(), key=lambda kv: -kv[1].rel)[:3]
        assert rep.passed, f"{rule}: {worst}"
        assert all(rep.reference[n].abs().max() > 0 for n in rep.reference), "a zero gradient proves nothing"


# -- parameter functions --------------------------------------------------------------------------
def test_tied_transpose_is_a_parameter_function_and_its_gradient_sums_both_uses():
    net = _net(lambda s, x: F.linear(torch.tanh(s.enc(x)), s.enc.weight.t()), enc=nn.Linear(6, 3))
    g = pcsim.trace(net, _x(4, 6))
    assert all("permute" not in v.op and v.op != "t" for v in g.vertices), g.summary()
    assert g.users["enc.weight"] == tuple(v.name for v in g.vertices if "enc.weight" in v.params)
    assert len(g.users["enc.weight"]) == 2
    _exact(net, (_x(4, 6),), _x(4, 6, seed=1))


@pytest.mark.parametrize("norm", ["legacy", "parametrization"])
def test_weight_norm_gradients_reach_g_and_v(norm):
    with seeded(0):
        conv = nn.Conv1d(3, 4, 3, dilation=2)
        conv = nn.utils.weight_norm(conv) if norm == "legacy" else nn.utils.parametrizations.weight_norm(conv)
    net = _net(lambda s, x: s.head(torch.relu(s.conv(F.pad(x, (4, 0))))[:, :, -1]), conv=conv, head=nn.Linear(4, 2))
    names = {n for n, _ in net.named_parameters()}
    assert {"conv.weight_g", "conv.weight_v"} <= names or any("original" in n for n in names)
    _exact(net, (_x(2, 3, 7),), _x(2, 2, seed=1))


def test_spectral_norm_parametrization_is_captured_as_the_module_runs_it():
    with seeded(0):
        lin = nn.utils.parametrizations.spectral_norm(nn.Linear(5, 4)).eval()
    net = _net(lambda s, x: s.out(torch.tanh(s.lin(x))), lin=lin, out=nn.Linear(4, 2))
    _exact(net, (_x(3, 5),), _x(3, 2, seed=1))


# -- what is not a population ---------------------------------------------------------------------
def test_integer_and_boolean_tensors_are_never_populations():
    def body(s, x):
        h = s.a(x)
        keep = h > 0  # a boolean function of a population: recomputed where it is read
        return s.b(torch.where(keep, h, 0.1 * h))
    net = _net(body, a=nn.Linear(5, 6), b=nn.Linear(6, 2))
    g = pcsim.trace(net, _x(3, 5))
    assert all(g[n].dtype.is_floating_point for n in g.latent)
    _exact(net, (_x(3, 5),), _x(3, 2, seed=1))


def test_input_only_subgraphs_are_clamped_and_constants_folded():
    def body(s, ids):
        mask = (ids > 2).to(DT).unsqueeze(-1)  # from the input alone
        pos = torch.arange(ids.shape[1])  # from nothing that varies
        h = s.emb(ids) + s.pos(pos)
        return s.out((h * mask).mean(1))
    net = _net(body, emb=nn.Embedding(7, 4), pos=nn.Embedding(5, 4), out=nn.Linear(4, 2))
    ids = torch.tensor([[1, 3, 4, 6, 0], [5, 2, 2, 3, 1]])
    g = pcsim.trace(net, ids)
    latent = set(g.latent)
    for v in g.vertices:
        if v.op in ("gt", "_to_copy", "unsqueeze") and not v.params:
            assert v.name not in latent, f"{v.name} depends on the input alone"
    assert not any(v.op == "arange" for v in g.vertices)
    _exact(net, (ids,), _x(2, 2, seed=1))


def test_unread_parameter_warns_by_name_and_its_update_is_zero():
    net = _net(lambda s, x: s.used(x), used=nn.Linear(3, 2), spare=nn.Linear(3, 2))
    with pytest.warns(UserWarning, match=r"spare\.weight"):
        g = pcsim.trace(net, _x(4, 3))
    grads = pcsim.zil(g, (_x(4, 3),), _x(4, 2, seed=1))
    assert torch.count_nonzero(grads["spare.weight"]) == 0


def test_tensor_requiring_grad_that_is_no_parameter_is_refused_by_name():
    net = _net(lambda s, x: s.lin(x) * s.scale, lin=nn.Linear(3, 2))
    net.scale = torch.ones(2, dtype=DT, requires_grad=True)
    with pytest.raises(pcsim.TraceError, match=r"scale.*not a registered parameter"):
        pcsim.trace(net, _x(4, 3))



@pytest.mark.parametrize("where", ["list", "dict"])
def test_a_parameter_in_a_plain_list_or_dict_is_refused_by_name(where):
    """`self.ws = [nn.Parameter(...)]` registers nothing (an nn.ParameterList would): the weight was captured as a
    constant and silently got no update, where the direct attribute was already refused."""
    net = _net(lambda s, x: s.lin(x) * (s.held[0] if where == "list" else s.held["scale"]), lin=nn.Linear(3, 2))
    weight = nn.Parameter(torch.ones(2, dtype=DT))
    net.held = [weight] if where == "list" else {"scale": weight}
    name = r"held\[0\]" if where == "list" else r"held\['scale'\]"
    with pytest.raises(pcsim.TraceError, match=rf"{name} is a tensor that requires grad but is not a registered"):
        pcsim.trace(net, _x(4, 3))
    net.held = nn.ParameterList([weight]) if where == "list" else nn.ParameterDict({"scale": weight})
    _exact(net, (_x(4, 3),), _x(4, 2, seed=1))

# -- names ----------------------------------------------------------------------------------------
def test_vertices_are_named_by_module_path():
    with seeded(0):
        net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Sequential(nn.Linear(5, 3), nn.ReLU())).to(DT)
    g = pcsim.trace(net, _x(2, 4))
    assert [g[n].name for n in g.latent] == ["0", "1", "2.0", "2.1"]


def test_module_called_at_every_step_gets_numbered_names():
    def body(s, x):
        h = x
        for _ in range(3):
            h = torch.tanh(s.cell(h))
        return h
    g = pcsim.trace(_net(body, cell=nn.Linear(4, 4)), _x(2, 4))
    assert [n for n in g.latent if n.startswith("cell")] == ["cell", "cell_1", "cell_2"]


# -- fused layers and the op table ----------------------------------------------------------------
def test_fused_lstm_is_one_vertex_and_unrolled_is_many():
    with seeded(0):
        lstm = nn.LSTM(3, 4, batch_first=True).to(DT)
    net = _net(lambda s, x: s.lstm(x)[0][:, -1], lstm=lstm)
    fused = pcsim.trace(net, _x(2, 5, 3), fused=True)
    unrolled = pcsim.trace(net, _x(2, 5, 3))
    assert [fused[n].op for n in fused.latent].count("lstm") == 1
    assert "lstm" not in {unrolled[n].op for n in unrolled.latent} and len(unrolled.latent) > 20
    for fuse in (True, False):
        assert pcsim.check(net, (_x(2, 5, 3),), _x(2, 4, seed=1), rule="zil", fused=fuse).passed


def test_an_op_without_an_entry_runs_by_autograd_on_its_call():
    # atan2 and erfinv have no entry in the op table: autograd on the one call is their VJP
    net = _net(lambda s, x: s.b(torch.atan2(s.a(x), torch.ones(())) + torch.erfinv(0.5 * torch.tanh(s.a(x)))),
               a=nn.Linear(3, 4), b=nn.Linear(4, 2))
    g = pcsim.trace(net, _x(5, 3))
    ops = {g[n].op for n in g.latent}
    assert {"atan2", "erfinv"} <= ops
    assert not ({"atan2", "erfinv"} & set(pcsim.ops.table.OPS))
    _exact(net, (_x(5, 3),), _x(5, 2, seed=1))


class _Bag(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.bag = nn.EmbeddingBag(10, 4, mode=mode)

    def forward(self, ids, offsets):
        return self.bag(ids, offsets)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_an_op_without_an_entry_that_reads_an_input_directly_is_probed_on_the_inputs_value(mode):
    # `_embedding_bag` has no table entry and reads the user's index input itself: its probe pulls back on
    # that input's example value (a KeyError from the capture before)
    with seeded(0):
        net = _Bag(mode).to(DT)
    ids, offsets = torch.tensor([1, 2, 4, 5, 4, 3, 2, 9]), torch.tensor([0, 4])
    g = pcsim.trace(net, ids, offsets)
    assert "_embedding_bag" not in pcsim.ops.table.OPS and "_embedding_bag" in {g[n].op for n in g.latent}
    _exact(net, (ids, offsets), _x(2, 4, seed=1))


def test_dropout_in_training_mode_runs_as_the_identity_like_the_oracle():
    with seeded(0):
        net = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Tanh(), nn.Linear(4, 2)).to(DT).train()
    with pytest.warns(UserWarning, match=r"^op (native_)?dropout .*: p = 0\.5 in train mode in module '1': "
                                         r"pcsim runs dropout as the identity"):
        g = pcsim.trace(net, _x(2, 3))
    assert {"dropout", "native_dropout"} & {g[n].op for n in g.latent}
    _exact(net, (_x(2, 3),), _x(2, 2, seed=1))


def test_a_forced_dropout_runs_as_the_identity_in_the_rules_and_in_checks_oracle():
    """`F.dropout(x, p, training=True)` drops even in eval mode: check's oracle drew a mask while the rules ran
    the identity (check FAILED at 1.0 relative). Both now differentiate the module without the dropout."""
    with seeded(0):
        net = _net(lambda s, x: s.b(torch.tanh(F.dropout(s.a(x), 0.5, training=True))),
                   a=nn.Linear(3, 4), b=nn.Linear(4, 2))
        twin = _net(lambda s, x: s.b(torch.tanh(s.a(x))), a=nn.Linear(3, 4), b=nn.Linear(4, 2))
    twin.load_state_dict(net.state_dict())
    x, y = _x(5, 3), _x(5, 2, seed=1)
    loss = 0.5 * ((twin(x) - y) ** 2).sum()
    want = dict(zip([n for n, _ in twin.named_parameters()], torch.autograd.grad(loss, list(twin.parameters())),
                    strict=True))
    with pytest.warns(UserWarning, match=r"^op (native_)?dropout .* at \w+\.py:\d+: p = 0\.5 in train mode: "):
        report = pcsim.check(net, (x,), y, rule="zil")
    assert report.passed
    for n, g in want.items():
        assert relative_difference(report.grads[n], g) <= tolerance(DT), n


NOISE = {"randn_like": lambda h: torch.randn_like(h), "rand": lambda h: torch.rand(h.shape[-1], dtype=h.dtype),
         "bernoulli": lambda h: torch.bernoulli(torch.full_like(h, 0.5))}


@pytest.mark.parametrize("noise", NOISE.values(), ids=NOISE.keys())
def test_a_random_draw_in_the_forward_pass_is_refused_at_the_users_line(noise):
    """A draw from a population's shape used to become a vertex redrawn at every evaluation, and one from
    nothing a constant frozen at the trace: pcsim's 'exact' updates then matched no forward pass autograd
    runs (check: 0.1 relative on `l(x) + 0.1 randn_like`). Refused, naming the op and the line."""
    net = _net(lambda s, x: s.a(x) + 0.1 * noise(s.a(x)), a=nn.Linear(3, 4))
    with pytest.raises(pcsim.UnsupportedOpError, match=r"^op (randn_like|rand|bernoulli) .* at \w+\.py:\d+: draws"):
        pcsim.trace(net, _x(2, 3))


def test_an_eval_mode_rrelu_is_no_random_draw():
    """RReLU decomposes to `rrelu_with_noise`, which samples only in training: in eval mode it is a leaky ReLU,
    traced and exact; in training it is refused as a draw."""
    with seeded(0):
        net = nn.Sequential(nn.Linear(3, 4), nn.RReLU(), nn.Linear(4, 2)).to(DT)
    _exact(net.eval(), (_x(2, 3),), _x(2, 2, seed=1))
    with pytest.raises(pcsim.UnsupportedOpError, match="draws random numbers"):
        pcsim.trace(net.train(), _x(2, 3))


@pytest.mark.parametrize("body", [lambda s, x: torch.tanh(s.b(torch.tanh(s.a(x)))[s.b(torch.tanh(s.a(x))) > 0]),
                                  lambda s, x: s.a(x).nonzero().to(x.dtype).sum() + s.a(x).sum()],
                         ids=["boolean-selection", "nonzero"])
def test_a_size_that_depends_on_a_populations_values_is_refused(body):
    """`h[h > 0]` gave a vertex whose size follows h's values, which inference moves: Z-IL stopped in autograd
    ('Mismatch in shape') even on the traced input, and IL and the ODEs wherever a sign flipped. Refused at
    the op's line; a mask computed from the inputs alone still traces (`test_problem`)."""
    net = _net(body, a=nn.Linear(3, 4), b=nn.Linear(4, 4))
    with pytest.raises(pcsim.UnsupportedOpError, match=r"at \w+\.py:\d+: has a size that depends on the values"):
        pcsim.trace(net, _x(2, 3))


def test_trace_leaves_the_module_and_its_buffers_unchanged():
    with seeded(0):
        net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).to(DT).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pcsim.trace(net, _x(5, 3))
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    _exact(net, (_x(5, 3),), _x(5, 2, seed=1))


def test_integer_item_of_a_tuple_valued_call_is_recomputed_where_it_is_read():
    def body(s, x):
        h = torch.tanh(s.a(x))
        top, where = h.max(1)  # `where` is an integer item of a call on a population
        return s.b(h) + top.unsqueeze(1) * torch.gather(h, 1, where.unsqueeze(1))
    net = _net(body, a=nn.Linear(4, 5), b=nn.Linear(5, 1))
    g = pcsim.trace(net, _x(3, 4))
    assert all(g[n].dtype.is_floating_point for n in g.latent)
    _exact(net, (_x(3, 4),), _x(3, 1, seed=1))


def test_a_frozen_parameter_is_a_constant_and_gets_no_update():
    """`requires_grad=False` (a frozen embedding or backbone): backprop gives it no gradient, so pcsim reads
    it as a constant; a layer of frozen weights on the input is computed from the data alone (clamped). The
    oracle differentiated every parameter and stopped with torch's 'One of the differentiated Tensors does
    not require grad' before."""
    with seeded(0):
        net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 3)).to(DT)
    net[0].requires_grad_(False)
    net[2].weight.requires_grad_(False)
    x, y = _x(6, 4), _x(6, 3, seed=1)
    g = pcsim.trace(net, x)
    assert {"0", "1"} <= set(g.clamped) and not any(g.users[n] for n in ("0.weight", "0.bias", "2.weight")), g.summary()
    trained = [p for p in net.parameters() if p.requires_grad]
    want = torch.autograd.grad(0.5 * ((net(x) - y) ** 2).sum(), trained)
    for rule in RULES:
        rep = pcsim.check(net, (x,), y, rule=rule)
        assert rep.passed, rep.table()
        got = [rep.grads[n] for n, p in net.named_parameters() if p.requires_grad]
        assert all(torch.allclose(a, b, rtol=1e-12, atol=0) for a, b in zip(got, want, strict=True))
        assert all(not rep.grads[n].any() for n in ("0.weight", "0.bias", "2.weight"))


class _Optional(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x, mask=None, scale: float = 1.0, squash: bool = False):
        h = self.lin(x) * scale
        h = h if mask is None else h * mask
        return torch.tanh(h) if squash else h


@pytest.mark.parametrize("extra", [(None,), (None, 2.5), (_x(3, 4, seed=2), 0.5, True)],
                         ids=["None", "None-number", "tensor-number-flag"])
def test_arguments_given_as_python_values_are_specialised_and_given_again(extra):
    """forward(x, mask=None, scale=2.5): the capture specialises the program to such arguments, as torch.export
    does; the rules take the same values in their places (check crashed on `None.is_floating_point` before, and
    trace refused them)."""
    x, y = _x(3, 4), _x(3, 4, seed=1)
    with seeded(0):
        net = _Optional().to(DT)
    inputs = (x, *extra)
    g = pcsim.trace(net, *inputs)
    assert len(g.inputs) == 1 + sum(isinstance(e, torch.Tensor) for e in extra)
    _exact(net, inputs, y)
    want = torch.autograd.grad(0.5 * ((net(*inputs) - y) ** 2).sum(), list(net.parameters()))
    got = pcsim.zil(g, inputs, y)
    assert all(torch.allclose(got[n], w, rtol=1e-12, atol=0) for n, w in zip(("lin.weight", "lin.bias"), want,
                                                                               strict=True))
    if len(extra) > 1:
        with pytest.raises(pcsim.InputError, match=r"input #2 is 7.0; the graph was traced with .* there"):
            pcsim.zil(g, (x, extra[0], 7.0, *extra[2:]), y)
