"""GRU encoder-decoder with Luong dot-product attention, teacher forcing (plain torch nn.GRU and nn.GRUCell)."""

from __future__ import annotations

import torch
from torch import nn

LOSS = "ce"
SRC_VOCAB = 10
TGT_VOCAB = 9
BOS = 0


class Encoder(nn.Module):
    def __init__(self, vocab: int, emb: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, emb)
        self.gru = nn.GRU(emb, hidden, batch_first=True)

    def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, h = self.gru(self.embed(src))  # (B, S, H), (1, B, H)
        return outputs, h[0]


class LuongDecoder(nn.Module):
    def __init__(self, vocab: int, emb: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, emb)
        self.cell = nn.GRUCell(emb, hidden)
        self.combine = nn.Linear(2 * hidden, hidden)
        self.out = nn.Linear(hidden, vocab)

    def step(self, token: torch.Tensor, h: torch.Tensor, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.cell(self.embed(token), h)                           # (B, H)
        scores = torch.bmm(enc, h.unsqueeze(2)).squeeze(2)            # (B, S): dot-product scores
        weights = torch.softmax(scores, dim=1)
        context = torch.bmm(weights.unsqueeze(1), enc).squeeze(1)     # (B, H)
        attentional = torch.tanh(self.combine(torch.cat([context, h], dim=1)))
        return self.out(attentional), h


class Seq2Seq(nn.Module):
    def __init__(self, src_vocab: int = SRC_VOCAB, tgt_vocab: int = TGT_VOCAB, emb: int = 8, hidden: int = 8) -> None:
        super().__init__()
        self.encoder = Encoder(src_vocab, emb, hidden)
        self.decoder = LuongDecoder(tgt_vocab, emb, hidden)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        enc, h = self.encoder(src)
        logits = []
        for t in range(tgt_in.shape[1]):  # teacher forcing: the decoder reads the gold previous token
            step_logits, h = self.decoder.step(tgt_in[:, t], h, enc)
            logits.append(step_logits)
        return torch.stack(logits, dim=1).reshape(-1, self.decoder.out.out_features)  # (B * T, vocab)


def build(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = Seq2Seq().eval()
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, SRC_VOCAB, (2, 4), generator=gen, dtype=torch.int64)
    tgt = torch.randint(1, TGT_VOCAB, (2, 3), generator=gen, dtype=torch.int64)
    tgt_in = torch.cat([torch.full((2, 1), BOS, dtype=torch.int64), tgt[:, :-1]], dim=1)  # shifted right
    return module, (src, tgt_in), tgt.reshape(-1)
