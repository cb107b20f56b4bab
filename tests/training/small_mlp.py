"""A small zoo-style model for training tests (the zoo's MLP is large by default)."""

import math

import torch
from torch import nn

LOSS = "ce"


def build(seed: int = 0, input_shape=(1, 8, 8), n_classes=10, hidden=24, batch=8):
    torch.manual_seed(seed)
    n_in = math.prod(input_shape)
    module = nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                           nn.Linear(hidden, n_classes))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, *input_shape), generator=g)
    return module, (x,), torch.randint(0, n_classes, (batch,), generator=g)
