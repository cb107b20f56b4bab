"""A small LSTM for training tests: an image's rows as a sequence, the last hidden state classified."""

import torch
from torch import nn

LOSS = "ce"


class RowLSTM(nn.Module):
    def __init__(self, rows: int, width: int, hidden: int, n_classes: int):
        super().__init__()
        self.rows, self.width = rows, width
        self.lstm = nn.LSTM(width, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x):
        _, (h_n, _) = self.lstm(x.reshape(-1, self.rows, self.width))
        return self.head(h_n[-1])


def build(seed: int = 0, input_shape=(1, 8, 8), n_classes=10, hidden=16, batch=8):
    torch.manual_seed(seed)
    module = RowLSTM(input_shape[-2], input_shape[0] * input_shape[-1], hidden, n_classes)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, *input_shape), generator=g)
    return module, (x,), torch.randint(0, n_classes, (batch,), generator=g)
