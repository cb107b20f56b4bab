"""Tiny Llama causal language model (transformers LlamaForCausalLM: RMSNorm, RoPE, SwiGLU, GQA; sdpa attention)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

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
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16,
                             tie_word_embeddings=False, attn_implementation="sdpa")
        module = TokenLogits(LlamaForCausalLM(config)).eval()
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (2, 5), generator=gen, dtype=torch.int64)
    target = torch.randint(0, VOCAB, (2 * 5,), generator=gen, dtype=torch.int64)
    return module, (input_ids,), target
