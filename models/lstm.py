"""Sequence classifier with nn.LSTM (default: 10 steps of 32 features, 128 units).

The LSTM reads a (batch, seq_len, input_size) sequence (batch_first=True); a linear head
classifies the last layer's final hidden state. Plain PyTorch; `build()` returns a deterministic
(model, inputs, target) triple.
"""

from __future__ import annotations

import torch
from torch import nn

LOSS = "ce"


class LSTMClassifier(nn.Module):
    def __init__(self, input_size: int = 32, hidden_size: int = 128, num_layers: int = 1,
                 n_classes: int = 10, images: bool = False) -> None:
        super().__init__()
        self.images = images  # (batch, C, H, W) inputs, read as H steps of C * W features
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.images:
            x = x.permute(0, 2, 1, 3).flatten(2)
        _, (h_n, _) = self.lstm(x)
        return self.head(h_n[-1])


def build(
    seed: int = 0,
    *,
    input_shape: tuple[int, int] = (10, 32),
    n_classes: int = 10,
    hidden_size: int = 128,
    num_layers: int = 1,
    batch: int = 4,
) -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
    """Build the LSTM classifier with random sequences and class-index targets.

    Dims:
        input_shape: per-sample shape (seq_len, input_size); (C, H, W) images are read as
                     H steps of C * W features. Default (10, 32).
        n_classes:   number of output logits / classes (default 10).
        hidden_size: LSTM units per layer (default 128).
        num_layers:  stacked LSTM layers (default 1).
        batch:       number of sequences in the returned inputs (default 4).

    Returns (model, (x,), y): x of shape (batch, seq_len, input_size), or (batch, C, H, W) when built
    for images, y int64 class indices.
    """
    input_shape = tuple(int(d) for d in input_shape)
    image = input_shape if len(input_shape) == 3 else None
    if image:  # images: one step per row
        input_shape = (image[1], image[0] * image[2])
    if len(input_shape) != 2:
        raise ValueError(f"lstm needs input_shape=(seq_len, input_size), got {input_shape}")
    seq_len, input_size = input_shape
    with torch.random.fork_rng(devices=[]):  # seed the default init without touching the caller's RNG
        torch.manual_seed(seed)
        model = LSTMClassifier(input_size, hidden_size, num_layers, n_classes, images=image is not None)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *(image or input_shape)), generator=gen, dtype=torch.get_default_dtype())
    y = torch.randint(0, n_classes, (batch,), generator=gen, dtype=torch.int64)
    return model, (x,), y
