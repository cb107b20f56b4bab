"""The op registry: which torch callables pcsim accepts, under which op name.

Every op's prediction is a plain torch call (the vertex stores the callable and its argument
template); its local vector-Jacobian product is taken on that single call (`ops/local.py`),
never through the graph. Modules are converted to their functional form by `ops/modules.py`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pcsim.ops.expansions import attention_softmax


@dataclass(frozen=True)
class OpDef:
    """One supported operation: its name, its family (for docs and backends), and what it does."""

    name: str
    family: str
    doc: str = ""


def identity(x):
    """Dropout at inference, and identity vertices: the value passes unchanged."""
    return x


_FAMILIES = {
    "parametric": ["linear", "conv1d", "conv2d", "batch_norm", "layer_norm", "embedding"],
    "pooling": ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"],
    "activation": ["relu", "leaky_relu", "tanh", "sigmoid", "gelu", "silu", "softmax", "log_softmax",
                   "attention_softmax", "elu", "softplus", "exp", "log", "sqrt", "rsqrt", "abs", "pow", "square"],
    "arithmetic": ["add", "sub", "mul", "div", "neg", "matmul", "bmm"],
    "shape": ["view", "reshape", "permute", "transpose", "contiguous", "flatten", "unsqueeze", "squeeze",
              "t", "expand", "getitem", "cat", "stack", "chunk", "split", "unbind", "identity",
              "view_as", "reshape_as", "expand_as"],
    "reduction": ["mean", "sum"],
    "fused layer (trace(fused=True))": ["rnn", "lstm", "gru"],
}
OPS: dict[str, OpDef] = {n: OpDef(n, fam) for fam, names in _FAMILIES.items() for n in names}

# Functions (call_function targets) -> op name.
FUNCTIONS: dict[object, str] = {
    F.linear: "linear", F.conv1d: "conv1d", F.conv2d: "conv2d", F.batch_norm: "batch_norm",
    F.layer_norm: "layer_norm", F.embedding: "embedding",
    F.max_pool2d: "max_pool2d", F.avg_pool2d: "avg_pool2d", F.adaptive_avg_pool2d: "adaptive_avg_pool2d",
    torch.relu: "relu", F.relu: "relu", F.leaky_relu: "leaky_relu", torch.tanh: "tanh", F.tanh: "tanh",
    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.gelu: "gelu", F.silu: "silu",
    torch.softmax: "softmax", F.softmax: "softmax", torch.log_softmax: "log_softmax",
    F.log_softmax: "log_softmax", attention_softmax: "attention_softmax", F.elu: "elu", F.softplus: "softplus",
    torch.exp: "exp", torch.log: "log", torch.sqrt: "sqrt", torch.rsqrt: "rsqrt", torch.abs: "abs",
    torch.pow: "pow", operator.pow: "pow", torch.square: "square",
    operator.add: "add", torch.add: "add", operator.iadd: "add",
    operator.sub: "sub", torch.sub: "sub", operator.isub: "sub",
    operator.mul: "mul", torch.mul: "mul", operator.imul: "mul",
    operator.truediv: "div", torch.div: "div", operator.itruediv: "div",
    operator.neg: "neg", torch.neg: "neg",
    operator.matmul: "matmul", torch.matmul: "matmul", torch.bmm: "bmm",
    torch.reshape: "reshape", torch.permute: "permute", torch.transpose: "transpose",
    torch.flatten: "flatten", torch.unsqueeze: "unsqueeze", torch.squeeze: "squeeze", torch.t: "t",
    operator.getitem: "getitem", torch.cat: "cat", torch.concat: "cat", torch.stack: "stack",
    torch.chunk: "chunk", torch.split: "split", torch.unbind: "unbind",
    torch.mean: "mean", torch.sum: "sum",
    F.dropout: "identity", F.dropout1d: "identity", F.dropout2d: "identity",
}
# Functions with an `inplace` argument (-> its position), which pcsim drops: it never writes into a
# population; the tracer instead makes later reads of the argument see the call's result.
INPLACE_KWARG = {F.relu: 1, F.leaky_relu: 2, F.elu: 2, F.dropout: 3, F.dropout1d: 3, F.dropout2d: 3}
# Dropout acts as the identity: PC and BP must see one deterministic function.
DROPOUT = {F.dropout, F.dropout1d, F.dropout2d}

# Tensor methods (call_method targets) -> op name. In-place variants map to the out-of-place op.
METHODS: dict[str, str] = {
    "relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "softmax": "softmax",
    "log_softmax": "log_softmax", "exp": "exp", "log": "log", "sqrt": "sqrt", "rsqrt": "rsqrt",
    "abs": "abs", "pow": "pow", "square": "square",
    "add": "add", "sub": "sub", "mul": "mul", "div": "div", "neg": "neg", "matmul": "matmul",
    "bmm": "bmm", "view": "view", "reshape": "reshape", "permute": "permute",
    "transpose": "transpose", "contiguous": "contiguous", "flatten": "flatten",
    "unsqueeze": "unsqueeze", "squeeze": "squeeze", "t": "t", "expand": "expand",
    "chunk": "chunk", "split": "split", "unbind": "unbind", "mean": "mean", "sum": "sum",
    "view_as": "view_as", "reshape_as": "reshape_as", "expand_as": "expand_as",
    "relu_": "relu", "tanh_": "tanh", "sigmoid_": "sigmoid", "add_": "add", "sub_": "sub",
    "mul_": "mul", "div_": "div", "neg_": "neg", "exp_": "exp",
}

# Methods and functions that never produce a population: they read shapes, and are folded to
# constants at trace time (the graph is specialised to the example inputs' shapes).
SHAPE_QUERIES = {"size", "dim", "numel"}
# Calls whose result depends only on the shape and dtype of their argument: folded to constants.
SHAPE_ONLY_FUNCTIONS = {torch.zeros_like, torch.ones_like, torch.full_like}
SHAPE_ONLY_METHODS = {"new_zeros", "new_ones", "new_full"}


def method_function(method: str):
    """The out-of-place callable for a tensor method name (e.g. 'relu_' -> Tensor.relu)."""
    return getattr(torch.Tensor, method.rstrip("_") if method.endswith("_") else method)


def supported_summary() -> str:
    """A readable list of everything pcsim accepts, used in UnsupportedOpError messages."""
    from pcsim.ops.modules import MODULE_CONVERTERS, MODULE_EXPANSIONS

    modules = sorted({t.__name__ for t in MODULE_CONVERTERS} | {t.__name__ for t in MODULE_EXPANSIONS})
    lines = [f"  modules: {', '.join(modules)}"]
    for fam, names in _FAMILIES.items():
        lines.append(f"  {fam}: {', '.join(names)}")
    return "\n".join(lines)
