"""Standard `torch.nn` modules in pcsim's terms.

Converters turn one leaf module call into one vertex (its functional form, parameters as
`ParamArg`, buffers as `ConstArg`). Expansions (`ops/expansions.py`) run at fx-trace time and
rewrite a composite module (recurrent cells and layers, attention) into elementary calls, so PC
runs on each gate as its own population; `trace(..., fused=...)` keeps recurrent layers whole
instead (`ops/fused.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from pcsim.errors import UnsupportedOpError
from pcsim.ops.registry import identity


@dataclass(frozen=True)
class ModuleCall:
    """The functional form of one module call."""

    op: str
    fn: Callable[..., Any]
    args: tuple
    kwargs: tuple[tuple[str, Any], ...] = ()
    notes: tuple[str, ...] = field(default=())


class Context(Protocol):
    """What a converter may ask of the tracer."""

    def param(self, module: nn.Module, attr: str) -> Any: ...  # ParamArg, or None when absent

    def const(self, module: nn.Module, attr: str) -> Any: ...  # ConstArg, or None when absent


def _linear(m: nn.Linear, ctx: Context, x) -> ModuleCall:
    return ModuleCall("linear", F.linear, (x, ctx.param(m, "weight"), ctx.param(m, "bias")))


def _conv(op: str, fn):
    def convert(m, ctx: Context, x) -> ModuleCall:
        if m.padding_mode != "zeros":
            raise UnsupportedOpError(f"{type(m).__name__} with padding_mode='{m.padding_mode}' "
                                     "(only 'zeros' is supported)")
        return ModuleCall(op, fn, (x, ctx.param(m, "weight"), ctx.param(m, "bias"), m.stride,
                                   m.padding, m.dilation, m.groups))
    return convert


def _max_pool2d(m: nn.MaxPool2d, ctx: Context, x) -> ModuleCall:
    if m.return_indices:
        raise UnsupportedOpError("MaxPool2d(return_indices=True): indices are not a population")
    return ModuleCall("max_pool2d", F.max_pool2d, (x, m.kernel_size, m.stride, m.padding, m.dilation,
                                                   m.ceil_mode))


def _avg_pool2d(m: nn.AvgPool2d, ctx: Context, x) -> ModuleCall:
    return ModuleCall("avg_pool2d", F.avg_pool2d, (x, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                                   m.count_include_pad, m.divisor_override))


def _adaptive_avg_pool2d(m, ctx: Context, x) -> ModuleCall:
    return ModuleCall("adaptive_avg_pool2d", F.adaptive_avg_pool2d, (x, m.output_size))


def _batch_norm(m, ctx: Context, x) -> ModuleCall:
    # In eval mode (or without running stats) BatchNorm is a fixed affine map per channel; in
    # training mode it normalises with the batch's statistics (running stats are not updated).
    use_running = not m.training and m.track_running_stats
    mean = ctx.const(m, "running_mean") if use_running else None
    var = ctx.const(m, "running_var") if use_running else None
    notes = () if use_running else ("batch statistics (module in training mode)",)
    return ModuleCall("batch_norm", F.batch_norm, (x, mean, var, ctx.param(m, "weight"),
                                                   ctx.param(m, "bias"), not use_running, 0.0, m.eps),
                      notes=notes)


def _layer_norm(m: nn.LayerNorm, ctx: Context, x) -> ModuleCall:
    return ModuleCall("layer_norm", F.layer_norm, (x, tuple(m.normalized_shape), ctx.param(m, "weight"),
                                                   ctx.param(m, "bias"), m.eps))


def _embedding(m: nn.Embedding, ctx: Context, idx) -> ModuleCall:
    if m.max_norm is not None:
        raise UnsupportedOpError("Embedding(max_norm=...) renormalises its weight in place during forward")
    return ModuleCall("embedding", F.embedding, (idx, ctx.param(m, "weight"), m.padding_idx, None,
                                                 m.norm_type, m.scale_grad_by_freq, m.sparse))


def _simple(op: str, fn, *attrs: str):
    def convert(m, ctx: Context, x) -> ModuleCall:
        return ModuleCall(op, fn, (x,), tuple((a, getattr(m, a)) for a in attrs))
    return convert


def _flatten(m: nn.Flatten, ctx: Context, x) -> ModuleCall:
    return ModuleCall("flatten", torch.flatten, (x, m.start_dim, m.end_dim))


def _leaky_relu(m: nn.LeakyReLU, ctx: Context, x) -> ModuleCall:
    return ModuleCall("leaky_relu", F.leaky_relu, (x, m.negative_slope))


def _gelu(m: nn.GELU, ctx: Context, x) -> ModuleCall:
    return ModuleCall("gelu", F.gelu, (x,), (("approximate", m.approximate),))


def _softmax(op: str, fn):
    def convert(m, ctx: Context, x) -> ModuleCall:
        return ModuleCall(op, fn, (x, m.dim))
    return convert


MODULE_CONVERTERS: dict[type, Callable[..., ModuleCall]] = {
    nn.Linear: _linear,
    nn.modules.linear.NonDynamicallyQuantizableLinear: _linear,  # MultiheadAttention.out_proj
    nn.Conv1d: _conv("conv1d", F.conv1d),
    nn.Conv2d: _conv("conv2d", F.conv2d),
    nn.MaxPool2d: _max_pool2d,
    nn.AvgPool2d: _avg_pool2d,
    nn.AdaptiveAvgPool2d: _adaptive_avg_pool2d,
    nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm,
    nn.LayerNorm: _layer_norm,
    nn.Embedding: _embedding,
    nn.Flatten: _flatten,
    nn.Dropout: _simple("identity", identity),
    nn.Dropout1d: _simple("identity", identity),
    nn.Dropout2d: _simple("identity", identity),
    nn.Identity: _simple("identity", identity),
    nn.ReLU: _simple("relu", F.relu),
    nn.LeakyReLU: _leaky_relu,
    nn.Tanh: _simple("tanh", torch.tanh),
    nn.Sigmoid: _simple("sigmoid", torch.sigmoid),
    nn.GELU: _gelu,
    nn.SiLU: _simple("silu", F.silu),
    nn.ELU: _simple("elu", F.elu, "alpha"),
    nn.Softplus: _simple("softplus", F.softplus, "beta", "threshold"),
    nn.Softmax: _softmax("softmax", F.softmax),
    nn.LogSoftmax: _softmax("log_softmax", F.log_softmax),
}


# Composite modules (recurrent cells and layers, attention, encoder layers) are expanded at trace
# time into elementary calls: see `ops/expansions.py`.
from pcsim.ops.expansions import MODULE_EXPANSIONS, NEEDS_EXAMPLE  # noqa: E402, F401 (re-exported)
