"""VQ-VAE (van den Oord et al. 2017) as its reference code writes it: straight-through estimator by `.detach()`."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LOSS = "mse"


class VectorQuantizer(nn.Module):
    """The nearest code by distance, its lookup copied into place, gradients passed straight through."""

    def __init__(self, n_codes: int, dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.codebook = nn.Embedding(n_codes, dim)
        self.beta = beta

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        distances = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.weight.t()
                     + self.codebook.weight.pow(2).sum(1))
        codes = distances.argmin(1)
        quantised = torch.zeros_like(flat)
        quantised[:] = self.codebook(codes)  # item assignment: captured as aten.copy
        quantised = quantised.view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
        loss = F.mse_loss(quantised, z.detach()) + self.beta * F.mse_loss(quantised.detach(), z)
        return z + (quantised - z).detach(), loss  # straight through


class VQVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))
        self.quantiser = VectorQuantizer(6, 3)
        self.decoder = nn.Sequential(nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(4, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        quantised, vq_loss = self.quantiser(self.encoder(x))
        return self.decoder(quantised), vq_loss


def build(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = VQVAE().eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, 6, 6, generator=gen)
    return module, (x,), (x.clone(), torch.zeros(()))
