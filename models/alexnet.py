"""AlexNet-style CNN for 32x32x3 images (default: CIFAR-10 sized, about 23M parameters).

Krizhevsky et al.'s five convolutions and three fully connected layers, as commonly adapted to
32x32 inputs: a stride-2 3x3 first convolution instead of 11x11/4, 2x2 max-pooling, dropout
before the first two fully connected layers. Plain PyTorch; `build()` returns a deterministic
(model, inputs, target) triple (eval mode: dropout off).
"""

from __future__ import annotations

import torch
from torch import nn

LOSS = "ce"


class AlexNet(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        n_classes: int = 10,
        channels: tuple[int, int, int, int, int] = (64, 192, 384, 256, 256),
        hidden: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        c1, c2, c3, c4, c5 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
        )
        side_h, side_w = (height + 1) // 2 // 8, (width + 1) // 2 // 8  # stride 2, then three 2x2 pools
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(c5 * side_h * side_w, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def build(
    seed: int = 0,
    *,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    n_classes: int = 10,
    channels: tuple[int, int, int, int, int] = (64, 192, 384, 256, 256),
    hidden: int = 4096,
    batch: int = 4,
) -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
    """Build the AlexNet-style CNN (eval mode) with random images and class-index targets.

    Dims:
        input_shape: per-sample image shape (channels, height, width), height and width >= 16
                     (default (3, 32, 32)).
        n_classes:   number of output logits / classes (default 10).
        channels:    output channels of the five convolutions (default (64, 192, 384, 256, 256)).
        hidden:      width of the two hidden fully connected layers (default 4096).
        batch:       number of samples in the returned inputs (default 4).

    Returns (model, (x,), y): x of shape (batch, C, H, W), y int64 class indices of shape (batch,).
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or min(input_shape[1:]) < 16:
        raise ValueError(f"alexnet needs input_shape=(C, H, W) with H, W >= 16, got {input_shape}")
    with torch.random.fork_rng(devices=[]):  # seed the default init without touching the caller's RNG
        torch.manual_seed(seed)
        model = AlexNet(input_shape, n_classes, tuple(channels), hidden)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *input_shape), generator=gen, dtype=torch.get_default_dtype())
    y = torch.randint(0, n_classes, (batch,), generator=gen, dtype=torch.int64)
    return model, (x,), y
