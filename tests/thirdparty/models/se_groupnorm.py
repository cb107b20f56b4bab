"""Conv block with squeeze-excitation gating and GroupNorm (plain torch: AdaptiveAvgPool2d, sigmoid gate, GroupNorm)."""

from __future__ import annotations

import torch
from torch import nn

LOSS = "ce"


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.pool(x)
        s = torch.relu(self.fc1(s))
        s = torch.sigmoid(self.fc2(s))
        return x * s


class SEBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.se = SqueezeExcite(channels)
        self.skip = nn.Conv2d(in_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm1(self.conv1(x)))
        h = self.se(self.norm2(self.conv2(h)))
        return torch.relu(h + self.skip(x))


class SENet(nn.Module):
    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.block = SEBlock(3, 8, groups=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


def build(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = SENet(n_classes=3).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 8, 8, generator=gen)
    target = torch.randint(0, 3, (2,), generator=gen, dtype=torch.int64)
    return module, (x,), target
