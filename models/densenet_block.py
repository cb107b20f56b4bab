"""A DenseNet-BC classifier around one dense block (default: 3x32x32 images, 6 layers, growth 32).

Huang et al.'s dense connectivity: every layer (BN-ReLU-1x1 conv bottleneck, BN-ReLU-3x3 conv)
receives the concatenation of the stem's and all earlier layers' feature maps, and the block
returns the concatenation of all of them. A stem convolution before the block, a BN-ReLU,
global average pooling and a linear head after it. BatchNorm runs in eval mode. Plain PyTorch;
`build()` returns a deterministic (model, inputs, target) triple.
"""

from __future__ import annotations

import torch
from torch import nn

LOSS = "ce"


class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, kernel_size=3, padding=1, bias=False)
        self.relu = nn.ReLU()

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        x = self.conv1(self.relu(self.norm1(x)))
        return self.conv2(self.relu(self.norm2(x)))


class DenseBlock(nn.Module):
    def __init__(self, num_layers: int, in_channels: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth, growth, bn_size) for i in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNetBlockClassifier(nn.Module):
    def __init__(self, in_channels: int = 3, n_classes: int = 10, stem: int = 64, num_layers: int = 6,
                 growth: int = 32, bn_size: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, stem, kernel_size=3, padding=1, bias=False)
        self.block = DenseBlock(num_layers, stem, growth, bn_size)
        out_channels = stem + num_layers * growth
        self.norm = nn.BatchNorm2d(out_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(out_channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.stem(x))
        x = self.pool(torch.relu(self.norm(x)))
        return self.head(torch.flatten(x, 1))


def _randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Running statistics and affine parameters as after some training, so eval mode matters."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.75 + 0.5 * torch.rand(n, generator=gen))
                m.weight.copy_(1.0 + 0.1 * torch.randn(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))


def build(
    seed: int = 0,
    *,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    n_classes: int = 10,
    stem: int = 64,
    num_layers: int = 6,
    growth: int = 32,
    bn_size: int = 4,
    batch: int = 2,
) -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
    """Build the dense-block classifier (eval mode) with random images and class-index targets.

    Dims:
        input_shape: per-sample image shape (channels, height, width); default (3, 32, 32).
        n_classes:   number of output logits / classes (default 10).
        stem:        channels out of the stem convolution (default 64).
        num_layers:  dense layers in the block (default 6).
        growth:      channels each dense layer adds (default 32).
        bn_size:     bottleneck width as a multiple of growth (default 4).
        batch:       number of samples in the returned inputs (default 2).

    Returns (model, (x,), y): x of shape (batch, C, H, W), y int64 class indices of shape (batch,).
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"densenet_block needs input_shape=(C, H, W), got {input_shape}")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seed the default init without touching the caller's RNG
        torch.manual_seed(seed)
        model = DenseNetBlockClassifier(input_shape[0], n_classes, stem, num_layers, growth, bn_size)
    _randomise_batchnorm(model, gen)
    model.eval()
    x = torch.randn((batch, *input_shape), generator=gen, dtype=torch.get_default_dtype())
    y = torch.randint(0, n_classes, (batch,), generator=gen, dtype=torch.int64)
    return model, (x,), y
