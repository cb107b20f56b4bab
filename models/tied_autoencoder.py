"""Autoencoder with tied weights (default: 784 -> 256 -> 784, sigmoid code, MSE reconstruction).

The decoder reuses the encoder's weight matrix, transposed (W and W^T): one parameter read by
two vertices at different depths, so its update is the sum of two contributions. Plain PyTorch;
`build()` returns a deterministic (model, inputs, target) triple whose target is the input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOSS = "mse"


class TiedAutoencoder(nn.Module):
    def __init__(self, in_features: int = 784, code: int = 256) -> None:
        super().__init__()
        self.encoder = nn.Linear(in_features, code)
        self.decoder_bias = nn.Parameter(torch.zeros(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        h = torch.sigmoid(self.encoder(x))
        return F.linear(h, self.encoder.weight.t(), self.decoder_bias)


def build(
    seed: int = 0,
    *,
    input_shape: tuple[int, ...] = (784,),
    n_classes: int | None = None,
    code: int = 256,
    batch: int = 8,
) -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
    """Build the tied autoencoder with random inputs; the target is the flattened input.

    Dims:
        input_shape: per-sample input shape, flattened in forward (default (784,)).
        n_classes:   ignored (an autoencoder has no classes); accepted so generic code can pass it.
        code:        width of the code layer (default 256).
        batch:       number of samples in the returned inputs (default 8).

    Returns (model, (x,), y): x of shape (batch, *input_shape), y = x flattened to (batch, features).
    """
    input_shape = tuple(int(d) for d in input_shape)
    features = math.prod(input_shape)
    with torch.random.fork_rng(devices=[]):  # seed the default init without touching the caller's RNG
        torch.manual_seed(seed)
        model = TiedAutoencoder(features, code)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, *input_shape), generator=gen, dtype=torch.get_default_dtype())
    return model, (x,), x.flatten(1).clone()
