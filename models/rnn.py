"""Many-to-one Elman RNN regressor: one nn.RNNCell unrolled over a fixed sequence length.

Plain PyTorch; `build()` returns a deterministic (model, inputs, target) triple.
"""

from __future__ import annotations

import torch
from torch import nn

LOSS = "mse"


class ManyToOneRNN(nn.Module):
    """Reads a (batch, seq_len, input_size) sequence and regresses n_out values from the last state.

    The same nn.RNNCell (shared weights) is applied at every step; the loop runs over
    the fixed `seq_len` given at construction, so the graph is static and fx-traceable.
    The initial hidden state is a learned function of the first input
    (h0 = tanh(W0 x_0 + b0)) rather than zeros, which avoids building a
    batch-size-dependent zero tensor.
    """

    def __init__(self, seq_len: int = 10, input_size: int = 5, hidden_size: int = 8, n_out: int = 3) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.init_state = nn.Linear(input_size, hidden_size)
        self.cell = nn.RNNCell(input_size, hidden_size, nonlinearity="tanh")
        self.head = nn.Linear(hidden_size, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.init_state(x[:, 0]))
        for t in range(self.seq_len):
            h = self.cell(x[:, t], h)
        return self.head(h)


def build(
    seed: int = 0,
    *,
    input_shape: tuple[int, int] = (10, 5),
    hidden_size: int = 8,
    n_out: int = 3,
    n_classes: int | None = None,
    batch: int = 8,
) -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
    """Build the RNN with random sequences and random real-valued targets.

    Dims:
        input_shape: per-sample shape (seq_len, input_size); default (10, 5).
        hidden_size: width of the recurrent state (default 8).
        n_out:       number of regression outputs (default 3).
        n_classes:   alias for n_out, so generic training code can size the head;
                     the loss stays MSE (use one-hot targets for classification data).
        batch:       number of sequences in the returned inputs (default 8).

    Returns (model, (x,), y): x of shape (batch, seq_len, input_size) and y of shape
    (batch, n_out), both in the default dtype.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 2:
        raise ValueError(f"rnn needs input_shape=(seq_len, input_size), got {input_shape}")
    if n_classes is not None:
        n_out = n_classes
    seq_len, input_size = input_shape
    with torch.random.fork_rng(devices=[]):  # seed the default init without touching the caller's RNG
        torch.manual_seed(seed)
        model = ManyToOneRNN(seq_len, input_size, hidden_size, n_out)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.get_default_dtype()
    x = torch.randn((batch, seq_len, input_size), generator=gen, dtype=dtype)
    y = torch.randn((batch, n_out), generator=gen, dtype=dtype)
    return model, (x,), y
