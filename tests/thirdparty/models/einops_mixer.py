"""Tiny MLP-Mixer written in lucidrains' style with einops (Rearrange/Reduce layers, rearrange in forward)."""

from __future__ import annotations

from functools import partial

import torch
from einops import rearrange
from einops.layers.torch import Rearrange, Reduce
from torch import nn

LOSS = "ce"


class PreNormResidual(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x)) + x


def FeedForward(dim: int, expansion_factor: float = 2, dense=nn.Linear) -> nn.Sequential:
    inner = int(dim * expansion_factor)
    return nn.Sequential(dense(dim, inner), nn.GELU(), nn.Dropout(0.0), dense(inner, dim), nn.Dropout(0.0))


class MLPMixer(nn.Module):
    def __init__(self, *, image_size: int, channels: int, patch_size: int, dim: int, depth: int,
                 num_classes: int, expansion_factor: float = 2, expansion_factor_token: float = 0.5) -> None:
        super().__init__()
        assert image_size % patch_size == 0, "image must be divisible by patch size"
        self.patch_size = patch_size
        num_patches = (image_size // patch_size) ** 2
        chan_first, chan_last = partial(nn.Conv1d, kernel_size=1), nn.Linear
        self.embed = nn.Linear((patch_size ** 2) * channels, dim)
        self.blocks = nn.Sequential(*[nn.Sequential(
            PreNormResidual(dim, FeedForward(num_patches, expansion_factor, chan_first)),
            PreNormResidual(dim, FeedForward(dim, expansion_factor_token, chan_last)),
        ) for _ in range(depth)])
        self.head = nn.Sequential(
            nn.LayerNorm(dim),
            Reduce("b n c -> b c", "mean"),
            nn.Linear(dim, num_classes),
        )
        self.to_tokens = Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim == 3:  # a single unbatched image
            img = rearrange(img, "c h w -> 1 c h w")
        x = self.embed(self.to_tokens(img))
        x = self.blocks(x)
        x = self.head(x)
        return rearrange(x, "b k -> b k")  # no-op pattern: exercises einops' functional path on the output


def build(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = MLPMixer(image_size=8, channels=3, patch_size=4, dim=16, depth=1, num_classes=3).eval()
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 8, 8, generator=gen)
    target = torch.randint(0, 3, (2,), generator=gen, dtype=torch.int64)
    return module, (images,), target
