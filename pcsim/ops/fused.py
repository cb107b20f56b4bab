"""Whole recurrent layers as single vertices, on torch's fused kernels: `trace(..., fused=(nn.LSTM,))`.

By default `trace` unrolls nn.RNN / nn.LSTM / nn.GRU into one vertex per gate and time step
(`ops/expansions.py`), so PC runs on every gate as its own population. A fused layer is instead
one call of the kernel that `nn.LSTM.forward` itself calls (oneDNN on CPU, cuDNN on CUDA): its
outputs are vertices, its gates and time steps are not. Z-IL and Fa-Z-IL stay exact on such a
graph (any differentiable vertex function will do), and Fa-Z-IL's wavefront then runs the very
kernels backprop runs, forward and backward. What is lost is the per-gate populations: the
Brian2 backend and any analysis of gate errors need the unrolled graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pcsim.errors import InputError
from pcsim.ops.expansions import refuse_dropout_between_layers
from pcsim.ops.modules import Context, ModuleCall

_KERNELS: dict[str, Callable[..., Any]] = {
    "lstm": torch.lstm, "gru": torch.gru, "rnn_tanh": torch.rnn_tanh, "rnn_relu": torch.rnn_relu}


@dataclass(frozen=True)
class RecurrentLayer:
    """The call `nn.RNN/LSTM/GRU.forward` makes, with the module's configuration fixed at trace time.

    Called as `layer(input, hx, *weights)` with the weights in the module's `_flat_weights_names`
    order; returns what the module returns: `(output, h_n)`, or `(output, (h_n, c_n))` for an LSTM.
    """

    kernel: str  # a key of _KERNELS
    hidden_size: int
    proj_size: int
    num_layers: int
    bias: bool
    bidirectional: bool
    batch_first: bool

    def __call__(self, input: torch.Tensor, hx: Any, *weights: torch.Tensor):
        batched = input.dim() == 3
        if not batched:  # as the module does: a batch of one, squeezed again on the way out
            input = input.unsqueeze(0 if self.batch_first else 1)
            if hx is not None:
                hx = tuple(h.unsqueeze(1) for h in hx) if isinstance(hx, tuple) else hx.unsqueeze(1)
        if hx is None:
            hx = self._zeros(input)
        # dropout 0 and train=True: the same values as eval mode, but cuDNN refuses a backward pass
        # through a kernel run in inference mode, and Z-IL pulls errors back through this one
        result = _KERNELS[self.kernel](input, hx, list(weights), self.bias, self.num_layers, 0.0, True,
                                       self.bidirectional, self.batch_first)
        output, hidden = result[0], result[1:]
        if not batched:
            output = output.squeeze(0 if self.batch_first else 1)
            hidden = tuple(h.squeeze(1) for h in hidden)
        return (output, hidden) if self.kernel == "lstm" else (output, hidden[0])

    def _zeros(self, input: torch.Tensor):
        batch = input.shape[0 if self.batch_first else 1]
        states = self.num_layers * (2 if self.bidirectional else 1)
        h = torch.zeros(states, batch, self.proj_size or self.hidden_size, dtype=input.dtype, device=input.device)
        if self.kernel != "lstm":
            return h
        return h, torch.zeros(states, batch, self.hidden_size, dtype=input.dtype, device=input.device)


def _recurrent_layer(m: nn.RNNBase, ctx: Context, input, hx=None) -> ModuleCall:
    refuse_dropout_between_layers(m)
    kernel = {nn.LSTM: "lstm", nn.GRU: "gru"}.get(type(m)) or f"rnn_{m.nonlinearity}"
    layer = RecurrentLayer(kernel, m.hidden_size, getattr(m, "proj_size", 0), m.num_layers, m.bias,
                           m.bidirectional, m.batch_first)
    weights = tuple(ctx.param(m, w) for w in m._flat_weights_names)
    return ModuleCall(kernel.split("_")[0], layer, (input, hx, *weights),
                      notes=("one fused vertex for the whole layer: no per-gate populations",))


RECURRENT_LAYERS: tuple[type[nn.Module], ...] = (nn.RNN, nn.LSTM, nn.GRU)
FUSED_CONVERTERS: dict[type, Callable[..., ModuleCall]] = dict.fromkeys(RECURRENT_LAYERS, _recurrent_layer)


def fused_types(fused: bool | Iterable[type[nn.Module]]) -> frozenset[type]:
    """`trace`'s `fused` argument as the set of module types to keep whole, checked."""
    if isinstance(fused, bool):
        return frozenset(FUSED_CONVERTERS) if fused else frozenset()
    if isinstance(fused, type):
        fused = (fused,)
    if isinstance(fused, str) or not isinstance(fused, Iterable):
        raise InputError(f"trace(fused=...) takes True or module types such as (nn.LSTM, nn.GRU), got {fused!r}")
    types = frozenset(fused)
    for t in types:
        if t not in FUSED_CONVERTERS:
            known = ", ".join(f"nn.{k.__name__}" for k in FUSED_CONVERTERS)
            raise InputError(f"trace(fused=...) got {getattr(t, '__name__', t)!r}; the module types that can be "
                             f"fused into one vertex are {known}")
    return types
