"""One-layer transformer encoder classifier on integer tokens (default: 64 tokens from a
vocabulary of 5000, d_model 256, 8 heads, feed-forward 1024; 2.1M parameters).

Token embedding plus a learned positional embedding, one nn.TransformerEncoderLayer
(post-norm, ReLU, batch_first), mean pooling over the sequence, a LayerNorm and a linear head.
Plain PyTorch; `build()` returns a deterministic (model, inputs, target) triple (eval mode:
dropout off).
"""

from __future__ import annotations

import torch
from torch import nn

LOSS = "ce"


class TransformerClassifier(nn.Module):
    def __init__(self, vocab: int = 5000, seq_len: int = 64, d_model: int = 256, nhead: int = 8,
                 dim_feedforward: int = 1024, n_classes: int = 10, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(1, seq_len, d_model))
        self.encoder = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=dropout,
                                                  batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.pos
        h = self.encoder(h)
        return self.head(self.norm(h.mean(dim=1)))


def build(
    seed: int = 0,
    *,
    input_shape: tuple[int] = (64,),
    n_classes: int = 10,
    vocab: int = 5000,
    d_model: int = 256,
    nhead: int = 8,
    dim_feedforward: int = 1024,
    batch: int = 4,
) -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
    """Build the transformer classifier (eval mode) with random token sequences and class targets.

    Dims:
        input_shape: per-sample shape (seq_len,) of token indices (default (64,)).
        n_classes:   number of output logits / classes (default 10).
        vocab:       vocabulary size (default 5000).
        d_model:     embedding width (default 256); must be divisible by nhead.
        nhead:       attention heads (default 8).
        dim_feedforward: hidden width of the feed-forward block (default 1024).
        batch:       number of sequences in the returned inputs (default 4).

    Returns (model, (tokens,), y): tokens int64 of shape (batch, seq_len) in [0, vocab), y int64
    class indices of shape (batch,).
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 1:
        raise ValueError(f"transformer needs input_shape=(seq_len,), got {input_shape}")
    (seq_len,) = input_shape
    with torch.random.fork_rng(devices=[]):  # seed the default init without touching the caller's RNG
        torch.manual_seed(seed)
        model = TransformerClassifier(vocab, seq_len, d_model, nhead, dim_feedforward, n_classes)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (batch, seq_len), generator=gen, dtype=torch.int64)
    y = torch.randint(0, n_classes, (batch,), generator=gen, dtype=torch.int64)
    return model, (tokens,), y
