"""Library of small architectures for the equivalence tests (not itself a test module).

ARCHS maps a name to a builder `(dtype, loss) -> (module, inputs, target)`:
  * module is in `dtype` and in eval mode (BatchNorm uses its random running stats);
  * inputs is a tuple with one tensor per forward argument, in `dtype` (token indices stay int64);
  * target is a `dtype` tensor of the output shape (BATCH, N_OUT) for loss "mse",
    or int64 class indices of shape (BATCH,) for loss "ce" (the output is then logits).
Everything is seeded per arch, so a float32 and a float64 build hold the same values up to rounding.
Plain PyTorch only, written to be torch.fx-traceable (loops over fixed Python ints).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BATCH = 4
N_OUT = 4  # output width: regression targets for "mse", number of classes for "ce"
LOSSES = ("mse", "ce")
Builder = Callable[[torch.dtype, str], tuple[nn.Module, tuple[Tensor, ...], Tensor]]


class SeqMLP(nn.Module):
    """5-7-6-4 MLP with activation *modules* inside an nn.Sequential."""

    def __init__(self, act: type[nn.Module], bias: bool) -> None:
        super().__init__()
        layers = [nn.Linear(5, 7, bias=bias), act(), nn.Linear(7, 6, bias=bias), act()]
        self.net = nn.Sequential(*layers, nn.Linear(6, N_OUT, bias=bias))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class FnMLP(nn.Module):
    """5-7-6-4 MLP with activations applied as *functions* (torch.tanh, F.relu, ...)."""

    def __init__(self, act: Callable[[Tensor], Tensor], bias: bool) -> None:
        super().__init__()
        self.act = act
        self.fc1, self.fc2 = nn.Linear(5, 7, bias=bias), nn.Linear(7, 6, bias=bias)
        self.fc3 = nn.Linear(6, N_OUT, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


class CNNPools(nn.Module):
    """(B,2,8,8): Conv2d -> ReLU -> MaxPool2d -> Conv2d -> Tanh -> AvgPool2d -> Flatten -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # -> (4, 4, 4)
            nn.Conv2d(4, 6, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),  # -> (6, 2, 2)
            nn.Flatten(), nn.Linear(24, N_OUT),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Conv1dNet(nn.Module):
    """(B,3,10): Conv1d(pad 1) -> GELU -> Conv1d(stride 2) -> SiLU -> flatten -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(3, 4, 3, padding=1), nn.Conv1d(4, 5, 3, stride=2)  # 10 -> 10 -> 4
        self.act1, self.act2 = nn.GELU(), nn.SiLU()
        self.head = nn.Linear(5 * 4, N_OUT)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.act2(self.conv2(self.act1(self.conv1(x)))).flatten(1))


class CellRNN(nn.Module):
    """(B,T,3): one nn.RNNCell or nn.GRUCell applied at all T steps; h0 = tanh(Linear(x_0)), no zeros."""

    def __init__(self, cell: type[nn.Module], steps: int, n_in: int = 3, hidden: int = 5) -> None:
        super().__init__()
        self.steps = steps
        self.init_state = nn.Linear(n_in, hidden)
        self.cell = cell(n_in, hidden)
        self.head = nn.Linear(hidden, N_OUT)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.init_state(x[:, 0]))
        for t in range(self.steps):
            h = self.cell(x[:, t], h)
        return self.head(h)


class RNNManual(nn.Module):
    """(B,5,3): Elman RNN by hand, h_t = tanh(W_ih x_t + W_hh h_{t-1}); h_{-1} = 0, so step 0 skips W_hh."""

    def __init__(self, steps: int = 5, n_in: int = 3, hidden: int = 5) -> None:
        super().__init__()
        self.steps = steps
        self.ih, self.hh = nn.Linear(n_in, hidden), nn.Linear(hidden, hidden, bias=False)
        self.head = nn.Linear(hidden, N_OUT)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.ih(x[:, 0]))
        for t in range(1, self.steps):
            h = torch.tanh(self.ih(x[:, t]) + self.hh(h))
        return self.head(h)


class LSTMNet(nn.Module):
    """(B,4,3): one nn.LSTMCell applied at all 4 steps; (h0, c0) computed from x_0."""

    def __init__(self, steps: int = 4, n_in: int = 3, hidden: int = 4) -> None:
        super().__init__()
        self.steps = steps
        self.init_h, self.init_c = nn.Linear(n_in, hidden), nn.Linear(n_in, hidden)
        self.cell = nn.LSTMCell(n_in, hidden)
        self.head = nn.Linear(hidden, N_OUT)

    def forward(self, x: Tensor) -> Tensor:
        h, c = torch.tanh(self.init_h(x[:, 0])), self.init_c(x[:, 0])
        for t in range(self.steps):
            h, c = self.cell(x[:, t], (h, c))
        return self.head(h)


class LSTMManual(nn.Module):
    """(B,4,3): LSTM by hand with gates chunked i, f, g, o; zero initial state, so step 0 skips hh."""

    def __init__(self, steps: int = 4, n_in: int = 3, hidden: int = 4) -> None:
        super().__init__()
        self.steps = steps
        self.ih, self.hh = nn.Linear(n_in, 4 * hidden), nn.Linear(hidden, 4 * hidden)
        self.head = nn.Linear(hidden, N_OUT)

    def forward(self, x: Tensor) -> Tensor:
        i, _, g, o = self.ih(x[:, 0]).chunk(4, dim=1)  # c_{-1} = 0: the forget gate has nothing to act on
        c = torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        for t in range(1, self.steps):
            gates = self.ih(x[:, t]) + self.hh(h)
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return self.head(h)


class ResidualMLP(nn.Module):
    """(B,5): h = relu(W x); y = relu(h + lin2(relu(lin1(h)))) skips two levels; Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.lin1, self.lin2 = nn.Linear(5, 6), nn.Linear(6, 7), nn.Linear(7, 6)
        self.head = nn.Linear(6, N_OUT)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.inp(x))
        y = F.relu(h + self.lin2(F.relu(self.lin1(h))))
        return self.head(y)


class ResNetConvBlock(nn.Module):
    """(B,3,6,6): stem conv-ReLU, then conv-BN-ReLU-conv-BN + skip -> ReLU, global avg pool, Linear."""

    def __init__(self, ch: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, ch, 3, padding=1)
        self.conv1, self.bn1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch)
        self.conv2, self.bn2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch)
        self.pool, self.head = nn.AdaptiveAvgPool2d(1), nn.Linear(ch, N_OUT)

    def forward(self, x: Tensor) -> Tensor:
        s = torch.relu(self.stem(x))
        y = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(s))))) + s)
        return self.head(self.pool(y).flatten(1))


class Attention(nn.Module):
    """(B,4,6): single-head self-attention + LayerNorm, GELU feed-forward + LayerNorm, mean over seq, head."""

    def __init__(self, d: int = 6, d_ff: int = 8) -> None:
        super().__init__()
        self.q, self.k, self.v, self.proj = (nn.Linear(d, d) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff_act, self.ff2 = nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d)
        self.head = nn.Linear(d, N_OUT)
        self.sqrt_d = math.sqrt(d)  # a Python float, so fx records it as a constant

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        attn = torch.softmax(q @ k.transpose(-2, -1) / self.sqrt_d, dim=-1)
        h = self.norm1(x + self.proj(attn @ v))
        h = self.norm2(h + self.ff2(self.ff_act(self.ff1(h))))
        return self.head(h.mean(1))


class EmbeddingMLP(nn.Module):
    """(B,3) int64 tokens < 10: Embedding(10, 5) -> flatten -> Linear -> Tanh -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 5)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(15, 6), nn.Tanh(), nn.Linear(6, N_OUT))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.net(self.embed(tokens))


class BatchNorm1dMLP(nn.Module):
    """(B,5): Linear -> BatchNorm1d (eval, random running stats, affine) -> ReLU -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, N_OUT))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MultiOps(nn.Module):
    """(B,6): a grab-bag of tensor ops (sub/div/neg/mul of vertices, cat/stack/split, exp/sqrt, bmm, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin_a, self.lin_b = nn.Linear(6, 4), nn.Linear(6, 4)
        self.leaky = nn.LeakyReLU(0.1)
        self.softmax, self.log_softmax = nn.Softmax(dim=-1), nn.LogSoftmax(dim=-1)
        self.head = nn.Linear(4 + 8 + 4, N_OUT)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.lin_a(x), self.lin_b(x)  # (B, 4) each
        ratio = (a - b) / torch.sqrt(b * b + 1.0)  # sub, div; sqrt of something >= 1
        decay = torch.exp(-(a * b))  # mul of two vertices, neg, exp
        first, second = torch.cat([ratio, decay], dim=1).split(4, dim=1)
        stacked = torch.stack([first, second], dim=1)  # (B, 2, 4)
        weights = self.softmax(torch.bmm(stacked, stacked.transpose(1, 2)))  # (B, 2, 2)
        mixed = torch.bmm(weights, stacked)  # (B, 2, 4)
        pooled = mixed.permute(0, 2, 1).sum(dim=2)  # (B, 4)
        logp = self.log_softmax(self.leaky(pooled.unsqueeze(1))).squeeze(1)  # (B, 4)
        return self.head(torch.cat([pooled, mixed.view(-1, 8), logp], dim=1))


def _random_bn_stats(module: nn.Module, gen: torch.Generator) -> nn.Module:
    """Give every BatchNorm non-trivial running stats and affine params (eval mode then matters)."""
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                n = bn.num_features
                bn.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                bn.running_var.copy_(0.5 + torch.rand(n, generator=gen))  # strictly positive
                bn.weight.copy_(1.0 + 0.3 * torch.randn(n, generator=gen))
                bn.bias.copy_(0.1 * torch.randn(n, generator=gen))
    return module


def _arch(seed: int, make: Callable[[], nn.Module], input_shape: tuple[int, ...], tokens: int = 0) -> Builder:
    """Builder for `make()`: inputs (BATCH, *input_shape), Gaussian or int64 tokens in [0, tokens)."""

    def build(dtype: torch.dtype, loss: str) -> tuple[nn.Module, tuple[Tensor, ...], Tensor]:
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # default init, seeded, caller's RNG untouched
            torch.manual_seed(seed)
            module = _random_bn_stats(make(), gen)
        # built in float32 then cast, so float32 and float64 builds agree up to rounding
        module = module.to(dtype).eval()
        if tokens:
            x = torch.randint(0, tokens, (BATCH, *input_shape), generator=gen, dtype=torch.int64)
        else:
            x = torch.randn((BATCH, *input_shape), generator=gen).to(dtype)
        if loss == "mse":
            target = torch.randn((BATCH, N_OUT), generator=gen).to(dtype)
        else:
            target = torch.randint(0, N_OUT, (BATCH,), generator=gen, dtype=torch.int64)
        return module, (x,), target

    return build


ARCHS: dict[str, Builder] = {
    "mlp_tanh_bias": _arch(101, lambda: SeqMLP(nn.Tanh, bias=True), (5,)),
    "mlp_sigmoid_nobias": _arch(102, lambda: FnMLP(torch.sigmoid, bias=False), (5,)),
    "mlp_relu_bias": _arch(103, lambda: SeqMLP(nn.ReLU, bias=True), (5,)),
    "mlp_relu_nobias": _arch(104, lambda: FnMLP(F.relu, bias=False), (5,)),
    "mlp_tanh_nobias": _arch(105, lambda: FnMLP(torch.tanh, bias=False), (5,)),
    "mlp_sigmoid_bias": _arch(106, lambda: SeqMLP(nn.Sigmoid, bias=True), (5,)),
    "cnn_pools": _arch(201, CNNPools, (2, 8, 8)),
    "conv1d": _arch(202, Conv1dNet, (3, 10)),
    "rnn_shared": _arch(301, lambda: CellRNN(nn.RNNCell, steps=5), (5, 3)),
    "rnn_manual": _arch(302, RNNManual, (5, 3)),
    "lstm": _arch(303, LSTMNet, (4, 3)),
    "lstm_manual": _arch(304, LSTMManual, (4, 3)),
    "gru": _arch(305, lambda: CellRNN(nn.GRUCell, steps=4), (4, 3)),
    "residual_block": _arch(401, ResidualMLP, (5,)),
    "resnet_conv_block": _arch(402, ResNetConvBlock, (3, 6, 6)),
    "attention": _arch(501, Attention, (4, 6)),
    "embedding_mlp": _arch(601, EmbeddingMLP, (3,), tokens=10),
    "batchnorm1d_mlp": _arch(602, BatchNorm1dMLP, (5,)),
    "multi_ops": _arch(701, MultiOps, (6,)),
}

# Archs whose graph contains an nn.RNNCell / nn.LSTMCell / nn.GRUCell call (plain fx keeps them as leaves).
RECURRENT_CELL_ARCHS = frozenset({"rnn_shared", "lstm", "gru"})
