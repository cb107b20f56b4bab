"""Dilated causal Conv1d stack, WaveNet style (plain torch: F.pad(x, (left, 0)) then Conv1d, tanh*sigmoid gates)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSS = "mse"


class CausalConv1d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.left = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.left, 0)))


class GatedResidual(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.filter = CausalConv1d(channels, channels, kernel_size, dilation)
        self.gate = CausalConv1d(channels, channels, kernel_size, dilation)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.filter(x)) * torch.sigmoid(self.gate(x))
        return x + self.proj(h)


class CausalStack(nn.Module):
    def __init__(self, in_channels: int = 2, channels: int = 8, out_channels: int = 2, kernel_size: int = 2,
                 dilations: tuple[int, ...] = (1, 2)) -> None:
        super().__init__()
        self.inp = CausalConv1d(in_channels, channels, kernel_size, 1)
        self.layers = nn.Sequential(*[GatedResidual(channels, kernel_size, d) for d in dilations])
        self.out = nn.Conv1d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.layers(self.inp(x))))


def build(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = CausalStack().eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, 6, generator=gen)
    target = torch.randn(2, 2, 6, generator=gen)
    return module, (x,), target
