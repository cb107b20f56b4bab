"""Two-layer GAT node classifier (heads=2) on a small fixed graph (torch_geometric GATConv)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv

LOSS = "ce"
N_NODES = 6
# An undirected 6-node graph (a ring plus one chord), both directions listed.
EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (0, 3)]


def edge_index() -> torch.Tensor:
    src, dst = zip(*EDGES, strict=True)
    return torch.tensor([src + dst, dst + src], dtype=torch.int64)


class GAT(nn.Module):
    def __init__(self, in_channels: int, hidden: int, n_classes: int, heads: int = 2) -> None:
        super().__init__()
        self.conv1 = GATConv(in_channels, hidden, heads=heads)  # concatenated heads: hidden * heads
        self.conv2 = GATConv(hidden * heads, n_classes, heads=heads, concat=False)  # averaged heads

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = F.elu(self.conv1(x, edge_index))
        return self.conv2(x, edge_index)


def build(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = GAT(4, 4, 3, heads=2).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N_NODES, 4, generator=gen)
    target = torch.randint(0, 3, (N_NODES,), generator=gen, dtype=torch.int64)
    return module, (x, edge_index()), target
