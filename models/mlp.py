"""Multilayer perceptron classifier (default: MNIST-sized, 784 -> 1000 -> 1000 -> 10, tanh).

`input_shape=(64,)` (or (1, 8, 8)) and `hidden=(32, 32)` give the small digits network.

Plain PyTorch; `build()` returns a deterministic (model, inputs, target) triple.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOSS = "ce"

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


class MLP(nn.Module):
    """Fully connected classifier: flatten -> [Linear -> activation] per hidden layer -> Linear.

    Image inputs (C, H, W) are flattened inside `forward`, so the same class fits vector
    and image data sets. The output is unnormalised logits of shape (batch, n_classes).
    """

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...] = (1000, 1000),
        n_classes: int = 10,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), _ACTIVATIONS[activation]()]
            width = size
        layers.append(nn.Linear(width, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # flatten(1) is a no-op for (batch, features) and flattens (batch, C, H, W) images
        return self.layers(x.flatten(1))


def build(
    seed: int = 0,
    *,
    input_shape: tuple[int, ...] = (784,),
    n_classes: int = 10,
    hidden: tuple[int, ...] = (1000, 1000),
    activation: str = "tanh",
    batch: int = 8,
) -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
    """Build an MLP with random inputs and class-index targets.

    Dims:
        input_shape: per-sample input shape, e.g. (784,) (default), (64,) or (1, 8, 8); flattened
                     in forward.
        n_classes:   number of output logits / classes.
        hidden:      widths of the hidden layers (default (1000, 1000)).
        activation:  "tanh" (default), "relu", "sigmoid" or "gelu".
        batch:       number of samples in the returned inputs (default 8).

    Returns (model, (x,), y): x of shape (batch, *input_shape) in the default dtype,
    y int64 class indices of shape (batch,).
    """
    input_shape = tuple(int(d) for d in input_shape)
    # fork_rng keeps the caller's global RNG untouched while seeding the default init
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLP(math.prod(input_shape), tuple(hidden), n_classes, activation)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *input_shape), generator=gen, dtype=torch.get_default_dtype())
    y = torch.randint(0, n_classes, (batch,), generator=gen, dtype=torch.int64)
    return model, (x,), y
