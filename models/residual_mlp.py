"""The residual MLP of the paper's Figure 3 (default: 8 -> 16 -> 16 -> 4): three linear layers
and one skip connection around the second.

    s = tanh(W1 x);  out = W3 (s + W2 s)

so the output is G(s) = W3 s + W3 W2 s: the first term reaches the output in one step, the second
in two. The skip edge from s to the sum jumps over W2's vertex, so `level()` routes it through
exactly one identity vertex (`pcsim graph residual_mlp --level` shows it). Plain PyTorch;
`build()` returns a deterministic (model, inputs, target) triple.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOSS = "mse"


class ResidualMLP(nn.Module):
    def __init__(self, in_features: int = 8, hidden: int = 16, n_out: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.tanh(self.fc1(x.flatten(1)))
        return self.fc3(s + self.fc2(s))


def build(
    seed: int = 0,
    *,
    input_shape: tuple[int, ...] = (8,),
    n_classes: int | None = None,
    hidden: int = 16,
    n_out: int = 4,
    batch: int = 8,
) -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
    """Build the residual MLP with random inputs and real-valued targets.

    Dims:
        input_shape: per-sample input shape, flattened in forward (default (8,)).
        n_classes:   alias for n_out, so generic training code can size the output (the loss stays
                     MSE: use one-hot targets for classification data).
        hidden:      width of the two hidden layers (default 16).
        n_out:       number of outputs (default 4).
        batch:       number of samples in the returned inputs (default 8).

    Returns (model, (x,), y): x of shape (batch, *input_shape), y of shape (batch, n_out).
    """
    input_shape = tuple(int(d) for d in input_shape)
    if n_classes is not None:
        n_out = n_classes
    with torch.random.fork_rng(devices=[]):  # seed the default init without touching the caller's RNG
        torch.manual_seed(seed)
        model = ResidualMLP(math.prod(input_shape), hidden, n_out)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.get_default_dtype()
    x = torch.randn((batch, *input_shape), generator=gen, dtype=dtype)
    y = torch.randn((batch, n_out), generator=gen, dtype=dtype)
    return model, (x,), y
