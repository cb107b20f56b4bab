"""Sequence classifier with a two-layer nn.GRU in PyTorch's default (seq_len, batch, features)
layout (default: 10 steps of 32 features, 128 units per layer).

The batch-first input is transposed to time-major for the GRU; a linear head classifies the top
layer's final hidden state. Plain PyTorch; `build()` returns a deterministic
(model, inputs, target) triple.
"""

from __future__ import annotations

import torch
from torch import nn

LOSS = "ce"


class GRUClassifier(nn.Module):
    def __init__(self, input_size: int = 32, hidden_size: int = 128, num_layers: int = 2,
                 n_classes: int = 10, images: bool = False) -> None:
        super().__init__()
        self.images = images  # (batch, C, H, W) inputs, read as H steps of C * W features
        self.gru = nn.GRU(input_size, hidden_size, num_layers=num_layers)
        self.head = nn.Linear(hidden_size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.images:
            x = x.permute(0, 2, 1, 3).flatten(2)
        _, h_n = self.gru(x.transpose(0, 1))  # h_n: (num_layers, batch, hidden)
        return self.head(h_n[-1])


def build(
    seed: int = 0,
    *,
    input_shape: tuple[int, int] = (10, 32),
    n_classes: int = 10,
    hidden_size: int = 128,
    num_layers: int = 2,
    batch: int = 4,
) -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
    """Build the GRU classifier with random sequences and class-index targets.

    Dims:
        input_shape: per-sample shape (seq_len, input_size); (C, H, W) images are read as
                     H steps of C * W features. Default (10, 32).
        n_classes:   number of output logits / classes (default 10).
        hidden_size: GRU units per layer (default 128).
        num_layers:  stacked GRU layers (default 2).
        batch:       number of sequences in the returned inputs (default 4).

    Returns (model, (x,), y): x of shape (batch, seq_len, input_size), or (batch, C, H, W) when built
    for images, y int64 class indices.
    """
    input_shape = tuple(int(d) for d in input_shape)
    image = input_shape if len(input_shape) == 3 else None
    if image:  # images: one step per row
        input_shape = (image[1], image[0] * image[2])
    if len(input_shape) != 2:
        raise ValueError(f"gru needs input_shape=(seq_len, input_size), got {input_shape}")
    seq_len, input_size = input_shape
    with torch.random.fork_rng(devices=[]):  # seed the default init without touching the caller's RNG
        torch.manual_seed(seed)
        model = GRUClassifier(input_size, hidden_size, num_layers, n_classes, images=image is not None)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *(image or input_shape)), generator=gen, dtype=torch.get_default_dtype())
    y = torch.randint(0, n_classes, (batch,), generator=gen, dtype=torch.int64)
    return model, (x,), y
