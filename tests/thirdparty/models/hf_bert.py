"""Tiny BERT sequence classifier (transformers BertForSequenceClassification, eager attention)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

LOSS = "ce"


class Logits(nn.Module):
    """Returns the ModelOutput's `.logits` only: (batch, num_labels)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits


def build(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=16, max_position_embeddings=16, type_vocab_size=2,
                            num_labels=3, attn_implementation="eager")
        module = Logits(BertForSequenceClassification(config)).eval()
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 20, (2, 5), generator=gen, dtype=torch.int64)
    target = torch.randint(0, 3, (2,), generator=gen, dtype=torch.int64)
    return module, (input_ids,), target
