"""MobileNetV2 inverted-residual blocks in training mode (plain torch: BatchNorm2d normalising by batch statistics)."""

from __future__ import annotations

import torch
from torch import nn

LOSS = "ce"
TRAINING = True


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
            relu6: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                        bias=False),
              nn.BatchNorm2d(out_channels)]
    if relu6:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            conv_bn(inp, hidden, 1),                                # expand
            conv_bn(hidden, hidden, 3, stride, groups=hidden),      # depthwise
            conv_bn(hidden, oup, 1, relu6=False),                   # linear bottleneck
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class TinyMobileNetV2(nn.Module):
    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8, 3, stride=2)
        self.blocks = nn.Sequential(InvertedResidual(8, 8, 1, 2), InvertedResidual(8, 12, 2, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(12, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.classifier(torch.flatten(self.pool(x), 1))


def randomise_batchnorm(module: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial affine parameters and running statistics, so eval-mode BN is not the identity."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(1 + 0.5 * torch.rand(m.running_var.shape, generator=gen))


def build(seed: int = 0, training: bool = TRAINING):
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = TinyMobileNetV2(n_classes=3)
    randomise_batchnorm(module, gen)
    module.train(training)
    x = torch.randn(2, 3, 8, 8, generator=gen)
    target = torch.randint(0, 3, (2,), generator=gen, dtype=torch.int64)
    return module, (x,), target
