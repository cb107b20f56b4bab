"""Small convolutional classifier (default: 1x8x8 digits, 10 classes).

conv(3x3) -> ReLU -> MaxPool(2) -> conv(3x3) -> ReLU -> AvgPool(2) -> flatten -> Linear.
Plain PyTorch; `build()` returns a deterministic (model, inputs, target) triple.
"""

from __future__ import annotations

import torch
from torch import nn

LOSS = "ce"


class SmallCNN(nn.Module):
    """Two conv blocks (max- then average-pooled) and a linear classifier head.

    Padding 1 keeps the spatial size through each 3x3 convolution, so the two 2x2
    poolings shrink (H, W) to (H // 4, W // 4) (floor division at each pooling).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        channels: tuple[int, int] = (4, 8),
        n_classes: int = 10,
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
        )
        flat = c2 * (height // 2 // 2) * (width // 2 // 2)
        self.classifier = nn.Linear(flat, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build(
    seed: int = 0,
    *,
    input_shape: tuple[int, int, int] = (1, 8, 8),
    n_classes: int = 10,
    channels: tuple[int, int] = (4, 8),
    batch: int = 8,
) -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
    """Build the CNN with random image inputs and class-index targets.

    Dims:
        input_shape: per-sample image shape (channels, height, width); height and
                     width must be at least 4 (two 2x2 poolings). Default (1, 8, 8).
        n_classes:   number of output logits / classes (default 10).
        channels:    output channels of the two convolutions (default (4, 8)).
        batch:       number of samples in the returned inputs (default 8).

    Returns (model, (x,), y): x of shape (batch, C, H, W) in the default dtype,
    y int64 class indices of shape (batch,).
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or min(input_shape[1:]) < 4:
        raise ValueError(f"cnn needs input_shape=(C, H, W) with H, W >= 4, got {input_shape}")
    with torch.random.fork_rng(devices=[]):  # seed the default init without touching the caller's RNG
        torch.manual_seed(seed)
        model = SmallCNN(input_shape, tuple(channels), n_classes)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *input_shape), generator=gen, dtype=torch.get_default_dtype())
    y = torch.randint(0, n_classes, (batch,), generator=gen, dtype=torch.int64)
    return model, (x,), y
