"""Tiny Vision Transformer classifier (transformers ViTForImageClassification, 8x8 images, 4x4 patches)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import ViTConfig, ViTForImageClassification

LOSS = "ce"


class Logits(nn.Module):
    """Returns the ModelOutput's `.logits` only: (batch, num_labels)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def build(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=16, num_labels=3, attn_implementation="eager")
        module = Logits(ViTForImageClassification(config)).eval()
    gen = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(2, 3, 8, 8, generator=gen)
    target = torch.randint(0, 3, (2,), generator=gen, dtype=torch.int64)
    return module, (pixel_values,), target
