"""trace() of each torch function, tensor method and operator form, as torch.export captures it.

Each case is a tiny module combining the form with Linears (so there are parameters and latent
inputs); pcsim.bp on the captured graph must equal autograd on the module, and the graph must hold
the core ATen op(s) the form is captured as, as latent vertices. In-place and augmented forms
(`relu_`, `y += z`) are functionalised by the capture: they appear as their out-of-place op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.graph.helpers import DT, Net, seeded, trace_and_compare

# Dropped from the fx version: the coverage tests against the fx registry (`FUNCTIONS`, `METHODS`, and
# `operator.iadd` & co., which fx could never reach): torch.export captures any op, so there is no list to cover.


@dataclass(frozen=True)
class Case:
    id: str
    body: Callable
    ops: str  # the ATen op(s) the form is captured as, space-separated; "" for a form that computes nothing
    param: str | None = None  # a parametric form: the parameter its vertex reads (that vertex's op is `ops`)
    integer_input: bool = False
    # a module whose output the form reads for its shape alone: no vertex reads its parameters, which trace()
    # warns about (their updates are zero, as autograd's gradients are)
    shape_only: str | None = None


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


# What a form that computes nothing may leave in the graph: the Linears, their views, a copy.
PLUMBING = frozenset({"linear", "view", "clone"})
BN_EVAL, BN_BATCH = "_native_batch_norm_legit_no_training", "_native_batch_norm_legit"

FUNCTION_CASES = [
    Case("F.linear", lambda s, x: F.linear(torch.tanh(h(s, x)), s.w, s.gamma), "linear", param="w"),
    Case("F.conv1d", lambda s, x: F.conv1d(h(s, x).view(3, 2, 8), s.k1, s.k1_bias, padding=1), "conv1d",
         param="k1"),
    Case("F.conv2d", lambda s, x: F.conv2d(img(s, x), s.k2, None, 1, 1), "conv2d", param="k2"),
    Case("F.batch_norm-eval",
         lambda s, x: F.batch_norm(h(s, x).view(3, 2, 8), s.rm, s.rv, s.gamma2, s.beta2, training=False),
         BN_EVAL, param="gamma2"),
    Case("F.batch_norm-train",  # no running statistics: normalised with the batch's own
         lambda s, x: F.batch_norm(h(s, x).view(3, 2, 8), None, None, s.gamma2, s.beta2, training=True),
         BN_BATCH, param="gamma2"),
    Case("F.layer_norm", lambda s, x: F.layer_norm(h(s, x), (16,), s.gamma, s.beta), "native_layer_norm",
         param="gamma"),
    Case("F.embedding", lambda s, i: s.lin(F.embedding(i, s.emb)), "embedding", param="emb", integer_input=True),
    Case("F.max_pool2d", lambda s, x: F.max_pool2d(img(s, x), 2), "max_pool2d_with_indices"),
    Case("F.avg_pool2d", lambda s, x: F.avg_pool2d(img(s, x), 2, 1), "avg_pool2d"),
    Case("F.adaptive_avg_pool2d", lambda s, x: F.adaptive_avg_pool2d(img(s, x), (2, 1)), "_adaptive_avg_pool2d"),
    Case("torch.relu", lambda s, x: torch.relu(h(s, x)), "relu"),
    Case("F.relu", lambda s, x: F.relu(h(s, x)), "relu"),
    Case("F.relu-inplace", lambda s, x: F.relu(h(s, x), inplace=True) * 2.0, "relu mul"),
    Case("F.relu-inplace-positional", lambda s, x: F.relu(h(s, x), True) * 2.0, "relu mul"),
    Case("F.leaky_relu", lambda s, x: F.leaky_relu(h(s, x), 0.2), "leaky_relu"),
    Case("F.leaky_relu-inplace", lambda s, x: F.leaky_relu(h(s, x), 0.2, inplace=True) - 1.0, "leaky_relu sub"),
    Case("torch.tanh", lambda s, x: torch.tanh(h(s, x)), "tanh"),
    Case("F.tanh", lambda s, x: F.tanh(h(s, x)), "tanh"),
    Case("torch.sigmoid", lambda s, x: torch.sigmoid(h(s, x)), "sigmoid"),
    Case("F.sigmoid", lambda s, x: F.sigmoid(h(s, x)), "sigmoid"),
    Case("F.gelu", lambda s, x: F.gelu(h(s, x)), "gelu"),
    Case("F.gelu-tanh", lambda s, x: F.gelu(h(s, x), approximate="tanh"), "gelu"),
    Case("F.silu", lambda s, x: F.silu(h(s, x)), "sigmoid mul"),  # core ATen: x * sigmoid(x)
    Case("torch.softmax", lambda s, x: torch.softmax(h(s, x), 1), "_softmax"),
    Case("F.softmax", lambda s, x: F.softmax(cube(s, x), dim=-1), "_softmax"),
    # dropped: `expansions.attention_softmax`, the fx tracer's own wrapper for MultiheadAttention's masks (no
    # longer exists: export captures the masked softmax as the module runs it)
    Case("torch.log_softmax", lambda s, x: torch.log_softmax(h(s, x), 1), "_log_softmax"),
    Case("F.log_softmax", lambda s, x: F.log_softmax(h(s, x), dim=1), "_log_softmax"),
    Case("F.elu", lambda s, x: F.elu(h(s, x), alpha=0.5), "elu"),
    Case("F.elu-inplace", lambda s, x: F.elu(h(s, x), 0.5, True) + 1.0, "elu add"),
    Case("F.softplus", lambda s, x: F.softplus(h(s, x), beta=2.0, threshold=1.0),
         "exp log1p where"),  # core ATen: where(beta x > threshold, x, log1p(exp(beta x)) / beta)
    Case("torch.exp", lambda s, x: torch.exp(h(s, x)), "exp"),
    Case("torch.log", lambda s, x: torch.log(pos(s, x)), "log"),
    Case("torch.sqrt", lambda s, x: torch.sqrt(pos(s, x)), "sqrt"),
    Case("torch.rsqrt", lambda s, x: torch.rsqrt(pos(s, x)), "rsqrt"),
    Case("torch.abs", lambda s, x: torch.abs(h(s, x)), "abs"),
    Case("torch.pow", lambda s, x: torch.pow(h(s, x), 3), "pow"),
    Case("operator.pow", lambda s, x: h(s, x) ** 2, "pow"),
    Case("torch.square", lambda s, x: torch.square(h(s, x)), "pow"),
    Case("operator.add", lambda s, x: h(s, x) + h2(s, x), "add"),
    Case("operator.add-scalar", lambda s, x: 1.5 + h(s, x), "add"),
    Case("torch.add", lambda s, x: torch.add(h(s, x), h2(s, x), alpha=0.5), "add"),
    Case("+=", _iadd, "add"),
    Case("operator.sub", lambda s, x: h(s, x) - h2(s, x), "sub"),
    Case("operator.rsub", lambda s, x: 1.0 - h(s, x), "sub"),
    Case("torch.sub", lambda s, x: torch.sub(h(s, x), h2(s, x)), "sub"),
    Case("-=", _isub, "sub"),
    Case("operator.mul", lambda s, x: h(s, x) * h2(s, x), "mul"),
    Case("torch.mul", lambda s, x: torch.mul(h(s, x), h2(s, x)), "mul"),
    Case("*=", _imul, "mul"),
    Case("operator.truediv", lambda s, x: h(s, x) / pos(s, x), "div"),
    Case("operator.rtruediv", lambda s, x: 2.0 / pos(s, x), "reciprocal"),  # core ATen: 2.0 * reciprocal(y)
    Case("torch.div", lambda s, x: torch.div(h(s, x), pos(s, x)), "div"),
    Case("/=", _idiv, "div"),
    Case("operator.neg", lambda s, x: -h(s, x), "neg"),
    Case("torch.neg", lambda s, x: torch.neg(h(s, x)), "neg"),
    Case("operator.matmul", lambda s, x: h(s, x) @ s.w, "mm", param="w"),
    Case("operator.matmul-latent", lambda s, x: cube(s, x) @ cube2(s, x), "bmm"),
    Case("torch.matmul", lambda s, x: torch.matmul(h(s, x), s.w), "mm", param="w"),
    Case("torch.bmm", lambda s, x: torch.bmm(cube(s, x), cube2(s, x)), "bmm"),
    Case("torch.reshape", lambda s, x: torch.reshape(h(s, x), (3, 2, 8)), "view"),
    Case("torch.permute", lambda s, x: torch.permute(cube(s, x), (2, 0, 1)), "permute"),
    Case("torch.transpose", lambda s, x: torch.transpose(cube(s, x), 0, 2), "permute"),
    Case("torch.flatten", lambda s, x: torch.flatten(cube(s, x), 1), "view"),
    Case("torch.unsqueeze", lambda s, x: torch.unsqueeze(h(s, x), 1), "unsqueeze"),
    Case("torch.squeeze", lambda s, x: torch.squeeze(h(s, x).view(3, 1, 16), 1), "squeeze"),
    Case("torch.t", lambda s, x: torch.t(h(s, x)), "permute"),
    Case("operator.getitem", lambda s, x: h(s, x)[:, 2:9], "slice"),
    Case("operator.getitem-none-int", lambda s, x: cube(s, x)[:, None, 1], "unsqueeze select"),
    Case("torch.cat", lambda s, x: torch.cat((h(s, x), h2(s, x)), 1), "cat"),
    Case("torch.concat", lambda s, x: torch.concat([h(s, x), h2(s, x)], dim=0), "cat"),
    Case("torch.stack", lambda s, x: torch.stack((h(s, x), h2(s, x)), 1), "cat"),
    Case("torch.chunk", _pair(lambda t: torch.chunk(t, 2, 1)), "split_with_sizes"),
    Case("torch.split", _pair(lambda t: torch.split(t, [6, 10], 1)[0].split(3, 1)), "split_with_sizes"),
    Case("torch.unbind", _unbind(lambda t: torch.unbind(t, 1)), "slice squeeze"),
    Case("torch.mean", lambda s, x: torch.mean(h(s, x), 1), "mean"),
    Case("torch.sum", lambda s, x: torch.sum(cube(s, x), (0, 2), keepdim=True), "sum"),
    # dropout in eval mode computes nothing
    Case("F.dropout", lambda s, x: F.dropout(h(s, x), 0.5, training=False), ""),
    Case("F.dropout1d", lambda s, x: F.dropout1d(cube(s, x), 0.5, training=False), ""),
    Case("F.dropout2d", lambda s, x: F.dropout2d(img(s, x), 0.5, training=False), ""),
]

METHOD_CASES = [
    Case("Tensor.relu", lambda s, x: h(s, x).relu(), "relu"),
    Case("Tensor.tanh", lambda s, x: h(s, x).tanh(), "tanh"),
    Case("Tensor.sigmoid", lambda s, x: h(s, x).sigmoid(), "sigmoid"),
    Case("Tensor.softmax", lambda s, x: h(s, x).softmax(dim=-1), "_softmax"),
    Case("Tensor.log_softmax", lambda s, x: h(s, x).log_softmax(1), "_log_softmax"),
    Case("Tensor.exp", lambda s, x: h(s, x).exp(), "exp"),
    Case("Tensor.log", lambda s, x: pos(s, x).log(), "log"),
    Case("Tensor.sqrt", lambda s, x: pos(s, x).sqrt(), "sqrt"),
    Case("Tensor.rsqrt", lambda s, x: pos(s, x).rsqrt(), "rsqrt"),
    Case("Tensor.abs", lambda s, x: h(s, x).abs(), "abs"),
    Case("Tensor.pow", lambda s, x: h(s, x).pow(3), "pow"),
    Case("Tensor.square", lambda s, x: h(s, x).square(), "pow"),
    Case("Tensor.add", lambda s, x: h(s, x).add(h2(s, x), alpha=2.0), "add"),
    Case("Tensor.sub", lambda s, x: h(s, x).sub(h2(s, x)), "sub"),
    Case("Tensor.mul", lambda s, x: h(s, x).mul(h2(s, x)), "mul"),
    Case("Tensor.div", lambda s, x: h(s, x).div(pos(s, x)), "div"),
    Case("Tensor.neg", lambda s, x: h(s, x).neg(), "neg"),
    Case("Tensor.matmul", lambda s, x: h(s, x).matmul(s.w), "mm", param="w"),
    Case("Tensor.bmm", lambda s, x: cube(s, x).bmm(cube2(s, x)), "bmm"),
    Case("Tensor.view", lambda s, x: h(s, x).view(3, 2, -1), "view"),
    Case("Tensor.reshape", lambda s, x: h(s, x).reshape(-1), "view"),
    Case("Tensor.permute", lambda s, x: cube(s, x).permute(1, 2, 0), "permute"),
    Case("Tensor.transpose", lambda s, x: cube(s, x).transpose(1, 2), "permute"),
    Case("Tensor.contiguous", lambda s, x: h(s, x).t().contiguous(), "permute clone"),
    Case("Tensor.flatten", lambda s, x: cube(s, x).flatten(), "view"),
    Case("Tensor.unsqueeze", lambda s, x: h(s, x).unsqueeze(-1), "unsqueeze"),
    Case("Tensor.squeeze", lambda s, x: h(s, x).view(3, 1, 16).squeeze(1), "squeeze"),
    Case("Tensor.t", lambda s, x: h(s, x).t(), "permute"),
    Case("Tensor.expand", lambda s, x: h(s, x).view(3, 1, 16).expand(3, 2, 16), "expand"),
    Case("Tensor.chunk", _pair(lambda t: t.chunk(2, dim=1)), "split_with_sizes"),
    Case("Tensor.split", _pair(lambda t: t.split(8, 1)), "split_with_sizes"),
    Case("Tensor.unbind", _unbind(lambda t: t.unbind(1)), "slice squeeze"),
    Case("Tensor.mean", lambda s, x: h(s, x).mean(dim=0, keepdim=True), "mean"),
    Case("Tensor.sum", lambda s, x: h(s, x).sum(), "sum"),
    Case("Tensor.view_as", lambda s, x: cube(s, x).view_as(h2(s, x)), "view", shape_only="lin2"),
    Case("Tensor.reshape_as", lambda s, x: cube(s, x).transpose(0, 1).reshape_as(h2(s, x)), "permute clone view",
         shape_only="lin2"),
    Case("Tensor.expand_as",
         lambda s, x: h(s, x).view(3, 1, 16).expand_as(torch.stack((h2(s, x), h2(s, x)), 1)), "expand",
         shape_only="lin2"),
    Case("Tensor.relu_", lambda s, x: h(s, x).relu_(), "relu"),
    Case("Tensor.tanh_", lambda s, x: h(s, x).tanh_(), "tanh"),
    Case("Tensor.sigmoid_", lambda s, x: h(s, x).sigmoid_(), "sigmoid"),
    Case("Tensor.add_", lambda s, x: h(s, x).add_(h2(s, x)), "add"),
    Case("Tensor.sub_", lambda s, x: h(s, x).sub_(h2(s, x), alpha=0.5), "sub"),
    Case("Tensor.mul_", lambda s, x: h(s, x).mul_(h2(s, x)), "mul"),
    Case("Tensor.div_", lambda s, x: h(s, x).div_(pos(s, x)), "div"),
    Case("Tensor.neg_", lambda s, x: h(s, x).neg_(), "neg"),
    Case("Tensor.exp_", lambda s, x: h(s, x).exp_(), "exp"),
]


def _attributes() -> dict[str, nn.Module | torch.Tensor]:
    """Everything a body may read as `s.<name>`, made in one order under one seed (so a case's values do
    not depend on what the others read); `rm` and `rv` are running statistics, registered as buffers."""
    with seeded(0):
        return dict(lin=nn.Linear(4, 16), lin2=nn.Linear(4, 16), w=nn.Parameter(torch.randn(16, 16) / 4),
                    gamma=nn.Parameter(torch.rand(16) + 0.5), beta=nn.Parameter(torch.randn(16)),
                    gamma2=nn.Parameter(torch.rand(2) + 0.5), beta2=nn.Parameter(torch.randn(2)),
                    k1=nn.Parameter(torch.randn(3, 2, 3)), k1_bias=nn.Parameter(torch.randn(3)),
                    k2=nn.Parameter(torch.randn(2, 1, 3, 3)), emb=nn.Parameter(torch.randn(10, 4)),
                    rm=torch.linspace(-1, 1, 2), rv=torch.tensor([0.5, 2.0]))


class _Reads:
    """Stands in for the module while a body runs once, noting which attributes it reads."""

    def __init__(self, attributes: dict):
        self.attributes, self.read = attributes, set()

    def __getattr__(self, name: str):
        self.read.add(name)
        return self.attributes[name]


def _net(body, x: torch.Tensor) -> Net:
    """The case's module, holding only what its body reads: parameters read by no vertex would only slow
    the capture down (and make it warn)."""
    reads = _Reads(_attributes())
    with torch.no_grad():
        body(reads, x)
    net = Net(body)
    for name, value in _attributes().items():  # fresh, unmodified by the run above
        if name not in reads.read:
            continue
        if isinstance(value, nn.Module | nn.Parameter):
            setattr(net, name, value)
        else:
            net.register_buffer(name, value)
    return net.to(DT)


def _run(case: Case):
    with seeded(2):
        x = torch.randint(0, 10, (3, 5)) if case.integer_input else torch.randn(3, 4, dtype=DT)
    net = _net(case.body, x)
    if case.shape_only is None:
        graph = trace_and_compare(net, (x,))
    else:
        with pytest.warns(UserWarning, match=rf"{case.shape_only}\.weight, {case.shape_only}\.bias are read by no"):
            graph = trace_and_compare(net, (x,))
    ops = {graph[n].op for n in graph.latent}
    want = set(case.ops.split())
    assert want <= ops, f"{case.id}: latent ops {sorted(ops)} lack {sorted(want - ops)}"
    if not want:
        assert ops <= PLUMBING, f"{case.id} should compute nothing, but the graph holds {sorted(ops - PLUMBING)}"
    if case.param is not None:
        assert {graph[v].op for v in graph.users[case.param]} == want
    assert not any(op.endswith("_") for op in ops), f"an in-place op is a population: {sorted(ops)}"


@pytest.mark.parametrize("case", FUNCTION_CASES, ids=[c.id for c in FUNCTION_CASES])
def test_function_gradients_match_autograd(case: Case):
    _run(case)


@pytest.mark.parametrize("case", METHOD_CASES, ids=[c.id for c in METHOD_CASES])
def test_method_gradients_match_autograd(case: Case):
    _run(case)
