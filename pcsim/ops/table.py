"""The op table: one entry per ATen op, holding what every consumer of an op needs to know (`OpEntry`).

A captured vertex calls one ATen op (`torch.ops.aten.<name>.<overload>`). Its prediction is that call; its
local VJP is autograd on that single call, which needs nothing per op, so **every differentiable ATen op
works** without an entry: an entry adds what is known beyond that. Adding an op is one `OpEntry` in `ENTRIES`.
Integer and boolean results are never populations (`pcsim.capture` makes them clamped constants or refuses
them), so non-differentiable ops need no entry either: they only ever see inputs and constants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pcsim.graph.level import identity  # identity vertices' call; dropout runs as it too

aten = torch.ops.aten


def identity_and_mask(x, *_):
    """`native_dropout` as pcsim runs it: the value unchanged, and a mask that keeps everything."""
    return x, torch.ones_like(x, dtype=torch.bool)


def batch_norm_eval(input, weight, bias, running_mean, running_var, momentum, eps):
    """`_native_batch_norm_legit_no_training` through `F.batch_norm(training=False)`: the same values, and
    the kernel pair backprop itself runs on an eval-mode BatchNorm, faster than the functional op's
    (benchmarks/results/design_measurements.md). The saved statistics are not populations: left empty."""
    out = torch.nn.functional.batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    return out, out.new_empty(0), out.new_empty(0)


def stop_gradient(x):
    """`pcsim::stop_gradient` (a `.detach()` or a `torch.no_grad()` block's result) as a vertex runs it: the
    value, with no derivative, as autograd has it."""
    return x.detach()


def copy_into(self, src, non_blocking=False):
    """`aten.copy` (what an assignment `h[:, :3] = y` is captured as) as a vertex runs it: torch implements no
    derivative for the functional op, but does for the in-place `copy_` it stands for. The result has `self`'s
    shape, dtype and layout and `src`'s values; its derivative reaches `src` alone."""
    return torch.empty_like(self).copy_(src, non_blocking)


def straight_through(source, value):
    """`pcsim::straight_through` (a tensor changed in place under `torch.no_grad()`) as a vertex runs it: `value`
    exactly, with the derivative of the identity on `source` (`source - source.detach()` is an exact zero)."""
    return value.detach() + (source - source.detach())


def reshape_view(x, size):
    """`aten.view` and `_unsafe_view` as a vertex runs them: a reshape, which is that very view wherever one
    exists. The captured view holds for the example's strides only; on inputs laid out otherwise (channels_last
    where a contiguous batch was traced) it stopped in torch ('view size is not compatible with input tensor's
    size and stride'). `view(dtype)` reinterprets bits: run as it is."""
    return x.view(size) if isinstance(size, torch.dtype) else x.reshape(size)


@dataclass(frozen=True)
class OpEntry:
    """What pcsim knows about one ATen op (by name, all overloads)."""

    name: str
    family: str = "other"
    # output element i depends on input element i only (torch's `pointwise` tag where the op has no entry)
    elementwise: bool = False
    linear: bool = False  # linear in its population arguments (a view, a sum, a concatenation)
    selection: bool = False  # its value is a part of one parent (a view into it): its feedback is placed, not pulled
    # the ATen kernel giving `J^T cot` from the op's *output* (tanh, sigmoid, relu), which the fast paths run
    backward: tuple[Callable[..., Any], tuple] | None = None
    locality: str = ""  # the form of its Hebbian term, for the plasticity analysis
    # its rendering in `pcsim.backends.brian2.ops`, where one exists: `linear`, `conv2d` (every convolution),
    # `pooling`, `activation`, `affine`, `index` (a wiring of neuron indices), `linear_map` (a fixed linear map read
    # from the op's Jacobian), `embedding`; `circuit`: helper neurons and staged sums (`brian2.circuits`)
    brian2: str | None = None
    replace: Callable[..., Any] | None = None  # a call pcsim runs instead of the captured one (dropout: identity)
    # what the op makes of a structural zero argument (a zero initial state; `pcsim.capture.zeros`): `absorb` (the
    # result is zero: a product), `drop` (the argument can be left out: a sum), `bias` (the result is the bias)
    zero: str = ""
    # a torch function taking every overload's arguments, run instead of the ATen overload (the same kernel, a
    # third less Python per call on the hot ops)
    call: Callable[..., Any] | None = None
    # a copy or view that is the identity where its result has its input's shape, strides and dtype (an eval-mode
    # dropout is captured as `clone`): the capture reads the input instead
    passthrough: bool = False


def _entries(family: str, names: Iterable[str], **flags) -> list[OpEntry]:
    return [OpEntry(n, family, **flags) for n in names]


_HEBB = "post error x pre activity"
_CONV = f"{_HEBB}, correlated over kernel positions (shared kernel)"
_NORM = "post error x normalised pre activity"
ENTRIES: tuple[OpEntry, ...] = (
    # parametric: the Hebbian term is an outer product of the post-synaptic error and the input
    OpEntry("linear", "parametric", locality=f"{_HEBB} (outer product; bias: post error)", brian2="linear",
            zero="bias", call=torch.nn.functional.linear),
    *_entries("parametric", ["conv1d", "convolution", "conv2d"], brian2="conv2d", locality=_CONV),
    OpEntry("conv_transpose2d", "parametric", locality=_CONV),
    OpEntry("embedding", "parametric", locality="post error scattered to the active token's row",
            brian2="embedding"),
    # the kernel torch's decomposition of embedding_bag picks for a weight it sees without gradient (nn.EmbeddingBag's
    # max_norm renormalises it detached first): no derivative; `_embedding_bag` computes the same, with one
    OpEntry("_embedding_bag_forward_only", "parametric", replace=aten._embedding_bag.default),
    OpEntry("_native_batch_norm_legit_no_training", "normalisation", replace=batch_norm_eval, locality=_NORM,
            brian2="circuit"),
    *_entries("normalisation", ["_native_batch_norm_legit", "_native_batch_norm_legit_functional",
                                "native_batch_norm", "native_layer_norm", "native_group_norm"],
              locality=_NORM, brian2="circuit"),
    # activations whose derivative is a function of their output
    OpEntry("tanh", "activation", elementwise=True, backward=(aten.tanh_backward.default, ()), brian2="activation",
            call=torch.tanh),
    OpEntry("sigmoid", "activation", elementwise=True, backward=(aten.sigmoid_backward.default, ()),
            brian2="activation", call=torch.sigmoid),
    OpEntry("relu", "activation", elementwise=True, backward=(aten.threshold_backward.default, (0,)),
            brian2="activation", call=torch.relu),
    *_entries("activation", ["leaky_relu", "silu", "elu", "softplus", "exp", "gelu", "hardtanh", "log", "sqrt",
                             "rsqrt", "abs", "pow", "square", "reciprocal", "erf", "sin", "cos", "clamp"],
              elementwise=True, brian2="activation"),
    # kept whole: torch's hardsigmoid backward returns 1/6 rounded to float32 even in float64, so the
    # decomposition (clamp, div) would be exact where backprop is not, and differ from it by 3e-8
    *_entries("activation", ["hardswish", "hardsigmoid"], elementwise=True),
    *_entries("activation", ["_softmax", "_log_softmax", "_safe_softmax"], brian2="circuit"),
    # arithmetic: affine in the populations when the other operand is a constant
    OpEntry("add", "arithmetic", elementwise=True, linear=True, brian2="affine", zero="drop", call=torch.add),
    OpEntry("sub", "arithmetic", elementwise=True, linear=True, brian2="affine", zero="drop", call=torch.sub),
    OpEntry("mul", "arithmetic", elementwise=True, brian2="affine", zero="absorb", call=torch.mul),
    OpEntry("div", "arithmetic", elementwise=True, brian2="affine"),
    OpEntry("neg", "arithmetic", elementwise=True, brian2="affine", call=torch.neg),
    OpEntry("mm", "arithmetic", zero="absorb", call=torch.mm, brian2="circuit"),
    OpEntry("bmm", "arithmetic", zero="absorb", call=torch.bmm, brian2="circuit"),
    OpEntry("matmul", "arithmetic", zero="absorb", brian2="circuit"),
    OpEntry("addmm", "arithmetic", brian2="addmm"),  # Brian2: of a parameter matrix, a linear layer
    OpEntry("baddbmm", "arithmetic"),
    # shape: linear maps that move values without arithmetic (in Brian2, a wiring: an index map)
    *_entries("shape", ["view", "_unsafe_view"], linear=True, brian2="index", passthrough=True, call=reshape_view),
    *_entries("shape", ["reshape", "expand", "clone", "alias", "_to_copy", "contiguous"],
              linear=True, brian2="index", passthrough=True),
    *_entries("shape", ["permute", "transpose", "squeeze", "unsqueeze", "t", "flatten", "cat", "stack",
                        "constant_pad_nd"], linear=True, brian2="index"),
    *_entries("shape", ["slice", "select", "split", "unbind", "chunk", "narrow", "index"],
              linear=True, selection=True, brian2="index"),
    OpEntry("split_with_sizes", "shape", linear=True, selection=True, brian2="index", call=torch.split_with_sizes),
    OpEntry("identity", "shape", elementwise=True, linear=True, brian2="index"),
    # dropout runs as the identity, as in eval mode: PC and BP must see one deterministic function
    OpEntry("dropout", "shape", elementwise=True, linear=True, replace=identity, brian2="index"),
    OpEntry("native_dropout", "shape", elementwise=True, linear=True, replace=identity_and_mask, brian2="index"),
    OpEntry("copy", "shape", linear=True, replace=copy_into),
    # `.detach()`, `torch.no_grad()` (pcsim.capture.stop_gradient): the value, and a zero Jacobian
    OpEntry("stop_gradient", "shape", elementwise=True, replace=stop_gradient),
    OpEntry("straight_through", "shape", elementwise=True, linear=True, replace=straight_through),
    # reductions and pooling
    *_entries("reduction", ["sum", "mean"], linear=True, brian2="linear_map"),
    *_entries("pooling", ["avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool2d"], linear=True,
              brian2="pooling"),
    *_entries("pooling", ["max_pool2d_with_indices", "max_pool2d"], brian2="circuit"),
    # recurrent layers kept whole by trace(fused=...): one vertex per layer, torch's fused kernel
    *_entries("fused layer (trace(fused=True))", ["lstm", "gru", "rnn_tanh", "rnn_relu"],
              locality="through the fused layer's kernel (no per-gate populations)"),
)
OPS: dict[str, OpEntry] = {e.name: e for e in ENTRIES}

# Composite ops pcsim keeps whole rather than decomposing: one vertex whose forward and backward
# are each one kernel, as in backprop (`linear` would otherwise be a weight transpose and an addmm).
KEPT_WHOLE = (aten.linear.default, aten.conv1d.default, aten.conv2d.default, aten.dropout.default,
              aten._safe_softmax.default, aten.hardswish.default, aten.hardsigmoid.default,
              # torch's derivative is defined where the decomposition's is 0/0 (NaN from every rule where backprop
              # is finite): std at a constant row (var -> sqrt at 0), sinc at 0 (sin(pi x) / (pi x))
              aten.std.correction, aten.std.dim, aten.std_mean.correction, aten.sinc.default,
              # decomposed, each raises through an effectful check (`_linalg_check_errors` under a token) that a
              # graph of populations cannot hold; whole, they raise on a singular matrix as in torch
              aten.linalg_inv.default, aten.inverse.default, aten.linalg_solve.default,
              aten.linalg_cholesky.default, aten.linalg_lu_factor.default, aten.linalg_ldl_factor.default,
              aten.linalg_matrix_power.default, aten.linalg_tensorinv.default, aten.linalg_tensorsolve.default)

# trace(fused=...): the recurrent layers kept whole, and the ATen kernels their forward calls
FUSED_OPS: dict[type[nn.Module], tuple] = {
    nn.RNN: (aten.rnn_tanh.input, aten.rnn_tanh.data, aten.rnn_relu.input, aten.rnn_relu.data),
    nn.LSTM: (aten.lstm.input, aten.lstm.data), nn.GRU: (aten.gru.input, aten.gru.data)}
RECURRENT_LAYERS: tuple[type[nn.Module], ...] = tuple(FUSED_OPS)


DROPOUTS = ("dropout", "native_dropout")  # the random ops pcsim runs as the identity (entries above)

# Ops that draw random numbers. pcsim runs the forward pass many times (each vertex's prediction at every step)
# and captures one program, so a draw is either frozen at the trace or drawn anew at every evaluation: neither
# is the module autograd runs. Dropout is the exception: it runs as the identity (its entries above).
RANDOM_OPS = frozenset({
    "bernoulli", "cauchy", "exponential", "geometric", "log_normal", "multinomial", "normal", "poisson", "rand",
    "rand_like", "randint", "randint_like", "randn", "randn_like", "randperm", "uniform", "_standard_gamma",
    "rrelu_with_noise", "rrelu_with_noise_functional", "alpha_dropout", "feature_alpha_dropout",
    "feature_dropout", "_fused_dropout"})


def draws_random(fn: Any, args: tuple = (), kwargs: dict | None = None) -> bool:
    """Whether a call samples random numbers (`RANDOM_OPS`, in-place forms included): not where its `training`
    or `train` argument is False (an eval-mode RReLU is a leaky ReLU)."""
    if op_name(fn).rstrip("_") not in RANDOM_OPS:
        return False
    schema = getattr(fn, "_schema", None)
    for i, a in enumerate(schema.arguments if schema is not None else ()):
        if a.name in ("training", "train"):
            given = (kwargs or {}).get(a.name, args[i] if i < len(args) else a.default_value)
            return given is not False
    return True


def op_name(fn: Any) -> str:
    """The table's key for a call: the ATen op's name (`aten.add.Tensor` -> 'add'), or the callable's name."""
    schema = getattr(fn, "_schema", None)
    if schema is not None:
        return schema.name.split("::", 1)[-1]
    return getattr(fn, "__name__", type(fn).__name__)


def entry(fn_or_name: Any) -> OpEntry:
    """The table's entry for an op (a call or its name); an op without one gets a default entry: autograd
    VJP, dense Jacobian, elementwise where torch tags it `pointwise`."""
    name = fn_or_name if isinstance(fn_or_name, str) else op_name(fn_or_name)
    if name in OPS:
        return OPS[name]
    pointwise = torch.Tag.pointwise in getattr(fn_or_name, "tags", ())
    return OpEntry(name, "other", elementwise=pointwise)


def supported_summary() -> str:
    """The ops with entries, by family, for messages and the README (any other differentiable ATen op
    works too, by autograd on its call)."""
    families: dict[str, list[str]] = {}
    for e in ENTRIES:
        families.setdefault(e.family, []).append(e.name)
    return "\n".join(f"  {fam}: {', '.join(names)}" for fam, names in families.items())
