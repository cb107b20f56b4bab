"""Tiny GPT-2 language model (transformers GPT2LMHeadModel, eager attention), next-token logits per token."""

from __future__ import annotations

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

LOSS = "ce"
VOCAB = 20


class TokenLogits(nn.Module):
    """Returns the ModelOutput's `.logits` flattened over tokens: (batch * seq, vocab)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=input_ids, use_cache=False).logits
        return logits.reshape(-1, logits.shape[-1])


def build(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=1, n_head=2, n_inner=16,
                            bos_token_id=0, eos_token_id=0, attn_implementation="eager")
        module = TokenLogits(GPT2LMHeadModel(config)).eval()
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (2, 5), generator=gen, dtype=torch.int64)
    target = torch.randint(0, VOCAB, (2 * 5,), generator=gen, dtype=torch.int64)
    return module, (input_ids,), target
