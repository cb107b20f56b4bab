"""nn.RNN / nn.LSTM / nn.GRU unrolled one time step at a time: pcsim's decomposition of their ATen calls.

torch's own decomposition projects the whole input sequence at once (one `linear` over every step,
then a slice per step) and feeds a stacked layer into the next. Exact, and one kernel in backprop,
but in a PC graph every step of the next layer then depends on the stack of *all* steps below: the
levelled graph needs an identity chain from each early step up to it. Here each step's input
projection reads that step alone, and a layer hands its steps to the next one by one; the stacked
`output` is built once, for the model.
`trace(fused=...)` keeps the ATen call whole instead.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

aten = torch.ops.aten


def _weights(params, has_biases: bool, per: int):
    """The flat weight list as (w_ih, w_hh, b_ih, b_hh, w_hr) per layer and direction."""
    out = []
    for i in range(0, len(params), per):
        w_ih, w_hh, *rest = params[i:i + per]
        b_ih, b_hh = (rest[0], rest[1]) if has_biases else (None, None)
        out.append((w_ih, w_hh, b_ih, b_hh, rest[-1] if len(rest) in (1, 3) else None))
    return out


def _step(kind: str, x, h, c, w):
    w_ih, w_hh, b_ih, b_hh, w_hr = w
    if kind == "gru":
        i_r, i_z, i_n = F.linear(x, w_ih, b_ih).chunk(3, 1)
        h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, 1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return n + z * (h - n), None
    pre = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    if kind != "lstm":  # rnn_tanh, rnn_relu
        return (torch.tanh if kind == "rnn_tanh" else torch.relu)(pre), None
    i, f, g, o = pre.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return (h if w_hr is None else F.linear(h, w_hr)), c


def _unrolled(kind: str, input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    time_dim = 1 if batch_first else 0
    dirs = 2 if bidirectional else 1
    h0, c0 = (hx[0], hx[1]) if kind == "lstm" else (hx, None)
    proj = kind == "lstm" and h0.size(-1) != c0.size(-1)
    per = (4 if has_biases else 2) + (1 if proj else 0)
    weights = _weights(list(params), has_biases, per)
    xs = list(input.unbind(time_dim))
    h_n, c_n = [], []
    for layer in range(num_layers):
        per_dir = []
        for d in range(dirs):
            k = layer * dirs + d
            h, c = h0[k], None if c0 is None else c0[k]
            outs = [None] * len(xs)
            for t in (range(len(xs)) if d == 0 else reversed(range(len(xs)))):
                h, c = _step(kind, xs[t], h, c, weights[k])
                outs[t] = h
            per_dir.append(outs)
            h_n.append(h)
            c_n.append(c)
        xs = per_dir[0] if dirs == 1 else [torch.cat(pair, -1) for pair in zip(*per_dir, strict=True)]
    output = torch.stack(xs, time_dim)
    if kind == "lstm":
        return output, torch.stack(h_n, 0), torch.stack(c_n, 0)
    return output, torch.stack(h_n, 0)


UNROLLED = {getattr(aten, kind).input: functools.partial(_unrolled, kind)
            for kind in ("lstm", "gru", "rnn_tanh", "rnn_relu")}
