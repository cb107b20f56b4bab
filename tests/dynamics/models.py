"""Small networks for the dynamics tests, with the matrices their closed forms need."""

import torch
from torch import nn


class LinearChain(nn.Module):
    """out = W3 W2 W1 s: PC on it is a linear ODE with a closed-form solution."""

    def __init__(self, sizes=(3, 4, 5, 2), seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1, self.l2, self.l3 = (nn.Linear(a, b, bias=False) for a, b in zip(sizes, sizes[1:], strict=False))
        with torch.no_grad():
            for layer in (self.l1, self.l2, self.l3):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) / layer.weight.shape[1] ** 0.5)

    def forward(self, s):
        return self.l3(self.l2(self.l1(s)))


def linear_system(model: LinearChain, s: torch.Tensor, y: torch.Tensor, tau: float):
    """dz/dt = A z + b for one sample, z = [x1; x2] (the output clamped to y), written by hand."""
    W1, W2, W3 = (m.weight.detach() for m in (model.l1, model.l2, model.l3))
    n1, n2 = W1.shape[0], W2.shape[0]
    A = torch.zeros(n1 + n2, n1 + n2, dtype=W1.dtype)
    A[:n1, :n1] = -(torch.eye(n1, dtype=W1.dtype) + W2.T @ W2)
    A[:n1, n1:] = W2.T
    A[n1:, :n1] = W2
    A[n1:, n1:] = -(torch.eye(n2, dtype=W1.dtype) + W3.T @ W3)
    b = torch.cat([W1 @ s, W3.T @ y])
    return A / tau, b / tau


class DeepTanh(nn.Module):
    """A chain of `depth` Linear+tanh layers (the error-wave and convergence tests)."""

    def __init__(self, width=4, depth=5, n_in=3, n_out=2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        sizes = [n_in] + [width] * (depth - 1) + [n_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False))
        with torch.no_grad():
            for layer in self.layers:
                layer.weight.copy_(1.2 * torch.randn(layer.weight.shape, generator=g) / layer.weight.shape[1] ** 0.5)
                layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=g))

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = torch.tanh(layer(x))
        return self.layers[-1](x)


def deep_tanh_problem(depth=5, batch=2, seed=0, dtype=torch.float64):
    """Explicitly float64 (module-scoped fixtures run before the float64 default is set)."""
    model = DeepTanh(depth=depth, seed=seed).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    x, y = torch.randn(batch, 3, generator=g), torch.randn(batch, 2, generator=g)
    return model, (x.to(dtype),), y.to(dtype)
