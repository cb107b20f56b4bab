"""A linear layer whose weight is shared by several vertices, with its Hebbian terms summed in place.

A recurrent network applies the same `W_hh` (and `W_ih`) at every step. Autograd pulls each use
back to the weight on its own (one `mm` into a fresh tensor, in the transposed layout of `W.t()`)
and then adds the results; for a ten-step LSTM that costs more than the matrix products themselves.
Here every use adds its term `delta^T x` straight into one buffer with `addmm_`, the way
`nn.LSTM`'s fused kernels sum over time: the same sum, one pass per use, no temporary.
"""

from __future__ import annotations

import torch


class WeightSum:
    """The running sums of the Hebbian terms of one shared linear layer: `dL/dW`, `dL/db`."""

    def __init__(self):
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    def add(self, delta: torch.Tensor, x: torch.Tensor, has_bias: bool) -> None:
        delta2 = delta.reshape(-1, delta.shape[-1])
        x2 = x.reshape(-1, x.shape[-1])
        if self.weight is None:
            self.weight = delta2.t().mm(x2)
        else:
            self.weight.addmm_(delta2.t(), x2)
        if has_bias:
            b = delta2.sum(0)
            self.bias = b if self.bias is None else self.bias.add_(b)


class SharedLinear(torch.autograd.Function):
    """`F.linear(x, weight, bias)`, pulled back to `x` as autograd would and to the parameters into `sums`.

    `weight` must require grad (so that the engine reaches this node even when `x` does not); its
    gradient and the bias's are returned as None: they arrive in `sums` instead.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, sums: WeightSum):
        ctx.save_for_backward(x, weight)
        ctx.sums = sums
        ctx.has_bias = bias is not None
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, delta):
        x, weight = ctx.saved_tensors
        ctx.sums.add(delta, x, ctx.has_bias)
        dx = delta.matmul(weight) if ctx.needs_input_grad[0] else None
        return dx, None, None, None
