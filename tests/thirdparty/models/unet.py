"""Tiny two-level U-Net (plain torch: Conv2d blocks, MaxPool2d, ConvTranspose2d, torch.cat skips), mse on the map."""

from __future__ import annotations

import torch
from torch import nn

LOSS = "mse"


class DoubleConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UNet(nn.Module):
    def __init__(self, in_channels: int = 2, out_channels: int = 1, width: int = 4) -> None:
        super().__init__()
        self.enc1 = DoubleConv(in_channels, width)
        self.enc2 = DoubleConv(width, 2 * width)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(2 * width, 4 * width)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, kernel_size=2, stride=2)
        self.dec2 = DoubleConv(4 * width, 2 * width)
        self.up1 = nn.ConvTranspose2d(2 * width, width, kernel_size=2, stride=2)
        self.dec1 = DoubleConv(2 * width, width)
        self.out = nn.Conv2d(width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)                     # (B, w, 8, 8)
        e2 = self.enc2(self.pool(e1))         # (B, 2w, 4, 4)
        b = self.bottleneck(self.pool(e2))    # (B, 4w, 2, 2)
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out(d1)


def build(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = UNet(in_channels=2, out_channels=1, width=4).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, 8, 8, generator=gen)
    target = torch.randn(2, 1, 8, 8, generator=gen)
    return module, (x,), target
