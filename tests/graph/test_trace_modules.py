"""trace() of every supported nn.Module type: pcsim.bp on the graph equals autograd on the module.

Each module is fed by (or feeds) a Linear so the graph has a parameter and a latent input. The
oracle is `torch.autograd.grad` of 0.5 * sum((out - y)^2) on the module itself, in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from pcsim.ops.modules import MODULE_CONVERTERS, MODULE_EXPANSIONS
from tests.graph.helpers import DT, Net, seeded, trace_and_compare


def _x() -> tuple[torch.Tensor, ...]:
    return (torch.randn(3, 4, dtype=DT),)


def _indices() -> tuple[torch.Tensor, ...]:
    return (torch.randint(0, 10, (3, 5)),)


@dataclass(frozen=True)
class ModuleCase:
    id: str
    kind: type
    make: Callable[[], nn.Module]  # the module under test, registered as `m`
    body: Callable  # forward(self, x)
    op: str
    lin: tuple[int, int] = (4, 4)
    inputs: Callable[[], tuple] = _x
    train: bool = False
    extra: dict = field(default_factory=dict)


def _img(s, x):  # (3, 32) -> (3, 2, 4, 4)
    return s.lin(x).view(3, 2, 4, 4)


def _seq(s, x):  # (3, 12) -> (3, 2, 6)
    return s.lin(x).view(3, 2, 6)


def _apply(s, x):
    return s.m(s.lin(x))


def _apply_img(s, x):
    return s.m(_img(s, x))


def _bn(cls, n, train):
    def make():
        m = cls(n)
        with torch.no_grad():
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
        return m.train(train)
    return make


def _layer_norm():
    m = nn.LayerNorm(6)
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_()
    return m


CASES = [
    ModuleCase("Linear", nn.Linear, lambda: nn.Linear(4, 5), lambda s, x: s.m(torch.tanh(s.lin(x))),
               "linear"),
    ModuleCase("NonDynamicallyQuantizableLinear", nn.modules.linear.NonDynamicallyQuantizableLinear,
               lambda: nn.modules.linear.NonDynamicallyQuantizableLinear(4, 5),  # MultiheadAttention.out_proj
               lambda s, x: s.m(torch.tanh(s.lin(x))), "linear"),
    ModuleCase("Conv1d", nn.Conv1d, lambda: nn.Conv1d(2, 3, 3, padding=1), lambda s, x: s.m(_seq(s, x)),
               "conv1d", lin=(4, 12)),
    ModuleCase("Conv2d", nn.Conv2d, lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), _apply_img, "conv2d",
               lin=(4, 32)),
    ModuleCase("MaxPool2d", nn.MaxPool2d, lambda: nn.MaxPool2d(2), lambda s, x: s.m(_img(s, x)), "max_pool2d",
               lin=(4, 32)),
    ModuleCase("AvgPool2d", nn.AvgPool2d, lambda: nn.AvgPool2d(2, stride=1), lambda s, x: s.m(_img(s, x)),
               "avg_pool2d", lin=(4, 32)),
    ModuleCase("AdaptiveAvgPool2d", nn.AdaptiveAvgPool2d, lambda: nn.AdaptiveAvgPool2d((2, 1)),
               lambda s, x: s.m(_img(s, x)), "adaptive_avg_pool2d", lin=(4, 32)),
    ModuleCase("BatchNorm1d-eval", nn.BatchNorm1d, _bn(nn.BatchNorm1d, 6, False), _apply, "batch_norm",
               lin=(4, 6)),
    ModuleCase("BatchNorm1d-train", nn.BatchNorm1d, _bn(nn.BatchNorm1d, 6, True), _apply, "batch_norm",
               lin=(4, 6), train=True),
    ModuleCase("BatchNorm2d-eval", nn.BatchNorm2d, _bn(nn.BatchNorm2d, 2, False), _apply_img, "batch_norm",
               lin=(4, 32)),
    ModuleCase("BatchNorm2d-train", nn.BatchNorm2d, _bn(nn.BatchNorm2d, 2, True), _apply_img, "batch_norm",
               lin=(4, 32), train=True),
    ModuleCase("LayerNorm", nn.LayerNorm, _layer_norm, _apply, "layer_norm", lin=(4, 6)),
    ModuleCase("Embedding", nn.Embedding, lambda: nn.Embedding(10, 4), lambda s, i: s.lin(s.m(i)),
               "embedding", inputs=_indices),
    ModuleCase("Flatten", nn.Flatten, lambda: nn.Flatten(), lambda s, x: s.m(_seq(s, x)), "flatten",
               lin=(4, 12)),
    ModuleCase("Dropout", nn.Dropout, lambda: nn.Dropout(0.5).eval(), _apply, "identity"),
    ModuleCase("Dropout1d", nn.Dropout1d, lambda: nn.Dropout1d(0.5).eval(), lambda s, x: s.m(_seq(s, x)),
               "identity", lin=(4, 12)),
    ModuleCase("Dropout2d", nn.Dropout2d, lambda: nn.Dropout2d(0.5).eval(), lambda s, x: s.m(_img(s, x)),
               "identity", lin=(4, 32)),
    ModuleCase("Identity", nn.Identity, lambda: nn.Identity(), _apply, "identity"),
    ModuleCase("ReLU", nn.ReLU, lambda: nn.ReLU(), _apply, "relu"),
    ModuleCase("ReLU-inplace", nn.ReLU, lambda: nn.ReLU(inplace=True), _apply, "relu"),
    ModuleCase("LeakyReLU", nn.LeakyReLU, lambda: nn.LeakyReLU(0.2), _apply, "leaky_relu"),
    ModuleCase("Tanh", nn.Tanh, lambda: nn.Tanh(), _apply, "tanh"),
    ModuleCase("Sigmoid", nn.Sigmoid, lambda: nn.Sigmoid(), _apply, "sigmoid"),
    ModuleCase("GELU", nn.GELU, lambda: nn.GELU(), _apply, "gelu"),
    ModuleCase("GELU-tanh", nn.GELU, lambda: nn.GELU(approximate="tanh"), _apply, "gelu"),
    ModuleCase("SiLU", nn.SiLU, lambda: nn.SiLU(), _apply, "silu"),
    ModuleCase("ELU", nn.ELU, lambda: nn.ELU(alpha=0.7), _apply, "elu"),
    ModuleCase("Softplus", nn.Softplus, lambda: nn.Softplus(beta=2.0, threshold=1.0), _apply, "softplus"),
    ModuleCase("Softmax", nn.Softmax, lambda: nn.Softmax(dim=1), _apply, "softmax"),
    ModuleCase("LogSoftmax", nn.LogSoftmax, lambda: nn.LogSoftmax(dim=-1), _apply, "log_softmax"),
]


def _build(case: ModuleCase) -> tuple[nn.Module, tuple]:
    with seeded(0):
        net = Net(case.body, lin=nn.Linear(*case.lin), m=case.make()).to(DT)
        inputs = case.inputs()
    net.train(case.train)
    return net, inputs


def test_every_module_converter_has_a_case():
    assert {c.kind for c in CASES} == set(MODULE_CONVERTERS)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_module_gradients_match_autograd_and_op_is_named(case: ModuleCase):
    net, inputs = _build(case)
    graph = trace_and_compare(net, inputs)
    assert graph["m"].op == case.op
    assert graph["m"].name in graph.latent


def test_batchnorm_train_and_eval_graphs_differ():
    """Training mode normalises with the batch's statistics; eval mode with the running ones."""
    case_eval = next(c for c in CASES if c.id == "BatchNorm1d-eval")
    case_train = next(c for c in CASES if c.id == "BatchNorm1d-train")
    net_eval, x = _build(case_eval)
    net_train, _ = _build(case_train)
    assert net_eval.m.running_mean.abs().sum() > 0  # the oracle would not see a wrong choice otherwise
    g_eval, g_train = trace_and_compare(net_eval, x), trace_and_compare(net_train, x)
    assert g_eval["m"].constants and not g_train["m"].constants


# -- recurrent cells: expanded into gates at trace time ----------------------------------------------
CELL_OPS = {nn.RNNCell: {"linear", "tanh"}, nn.LSTMCell: {"linear", "chunk", "sigmoid", "tanh", "mul"},
            nn.GRUCell: {"linear", "chunk", "sigmoid", "tanh", "mul"}}


def _tag(bias: bool, with_hx: bool) -> str:
    return f"{'bias' if bias else 'nobias'}-{'hx' if with_hx else 'nohx'}"


def _cell_cases():
    for cls in (nn.RNNCell, nn.LSTMCell, nn.GRUCell):
        for bias in (True, False):
            for with_hx in (True, False):
                yield pytest.param(cls, bias, with_hx, "tanh", id=f"{cls.__name__}-{_tag(bias, with_hx)}")
    for bias in (True, False):
        for with_hx in (True, False):
            yield pytest.param(nn.RNNCell, bias, with_hx, "relu", id=f"RNNCell-relu-{_tag(bias, with_hx)}")


def _cell_body(cls, with_hx):
    def body(s, x):
        inp = s.lin(x)
        if not with_hx:
            return s.m(inp)
        h = torch.tanh(s.lin_h(x))
        if cls is nn.LSTMCell:
            return s.m(inp, (h, s.lin_c(x)))  # returns (h', c'): two outputs, c' also feeds h'
        return s.m(inp, h)
    return body


def test_every_cell_expansion_has_a_case():
    # the layer and attention expansions are tested in tests/ops/test_expansions.py
    cells = {nn.RNNCell, nn.LSTMCell, nn.GRUCell}
    assert {p.values[0] for p in _cell_cases()} == cells and cells <= set(MODULE_EXPANSIONS)


@pytest.mark.parametrize(("cls", "bias", "with_hx", "nonlinearity"), list(_cell_cases()))
def test_recurrent_cell_gradients_match_autograd(cls, bias, with_hx, nonlinearity):
    kwargs = {"nonlinearity": nonlinearity} if cls is nn.RNNCell else {}
    with seeded(0):
        net = Net(_cell_body(cls, with_hx), lin=nn.Linear(4, 4), lin_h=nn.Linear(4, 5), lin_c=nn.Linear(4, 5),
                  m=cls(4, 5, bias=bias, **kwargs)).to(DT)
        x = torch.randn(3, 4, dtype=DT)
    graph = trace_and_compare(net, (x,))
    ops = {v.op for v in graph.vertices}
    want = CELL_OPS[cls] - {"tanh"} | {nonlinearity} if cls is nn.RNNCell else CELL_OPS[cls]
    assert want <= ops, f"ops {sorted(ops)} lack {sorted(want - ops)}"
    for pname, _ in net.m.named_parameters():
        used = pname.startswith("weight_ih") or with_hx or (bias and pname == "bias_hh") or pname == "bias_ih"
        assert bool(graph.users[f"m.{pname}"]) == used, pname
    if cls is nn.LSTMCell and with_hx:
        assert len(graph.outputs) == 2
        assert any(o.endswith("__output") for o in graph.outputs)  # c' feeds h' and is returned
