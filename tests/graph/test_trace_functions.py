"""trace() of every registered function, tensor method and operator form.

Each case is a tiny module combining the op with Linears (so there are parameters and latent
inputs); pcsim.bp on the traced graph must equal autograd on the module, and the op's vertex
must carry the registry's op name.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pcsim.ops import expansions
from pcsim.ops.registry import FUNCTIONS, METHODS
from tests.graph.helpers import DT, Net, seeded, trace_and_compare

# fx records `h += g` as operator.add (a Proxy has no __iadd__), so these keys can never reach the
# tracer; the `+=`-style cases below check that the augmented forms trace as their binary op.
FX_UNREACHABLE = {operator.iadd, operator.isub, operator.imul, operator.itruediv}


@dataclass(frozen=True)
class Case:
    key: object  # a FUNCTIONS key, or a METHODS name; None for extra forms
    id: str
    body: Callable
    op: str
    vertex: str
    integer_input: bool = False


def h(s, x):  # (3, 16)
    return s.lin(x)


def h2(s, x):  # (3, 16), a second latent vertex
    return s.lin2(x)


def pos(s, x):  # a positive latent value
    return s.lin(x) * s.lin(x) + 1.0


def img(s, x):  # (3, 1, 4, 4)
    return s.lin(x).view(3, 1, 4, 4)


def cube(s, x):  # (3, 4, 4)
    return s.lin(x).view(3, 4, 4)


def cube2(s, x):
    return s.lin2(x).view(3, 4, 4)


def _iadd(s, x):
    y = h(s, x)
    y += h2(s, x)
    return y


def _isub(s, x):
    y = h(s, x)
    y -= h2(s, x)
    return y


def _imul(s, x):
    y = h(s, x)
    y *= h2(s, x)
    return y


def _idiv(s, x):
    y = h(s, x)
    y /= pos(s, x)
    return y


def _pair(fn):
    def body(s, x):
        a, b = fn(h(s, x))
        return a * b
    return body


def _unbind(fn):
    def body(s, x):
        a, b, c, d = fn(cube(s, x))
        return a + c * d
    return body


FUNCTION_CASES = [
    Case(F.linear, "F.linear", lambda s, x: F.linear(torch.tanh(h(s, x)), s.w, s.gamma), "linear", "linear"),
    Case(F.conv1d, "F.conv1d", lambda s, x: F.conv1d(h(s, x).view(3, 2, 8), s.k1, s.k1_bias, padding=1),
         "conv1d", "conv1d"),
    Case(F.conv2d, "F.conv2d", lambda s, x: F.conv2d(img(s, x), s.k2, None, 1, 1), "conv2d", "conv2d"),
    Case(F.batch_norm, "F.batch_norm-eval",
         lambda s, x: F.batch_norm(h(s, x).view(3, 2, 8), s.rm, s.rv, s.gamma2, s.beta2, training=False),
         "batch_norm", "batch_norm"),
    Case(None, "F.batch_norm-train",
         lambda s, x: F.batch_norm(h(s, x).view(3, 2, 8), None, None, s.gamma2, s.beta2, training=True),
         "batch_norm", "batch_norm"),
    Case(F.layer_norm, "F.layer_norm", lambda s, x: F.layer_norm(h(s, x), (16,), s.gamma, s.beta),
         "layer_norm", "layer_norm"),
    Case(F.embedding, "F.embedding", lambda s, i: s.lin(F.embedding(i, s.emb)), "embedding", "embedding",
         integer_input=True),
    Case(F.max_pool2d, "F.max_pool2d", lambda s, x: F.max_pool2d(img(s, x), 2), "max_pool2d", "max_pool2d"),
    Case(F.avg_pool2d, "F.avg_pool2d", lambda s, x: F.avg_pool2d(img(s, x), 2, 1), "avg_pool2d",
         "avg_pool2d"),
    Case(F.adaptive_avg_pool2d, "F.adaptive_avg_pool2d",
         lambda s, x: F.adaptive_avg_pool2d(img(s, x), (2, 1)), "adaptive_avg_pool2d", "adaptive_avg_pool2d"),
    Case(torch.relu, "torch.relu", lambda s, x: torch.relu(h(s, x)), "relu", "relu"),
    Case(F.relu, "F.relu", lambda s, x: F.relu(h(s, x)), "relu", "relu"),
    Case(None, "F.relu-inplace", lambda s, x: F.relu(h(s, x), inplace=True) * 2.0, "relu", "relu"),
    Case(None, "F.relu-inplace-positional", lambda s, x: F.relu(h(s, x), True) * 2.0, "relu", "relu"),
    Case(F.leaky_relu, "F.leaky_relu", lambda s, x: F.leaky_relu(h(s, x), 0.2), "leaky_relu", "leaky_relu"),
    Case(None, "F.leaky_relu-inplace", lambda s, x: F.leaky_relu(h(s, x), 0.2, inplace=True) - 1.0,
         "leaky_relu", "leaky_relu"),
    Case(torch.tanh, "torch.tanh", lambda s, x: torch.tanh(h(s, x)), "tanh", "tanh"),
    Case(F.tanh, "F.tanh", lambda s, x: F.tanh(h(s, x)), "tanh", "tanh"),
    Case(torch.sigmoid, "torch.sigmoid", lambda s, x: torch.sigmoid(h(s, x)), "sigmoid", "sigmoid"),
    Case(F.sigmoid, "F.sigmoid", lambda s, x: F.sigmoid(h(s, x)), "sigmoid", "sigmoid"),
    Case(F.gelu, "F.gelu", lambda s, x: F.gelu(h(s, x)), "gelu", "gelu"),
    Case(None, "F.gelu-tanh", lambda s, x: F.gelu(h(s, x), approximate="tanh"), "gelu", "gelu"),
    Case(F.silu, "F.silu", lambda s, x: F.silu(h(s, x)), "silu", "silu"),
    Case(torch.softmax, "torch.softmax", lambda s, x: torch.softmax(h(s, x), 1), "softmax", "softmax"),
    Case(F.softmax, "F.softmax", lambda s, x: F.softmax(cube(s, x), dim=-1), "softmax", "softmax"),
    Case(expansions.attention_softmax, "attention_softmax",  # what MultiheadAttention's masks expand to
         lambda s, x: expansions.attention_softmax(cube(s, x), torch.ones(4, 4, dtype=torch.bool).triu(1)),
         "attention_softmax", "attention_softmax"),
    Case(torch.log_softmax, "torch.log_softmax", lambda s, x: torch.log_softmax(h(s, x), 1), "log_softmax",
         "log_softmax"),
    Case(F.log_softmax, "F.log_softmax", lambda s, x: F.log_softmax(h(s, x), dim=1), "log_softmax",
         "log_softmax"),
    Case(F.elu, "F.elu", lambda s, x: F.elu(h(s, x), alpha=0.5), "elu", "elu"),
    Case(None, "F.elu-inplace", lambda s, x: F.elu(h(s, x), 0.5, True) + 1.0, "elu", "elu"),
    Case(F.softplus, "F.softplus", lambda s, x: F.softplus(h(s, x), beta=2.0, threshold=1.0), "softplus",
         "softplus"),
    Case(torch.exp, "torch.exp", lambda s, x: torch.exp(h(s, x)), "exp", "exp"),
    Case(torch.log, "torch.log", lambda s, x: torch.log(pos(s, x)), "log", "log"),
    Case(torch.sqrt, "torch.sqrt", lambda s, x: torch.sqrt(pos(s, x)), "sqrt", "sqrt"),
    Case(torch.rsqrt, "torch.rsqrt", lambda s, x: torch.rsqrt(pos(s, x)), "rsqrt", "rsqrt"),
    Case(torch.abs, "torch.abs", lambda s, x: torch.abs(h(s, x)), "abs", "abs_1"),
    Case(torch.pow, "torch.pow", lambda s, x: torch.pow(h(s, x), 3), "pow", "pow_1"),
    Case(operator.pow, "operator.pow", lambda s, x: h(s, x) ** 2, "pow", "pow_1"),
    Case(torch.square, "torch.square", lambda s, x: torch.square(h(s, x)), "square", "square"),
    Case(operator.add, "operator.add", lambda s, x: h(s, x) + h2(s, x), "add", "add"),
    Case(None, "operator.add-scalar", lambda s, x: 1.5 + h(s, x), "add", "add"),
    Case(torch.add, "torch.add", lambda s, x: torch.add(h(s, x), h2(s, x), alpha=0.5), "add", "add"),
    Case(None, "+=", _iadd, "add", "add"),
    Case(operator.sub, "operator.sub", lambda s, x: h(s, x) - h2(s, x), "sub", "sub"),
    Case(None, "operator.rsub", lambda s, x: 1.0 - h(s, x), "sub", "sub"),
    Case(torch.sub, "torch.sub", lambda s, x: torch.sub(h(s, x), h2(s, x)), "sub", "sub"),
    Case(None, "-=", _isub, "sub", "sub"),
    Case(operator.mul, "operator.mul", lambda s, x: h(s, x) * h2(s, x), "mul", "mul"),
    Case(torch.mul, "torch.mul", lambda s, x: torch.mul(h(s, x), h2(s, x)), "mul", "mul"),
    Case(None, "*=", _imul, "mul", "mul"),
    Case(operator.truediv, "operator.truediv", lambda s, x: h(s, x) / pos(s, x), "div", "truediv"),
    Case(None, "operator.rtruediv", lambda s, x: 2.0 / pos(s, x), "div", "truediv"),
    Case(torch.div, "torch.div", lambda s, x: torch.div(h(s, x), pos(s, x)), "div", "div"),
    Case(None, "/=", _idiv, "div", "truediv"),
    Case(operator.neg, "operator.neg", lambda s, x: -h(s, x), "neg", "neg"),
    Case(torch.neg, "torch.neg", lambda s, x: torch.neg(h(s, x)), "neg", "neg"),
    Case(operator.matmul, "operator.matmul", lambda s, x: h(s, x) @ s.w, "matmul", "matmul"),
    Case(None, "operator.matmul-latent", lambda s, x: cube(s, x) @ cube2(s, x), "matmul", "matmul"),
    Case(torch.matmul, "torch.matmul", lambda s, x: torch.matmul(h(s, x), s.w), "matmul", "matmul"),
    Case(torch.bmm, "torch.bmm", lambda s, x: torch.bmm(cube(s, x), cube2(s, x)), "bmm", "bmm"),
    Case(torch.reshape, "torch.reshape", lambda s, x: torch.reshape(h(s, x), (3, 2, 8)), "reshape",
         "reshape"),
    Case(torch.permute, "torch.permute", lambda s, x: torch.permute(cube(s, x), (2, 0, 1)), "permute",
         "permute"),
    Case(torch.transpose, "torch.transpose", lambda s, x: torch.transpose(cube(s, x), 0, 2), "transpose",
         "transpose"),
    Case(torch.flatten, "torch.flatten", lambda s, x: torch.flatten(cube(s, x), 1), "flatten", "flatten"),
    Case(torch.unsqueeze, "torch.unsqueeze", lambda s, x: torch.unsqueeze(h(s, x), 1), "unsqueeze",
         "unsqueeze"),
    Case(torch.squeeze, "torch.squeeze", lambda s, x: torch.squeeze(h(s, x).view(3, 1, 16), 1), "squeeze",
         "squeeze"),
    Case(torch.t, "torch.t", lambda s, x: torch.t(h(s, x)), "t", "t"),
    Case(operator.getitem, "operator.getitem", lambda s, x: h(s, x)[:, 2:9], "getitem", "getitem"),
    Case(None, "operator.getitem-none-int", lambda s, x: cube(s, x)[:, None, 1], "getitem", "getitem"),
    Case(torch.cat, "torch.cat", lambda s, x: torch.cat((h(s, x), h2(s, x)), 1), "cat", "cat"),
    Case(torch.concat, "torch.concat", lambda s, x: torch.concat([h(s, x), h2(s, x)], dim=0), "cat",
         "concat"),
    Case(torch.stack, "torch.stack", lambda s, x: torch.stack((h(s, x), h2(s, x)), 1), "stack", "stack"),
    Case(torch.chunk, "torch.chunk", _pair(lambda t: torch.chunk(t, 2, 1)), "chunk", "getitem_1"),
    Case(torch.split, "torch.split", _pair(lambda t: torch.split(t, [6, 10], 1)[0].split(3, 1)), "split",
         "getitem_1"),
    Case(torch.unbind, "torch.unbind", _unbind(lambda t: torch.unbind(t, 1)), "unbind", "getitem_3"),
    Case(torch.mean, "torch.mean", lambda s, x: torch.mean(h(s, x), 1), "mean", "mean"),
    Case(torch.sum, "torch.sum", lambda s, x: torch.sum(cube(s, x), (0, 2), keepdim=True), "sum", "sum_1"),
    Case(F.dropout, "F.dropout", lambda s, x: F.dropout(h(s, x), 0.5, training=False), "identity", "dropout"),
    Case(F.dropout1d, "F.dropout1d", lambda s, x: F.dropout1d(cube(s, x), 0.5, training=False), "identity",
         "dropout1d"),
    Case(F.dropout2d, "F.dropout2d", lambda s, x: F.dropout2d(img(s, x), 0.5, training=False), "identity",
         "dropout2d"),
]

METHOD_CASES = [
    Case("relu", "Tensor.relu", lambda s, x: h(s, x).relu(), "relu", "relu"),
    Case("tanh", "Tensor.tanh", lambda s, x: h(s, x).tanh(), "tanh", "tanh"),
    Case("sigmoid", "Tensor.sigmoid", lambda s, x: h(s, x).sigmoid(), "sigmoid", "sigmoid"),
    Case("softmax", "Tensor.softmax", lambda s, x: h(s, x).softmax(dim=-1), "softmax", "softmax"),
    Case("log_softmax", "Tensor.log_softmax", lambda s, x: h(s, x).log_softmax(1), "log_softmax",
         "log_softmax"),
    Case("exp", "Tensor.exp", lambda s, x: h(s, x).exp(), "exp", "exp"),
    Case("log", "Tensor.log", lambda s, x: pos(s, x).log(), "log", "log"),
    Case("sqrt", "Tensor.sqrt", lambda s, x: pos(s, x).sqrt(), "sqrt", "sqrt"),
    Case("rsqrt", "Tensor.rsqrt", lambda s, x: pos(s, x).rsqrt(), "rsqrt", "rsqrt"),
    Case("abs", "Tensor.abs", lambda s, x: h(s, x).abs(), "abs", "abs_1"),
    Case("pow", "Tensor.pow", lambda s, x: h(s, x).pow(3), "pow", "pow_1"),
    Case("square", "Tensor.square", lambda s, x: h(s, x).square(), "square", "square"),
    Case("add", "Tensor.add", lambda s, x: h(s, x).add(h2(s, x), alpha=2.0), "add", "add"),
    Case("sub", "Tensor.sub", lambda s, x: h(s, x).sub(h2(s, x)), "sub", "sub"),
    Case("mul", "Tensor.mul", lambda s, x: h(s, x).mul(h2(s, x)), "mul", "mul"),
    Case("div", "Tensor.div", lambda s, x: h(s, x).div(pos(s, x)), "div", "div"),
    Case("neg", "Tensor.neg", lambda s, x: h(s, x).neg(), "neg", "neg"),
    Case("matmul", "Tensor.matmul", lambda s, x: h(s, x).matmul(s.w), "matmul", "matmul"),
    Case("bmm", "Tensor.bmm", lambda s, x: cube(s, x).bmm(cube2(s, x)), "bmm", "bmm"),
    Case("view", "Tensor.view", lambda s, x: h(s, x).view(3, 2, -1), "view", "view"),
    Case("reshape", "Tensor.reshape", lambda s, x: h(s, x).reshape(-1), "reshape", "reshape"),
    Case("permute", "Tensor.permute", lambda s, x: cube(s, x).permute(1, 2, 0), "permute", "permute"),
    Case("transpose", "Tensor.transpose", lambda s, x: cube(s, x).transpose(1, 2), "transpose", "transpose"),
    Case("contiguous", "Tensor.contiguous", lambda s, x: h(s, x).t().contiguous(), "contiguous",
         "contiguous"),
    Case("flatten", "Tensor.flatten", lambda s, x: cube(s, x).flatten(), "flatten", "flatten"),
    Case("unsqueeze", "Tensor.unsqueeze", lambda s, x: h(s, x).unsqueeze(-1), "unsqueeze", "unsqueeze"),
    Case("squeeze", "Tensor.squeeze", lambda s, x: h(s, x).view(3, 1, 16).squeeze(1), "squeeze", "squeeze"),
    Case("t", "Tensor.t", lambda s, x: h(s, x).t(), "t", "t"),
    Case("expand", "Tensor.expand", lambda s, x: h(s, x).view(3, 1, 16).expand(3, 2, 16), "expand", "expand"),
    Case("chunk", "Tensor.chunk", _pair(lambda t: t.chunk(2, dim=1)), "chunk", "getitem_1"),
    Case("split", "Tensor.split", _pair(lambda t: t.split(8, 1)), "split", "getitem_1"),
    Case("unbind", "Tensor.unbind", _unbind(lambda t: t.unbind(1)), "unbind", "getitem_3"),
    Case("mean", "Tensor.mean", lambda s, x: h(s, x).mean(dim=0, keepdim=True), "mean", "mean"),
    Case("sum", "Tensor.sum", lambda s, x: h(s, x).sum(), "sum", "sum_1"),
    Case("view_as", "Tensor.view_as", lambda s, x: cube(s, x).view_as(h2(s, x)), "view_as", "view_as"),
    Case("reshape_as", "Tensor.reshape_as", lambda s, x: cube(s, x).transpose(0, 1).reshape_as(h2(s, x)),
         "reshape_as", "reshape_as"),
    Case("expand_as", "Tensor.expand_as",
         lambda s, x: h(s, x).view(3, 1, 16).expand_as(torch.stack((h2(s, x), h2(s, x)), 1)), "expand_as",
         "expand_as"),
    Case("relu_", "Tensor.relu_", lambda s, x: h(s, x).relu_(), "relu", "relu_"),
    Case("tanh_", "Tensor.tanh_", lambda s, x: h(s, x).tanh_(), "tanh", "tanh_"),
    Case("sigmoid_", "Tensor.sigmoid_", lambda s, x: h(s, x).sigmoid_(), "sigmoid", "sigmoid_"),
    Case("add_", "Tensor.add_", lambda s, x: h(s, x).add_(h2(s, x)), "add", "add_"),
    Case("sub_", "Tensor.sub_", lambda s, x: h(s, x).sub_(h2(s, x), alpha=0.5), "sub", "sub_"),
    Case("mul_", "Tensor.mul_", lambda s, x: h(s, x).mul_(h2(s, x)), "mul", "mul_"),
    Case("div_", "Tensor.div_", lambda s, x: h(s, x).div_(pos(s, x)), "div", "div_"),
    Case("neg_", "Tensor.neg_", lambda s, x: h(s, x).neg_(), "neg", "neg_"),
    Case("exp_", "Tensor.exp_", lambda s, x: h(s, x).exp_(), "exp", "exp_"),
]


def _net(body) -> Net:
    with seeded(0):
        return Net(body, lin=nn.Linear(4, 16), lin2=nn.Linear(4, 16), w=nn.Parameter(torch.randn(16, 16) / 4),
                   gamma=nn.Parameter(torch.rand(16) + 0.5), beta=nn.Parameter(torch.randn(16)),
                   gamma2=nn.Parameter(torch.rand(2) + 0.5), beta2=nn.Parameter(torch.randn(2)),
                   k1=nn.Parameter(torch.randn(3, 2, 3)), k1_bias=nn.Parameter(torch.randn(3)),
                   k2=nn.Parameter(torch.randn(2, 1, 3, 3)), emb=nn.Parameter(torch.randn(10, 4))).to(DT)


def _run(case: Case):
    net = _net(case.body)
    net.register_buffer("rm", torch.linspace(-1, 1, 2, dtype=DT))
    net.register_buffer("rv", torch.tensor([0.5, 2.0], dtype=DT))
    with seeded(2):
        x = torch.randint(0, 10, (3, 5)) if case.integer_input else torch.randn(3, 4, dtype=DT)
    graph = trace_and_compare(net, (x,))
    assert graph[case.vertex].op == case.op
    assert case.vertex in graph.latent


def test_every_registered_function_has_a_case():
    covered = {c.key for c in FUNCTION_CASES if c.key is not None}
    assert covered == set(FUNCTIONS) - FX_UNREACHABLE


def test_every_registered_method_has_a_case():
    assert {c.key for c in METHOD_CASES} == set(METHODS)


@pytest.mark.parametrize("case", FUNCTION_CASES, ids=[c.id for c in FUNCTION_CASES])
def test_function_gradients_match_autograd(case: Case):
    _run(case)


@pytest.mark.parametrize("case", METHOD_CASES, ids=[c.id for c in METHOD_CASES])
def test_method_gradients_match_autograd(case: Case):
    _run(case)
