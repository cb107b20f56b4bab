"""ResNet-18, CIFAR variant (default: 3x32x32 images, 10 classes, about 11.2M parameters).

The usual CIFAR adaptation of He et al.'s ResNet-18: a 3x3 stem without max-pooling, four stages
of two BasicBlocks (64, 128, 256, 512 channels; stride 2 from the second stage on, with a 1x1
convolution + BatchNorm shortcut where the shape changes), global average pooling, a linear head.
BatchNorm runs in eval mode (running statistics). Plain PyTorch; `build()` returns a deterministic
(model, inputs, target) triple.
"""

from __future__ import annotations

import torch
from torch import nn

LOSS = "ce"


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the (possibly projected) input, then ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu(out)


class ResNet18(nn.Module):
    def __init__(self, in_channels: int = 3, n_classes: int = 10, width: int = 64,
                 blocks: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        channels = width
        for i, n in enumerate(blocks):
            out_channels = width * 2 ** i
            layers = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = torch.flatten(self.avgpool(out), 1)
        return self.fc(out)


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
    width: int = 64,
    blocks: tuple[int, ...] = (2, 2, 2, 2),
    batch: int = 2,
) -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
    """Build ResNet-18 (eval mode) with random images and class-index targets.

    Dims:
        input_shape: per-sample image shape (channels, height, width); default (3, 32, 32).
        n_classes:   number of output logits / classes (default 10).
        width:       channels of the stem and first stage, doubled per stage (default 64).
        blocks:      BasicBlocks per stage (default (2, 2, 2, 2): ResNet-18).
        batch:       number of samples in the returned inputs (default 2).

    Returns (model, (x,), y): x of shape (batch, C, H, W), y int64 class indices of shape (batch,).
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"resnet18 needs input_shape=(C, H, W), got {input_shape}")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seed the default init without touching the caller's RNG
        torch.manual_seed(seed)
        model = ResNet18(input_shape[0], n_classes, width, tuple(blocks))
    _randomise_batchnorm(model, gen)
    model.eval()
    x = torch.randn((batch, *input_shape), generator=gen, dtype=torch.get_default_dtype())
    y = torch.randint(0, n_classes, (batch,), generator=gen, dtype=torch.int64)
    return model, (x,), y
