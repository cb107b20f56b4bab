"""trace() of nn.Module types: pcsim.bp on the captured graph equals autograd on the module.

Each module is fed by (or feeds) a Linear so the graph has a parameter and a latent input. The
oracle is `torch.autograd.grad` of 0.5 * sum((out - y)^2) on the module itself, in float64. The
module under test is registered as `m`: the vertices it makes are named `m`, `m.<op>`, `m_<i>`
(`pcsim.capture.names`), and must compute the core ATen ops it is captured as.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import pcsim
from tests.graph.helpers import DT, Net, assert_grads_match, module_grads, random_targets, seeded, trace_and_compare

# Dropped from the fx version: the coverage tests against the fx tracer's module tables (`MODULE_CONVERTERS`,
# `MODULE_EXPANSIONS`): torch.export captures any module as the ATen ops it runs, so there is no list to cover.


def _x() -> tuple[torch.Tensor, ...]:
    return (torch.randn(3, 4, dtype=DT),)


def _indices() -> tuple[torch.Tensor, ...]:
    return (torch.randint(0, 10, (3, 5)),)


@dataclass(frozen=True)
class ModuleCase:
    id: str
    make: Callable[[], nn.Module]  # the module under test, registered as `m`
    body: Callable  # forward(self, x)
    ops: str  # the ATen ops of m's vertices, space-separated; "" for a module that computes nothing (or copies)
    lin: tuple[int, int] = (4, 4)
    inputs: Callable[[], tuple] = _x
    train: bool = False
    exact: bool = True  # `ops` is all that m's vertices compute (else: among what they compute)


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


BN_EVAL = "_native_batch_norm_legit_no_training"  # normalised with the running statistics
BN_TRAIN = "_native_batch_norm_legit_functional"  # with the batch's, returning the updated running ones too

CASES = [
    ModuleCase("Linear", lambda: nn.Linear(4, 5), lambda s, x: s.m(torch.tanh(s.lin(x))), "linear"),
    ModuleCase("NonDynamicallyQuantizableLinear",
               lambda: nn.modules.linear.NonDynamicallyQuantizableLinear(4, 5),  # MultiheadAttention.out_proj
               lambda s, x: s.m(torch.tanh(s.lin(x))), "linear"),
    ModuleCase("Conv1d", lambda: nn.Conv1d(2, 3, 3, padding=1), lambda s, x: s.m(_seq(s, x)), "conv1d",
               lin=(4, 12)),
    ModuleCase("Conv2d", lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), _apply_img, "conv2d", lin=(4, 32)),
    ModuleCase("MaxPool2d", lambda: nn.MaxPool2d(2), _apply_img, "max_pool2d_with_indices", lin=(4, 32)),
    ModuleCase("AvgPool2d", lambda: nn.AvgPool2d(2, stride=1), _apply_img, "avg_pool2d", lin=(4, 32)),
    ModuleCase("AdaptiveAvgPool2d", lambda: nn.AdaptiveAvgPool2d((2, 1)), _apply_img, "_adaptive_avg_pool2d",
               lin=(4, 32)),
    ModuleCase("BatchNorm1d-eval", _bn(nn.BatchNorm1d, 6, False), _apply, BN_EVAL, lin=(4, 6)),
    ModuleCase("BatchNorm1d-train", _bn(nn.BatchNorm1d, 6, True), _apply, BN_TRAIN, lin=(4, 6), train=True),
    ModuleCase("BatchNorm2d-eval", _bn(nn.BatchNorm2d, 2, False), _apply_img, BN_EVAL, lin=(4, 32)),
    ModuleCase("BatchNorm2d-train", _bn(nn.BatchNorm2d, 2, True), _apply_img, BN_TRAIN, lin=(4, 32), train=True),
    ModuleCase("LayerNorm", _layer_norm, _apply, "native_layer_norm", lin=(4, 6)),
    ModuleCase("Embedding", lambda: nn.Embedding(10, 4), lambda s, i: s.lin(s.m(i)), "embedding",
               inputs=_indices),
    ModuleCase("Flatten", lambda: nn.Flatten(), lambda s, x: s.m(_seq(s, x)), "view", lin=(4, 12)),
    # dropout in eval mode computes nothing
    ModuleCase("Dropout", lambda: nn.Dropout(0.5).eval(), _apply, ""),
    ModuleCase("Dropout1d", lambda: nn.Dropout1d(0.5).eval(), lambda s, x: s.m(_seq(s, x)), "", lin=(4, 12)),
    ModuleCase("Dropout2d", lambda: nn.Dropout2d(0.5).eval(), _apply_img, "", lin=(4, 32)),
    ModuleCase("Identity", lambda: nn.Identity(), _apply, ""),
    ModuleCase("ReLU", lambda: nn.ReLU(), _apply, "relu"),
    ModuleCase("ReLU-inplace", lambda: nn.ReLU(inplace=True), _apply, "relu"),
    ModuleCase("LeakyReLU", lambda: nn.LeakyReLU(0.2), _apply, "leaky_relu"),
    ModuleCase("Tanh", lambda: nn.Tanh(), _apply, "tanh"),
    ModuleCase("Sigmoid", lambda: nn.Sigmoid(), _apply, "sigmoid"),
    ModuleCase("GELU", lambda: nn.GELU(), _apply, "gelu"),
    ModuleCase("GELU-tanh", lambda: nn.GELU(approximate="tanh"), _apply, "gelu"),
    ModuleCase("SiLU", lambda: nn.SiLU(), _apply, "sigmoid mul"),  # core ATen: x * sigmoid(x)
    ModuleCase("ELU", lambda: nn.ELU(alpha=0.7), _apply, "elu"),
    # core ATen: where(beta x > threshold, x, log1p(exp(beta x)) / beta)
    ModuleCase("Softplus", lambda: nn.Softplus(beta=2.0, threshold=1.0), _apply, "exp log1p where", exact=False),
    ModuleCase("Softmax", lambda: nn.Softmax(dim=1), _apply, "_softmax"),
    ModuleCase("LogSoftmax", lambda: nn.LogSoftmax(dim=-1), _apply, "_log_softmax"),
]


def _build(case: ModuleCase) -> tuple[nn.Module, tuple]:
    with seeded(0):
        net = Net(case.body, lin=nn.Linear(*case.lin), m=case.make()).to(DT)
        inputs = case.inputs()
    net.train(case.train)
    return net, inputs


_OF_M = re.compile(r"m($|[._])")


def _m_ops(graph: pcsim.Graph) -> dict[str, str]:
    """m's vertices (by the capture's naming: `m`, `m.<op>`, `m_<i>`) -> their ops."""
    return {v.name: v.op for v in graph.vertices if _OF_M.match(v.name)}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_module_gradients_match_autograd_and_ops_are_captured(case: ModuleCase):
    net, inputs = _build(case)
    graph = trace_and_compare(net, inputs)
    of_m = _m_ops(graph)
    want, got = set(case.ops.split()), set(of_m.values())
    if not want:
        assert got <= {"clone"}, f"m should compute nothing, but its vertices are {of_m}"
    elif case.exact:
        assert got == want, f"m's vertices {of_m}, expected ops {sorted(want)}"
    else:
        assert want <= got, f"m's vertices {of_m}, expected ops including {sorted(want)}"
    assert set(of_m) <= set(graph.latent)


def test_batchnorm_train_and_eval_graphs_differ():
    """Training mode normalises with the batch's statistics; eval mode with the running ones."""
    case_eval = next(c for c in CASES if c.id == "BatchNorm1d-eval")
    case_train = next(c for c in CASES if c.id == "BatchNorm1d-train")
    net_eval, x = _build(case_eval)
    net_train, _ = _build(case_train)
    assert net_eval.m.running_mean.abs().sum() > 0  # the oracle would not see a wrong choice otherwise
    running = (net_train.m.running_mean.clone(), net_train.m.running_var.clone())
    g_eval, g_train = pcsim.trace(net_eval, *x), pcsim.trace(net_train, *x)
    # capturing runs the module, but never writes its running statistics
    assert torch.equal(net_train.m.running_mean, running[0]) and torch.equal(net_train.m.running_var, running[1])
    assert set(_m_ops(g_eval).values()) == {BN_EVAL}
    assert set(_m_ops(g_train).values()) == {BN_TRAIN}
    # each graph matches autograd in its own mode, and the two modes' gradients differ
    targets = random_targets(net_eval, x)
    got_eval, got_train = pcsim.bp(g_eval, x, targets[0]), pcsim.bp(g_train, x, targets[0])
    assert_grads_match(got_eval, module_grads(net_eval, x, targets))
    assert_grads_match(got_train, module_grads(net_train, x, targets))
    assert not torch.allclose(got_eval["lin.weight"], got_train["lin.weight"])


# -- recurrent cells: captured as the gates torch's cell kernels decompose into ---------------------
CELL_OPS = {nn.RNNCell: {"linear", "add"}, nn.LSTMCell: {"linear", "split_with_sizes", "sigmoid", "tanh", "mul"},
            nn.GRUCell: {"linear", "split_with_sizes", "sigmoid", "tanh", "mul"}}


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


@pytest.mark.parametrize(("cls", "bias", "with_hx", "nonlinearity"), list(_cell_cases()))
def test_recurrent_cell_gradients_match_autograd(cls, bias, with_hx, nonlinearity):
    kwargs = {"nonlinearity": nonlinearity} if cls is nn.RNNCell else {}
    with seeded(0):
        children = {"lin": nn.Linear(4, 4), "lin_h": nn.Linear(4, 5), "lin_c": nn.Linear(4, 5),
                    "m": cls(4, 5, bias=bias, **kwargs)}
        x = torch.randn(3, 4, dtype=DT)
    if not with_hx:  # the initial state is zero: the Linears that would make it are left out
        del children["lin_h"], children["lin_c"]
    elif cls is not nn.LSTMCell:
        del children["lin_c"]
    net = Net(_cell_body(cls, with_hx), **children).to(DT)
    graph = trace_and_compare(net, (x,))
    ops = {v.op for v in graph.vertices if v.name.startswith("m.")}
    want = CELL_OPS[cls] | {nonlinearity}
    if cls is nn.RNNCell and not with_hx and not bias:
        want -= {"add"}  # x W_ih^T + 0 W_hh^T: the zero state's product is left out, and the sum with it
    assert want <= ops, f"m's ops {sorted(ops)} lack {sorted(want - ops)}"
    # every parameter with a gradient is read by one of m's vertices; without hx, W_hh multiplies the zero
    # initial state (a gradient of exactly 0 in backprop too), so that product is left out and W_hh unread
    for pname, _ in net.m.named_parameters():
        used = pname.startswith("weight_ih") or with_hx or (bias and pname == "bias_hh") or pname == "bias_ih"
        readers = graph.users[f"m.{pname}"]
        assert bool(readers) == used, (pname, readers)
        assert all(r.startswith("m.") for r in readers), (pname, readers)
    if cls is nn.LSTMCell:
        assert len(graph.outputs) == 2
        assert any(o.endswith("__output") for o in graph.outputs)  # c' feeds h' and is returned
