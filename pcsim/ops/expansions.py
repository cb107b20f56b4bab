"""Composite `torch.nn` modules rewritten into elementary calls at fx-trace time.

An expansion runs on fx proxies in place of the module's own forward, so PC sees one vertex per
gate, projection, score and softmax instead of one opaque module. Each expansion takes
`(module, scope, *args, **kwargs)` like the module's forward and returns what the module
returns, in the same structure. `scope(attr)` gives the proxy of one of the module's parameters
(None when absent); `scope.example` maps the forward's argument names to the shapes of the
tensors the module received when it was run on the example inputs (recorded for the types in
`NEEDS_EXAMPLE` only: an unrolled recurrence needs its sequence length, which a proxy lacks).

Dropout runs as the identity (eval semantics), as everywhere in pcsim; a module that would
drop values (training mode, dropout > 0) is refused rather than silently changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from pcsim.errors import UnsupportedOpError


class Scope(Protocol):
    """What an expansion may ask of the tracer."""

    example: dict[str, tuple[int, ...]]  # forward argument name -> shape of the example's tensor

    def __call__(self, attr: str) -> Any: ...  # the parameter's proxy, or None when absent


# -- one time step of each recurrence, on proxies; h = None means the zero initial state ------------
def _rnn_step(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity: str):
    pre = F.linear(x, w_ih, b_ih)
    if h is not None:
        pre = pre + F.linear(h, w_hh, b_hh)
    elif b_hh is not None:
        pre = pre + b_hh  # h = 0: only the recurrent bias remains
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def _lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr=None):
    gates = F.linear(x, w_ih, b_ih)
    if h is not None:
        gates = gates + F.linear(h, w_hh, b_hh)
    elif b_hh is not None:
        gates = gates + b_hh
    i, f, g, o = gates.chunk(4, -1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = i * g if c is None else f * c + i * g  # c = 0: the forget gate has nothing to act on
    h = o * torch.tanh(c)
    return (h if w_hr is None else F.linear(h, w_hr)), c


def _gru_step(x, h, w_ih, w_hh, b_ih, b_hh):
    i_r, i_z, i_n = F.linear(x, w_ih, b_ih).chunk(3, -1)
    if h is None:
        if b_hh is None:
            z, n = torch.sigmoid(i_z), torch.tanh(i_n)
            return n - z * n
        h_r, h_z, h_n = b_hh.chunk(3, 0)
    else:
        h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, -1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n - z * n if h is None else n + z * (h - n)  # (1 - z) n + z h


# -- the cells: one step --------------------------------------------------------------------------
def _rnn_cell(m: nn.RNNCell, p: Scope, x, hx=None):
    return _rnn_step(x, hx, p("weight_ih"), p("weight_hh"), p("bias_ih"), p("bias_hh"), m.nonlinearity)


def _lstm_cell(m: nn.LSTMCell, p: Scope, x, hx=None):
    h, c = (None, None) if hx is None else hx
    return _lstm_step(x, h, c, p("weight_ih"), p("weight_hh"), p("bias_ih"), p("bias_hh"))


def _gru_cell(m: nn.GRUCell, p: Scope, x, hx=None):
    return _gru_step(x, hx, p("weight_ih"), p("weight_hh"), p("bias_ih"), p("bias_hh"))


# -- nn.RNN / nn.LSTM / nn.GRU: unrolled over the example's sequence length ------------------------
def refuse_dropout_between_layers(m: nn.RNNBase) -> None:
    """A stacked recurrent layer in training mode with dropout would drop values; pcsim never does."""
    if m.dropout > 0 and m.num_layers > 1 and m.training:
        raise UnsupportedOpError(f"{type(m).__name__}(dropout={m.dropout}) in training mode drops values between "
                                 "layers; pcsim runs dropout as the identity: call .eval() on the module first")


def _recurrent(m: nn.RNNBase, p: Scope, input, hx=None):
    name = type(m).__name__
    shape = p.example.get("input")
    if shape is None:
        raise UnsupportedOpError(f"{name} must receive a tensor (a PackedSequence is not supported)")
    if len(shape) not in (2, 3):
        raise UnsupportedOpError(f"{name} input must be 2-D or 3-D, got shape {shape}")
    refuse_dropout_between_layers(m)
    batched = len(shape) == 3
    time_dim = 1 if (batched and m.batch_first) else 0
    steps = shape[time_dim]
    is_lstm = isinstance(m, nn.LSTM)
    h0, c0 = (hx if hx is not None else (None, None)) if is_lstm else (hx, None)
    xs = [input[t] if time_dim == 0 else input[:, t] for t in range(steps)]
    dirs = 2 if m.bidirectional else 1
    h_n, c_n = [], []
    for layer in range(m.num_layers):
        per_dir = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh, b_ih, b_hh = (p(f"{a}{sfx}") for a in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            k = layer * dirs + d
            h = None if h0 is None else h0[k]
            c = None if c0 is None else c0[k]
            hs: list[Any] = [None] * steps
            for t in (range(steps) if d == 0 else reversed(range(steps))):
                if is_lstm:
                    h, c = _lstm_step(xs[t], h, c, w_ih, w_hh, b_ih, b_hh, p(f"weight_hr{sfx}"))
                elif isinstance(m, nn.GRU):
                    h = _gru_step(xs[t], h, w_ih, w_hh, b_ih, b_hh)
                else:
                    h = _rnn_step(xs[t], h, w_ih, w_hh, b_ih, b_hh, m.nonlinearity)
                hs[t] = h
            per_dir.append(hs)
            h_n.append(h)
            c_n.append(c)
        xs = per_dir[0] if dirs == 1 else [torch.cat([f, b], -1) for f, b in zip(*per_dir, strict=True)]
    output = torch.stack(xs, time_dim)
    h_n = torch.stack(h_n, 0)
    if not is_lstm:
        return output, h_n
    return output, (h_n, torch.stack(c_n, 0))


# -- attention --------------------------------------------------------------------------------------
@torch.fx.wrap
def attention_softmax(scores: torch.Tensor, attn_mask: torch.Tensor | None = None,
                      key_padding_mask: torch.Tensor | None = None, heads: int = 1) -> torch.Tensor:
    """softmax(scores + mask) over the keys, with torch's mask conventions (bool True = masked out).

    One vertex: the masked scores (which may hold -inf) are never a population of their own.
    scores: (N * heads, L, S); attn_mask: (L, S) or (N * heads, L, S); key_padding_mask: (N, S).
    """
    def additive(mask):
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=scores.dtype).masked_fill(mask, float("-inf"))
        return mask.to(scores.dtype)

    if attn_mask is not None:
        scores = scores + additive(attn_mask)
    if key_padding_mask is not None:
        n, s = key_padding_mask.shape
        pad = additive(key_padding_mask).view(n, 1, 1, s).expand(n, heads, 1, s).reshape(n * heads, 1, s)
        scores = scores + pad
    return torch.softmax(scores, dim=-1)


def _multihead_attention(m: nn.MultiheadAttention, p: Scope, query, key, value, key_padding_mask=None,
                         need_weights: bool = True, attn_mask=None, average_attn_weights: bool = True,
                         is_causal: bool = False):
    if m.bias_k is not None or m.add_zero_attn:
        raise UnsupportedOpError("MultiheadAttention with add_bias_kv=True or add_zero_attn=True")
    if m.dropout > 0 and m.training:
        raise UnsupportedOpError(f"MultiheadAttention(dropout={m.dropout}) in training mode drops attention "
                                 "weights; pcsim runs dropout as the identity: call .eval() on the module first")
    batched = len(p.example.get("query", (0, 0, 0))) == 3
    self_attention = query is key and key is value
    inputs = (query,) if self_attention else (query, key, value)
    if not batched:  # (L, E): a batch of one in the middle, removed at the end
        inputs = tuple(t.unsqueeze(1) for t in inputs)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    elif m.batch_first:  # (N, L, E) -> (L, N, E)
        inputs = tuple(t.transpose(1, 0) for t in inputs)
    query, key, value = inputs * 3 if self_attention else inputs
    q, k, v = _project(m, p, query, key, value, self_attention)
    tgt, batch, src = query.size(0), query.size(1), key.size(0)  # folded to ints by the builder
    return _attend(m, q, k, v, tgt, batch, src, batched, need_weights, average_attn_weights, attn_mask,
                   key_padding_mask)


def _project(m: nn.MultiheadAttention, p: Scope, query, key, value, self_attention: bool):
    """q, k, v: one packed projection then a split for self-attention, three projections otherwise."""
    if m._qkv_same_embed_dim and self_attention:
        return F.linear(query, p("in_proj_weight"), p("in_proj_bias")).chunk(3, -1)
    b_q = b_k = b_v = None
    if m.in_proj_bias is not None:
        b_q, b_k, b_v = p("in_proj_bias").chunk(3)
    if m._qkv_same_embed_dim:
        w_q, w_k, w_v = p("in_proj_weight").chunk(3)
    else:
        w_q, w_k, w_v = p("q_proj_weight"), p("k_proj_weight"), p("v_proj_weight")
    return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)


def _attend(m: nn.MultiheadAttention, q, k, v, tgt, batch, src, batched: bool, need_weights: bool,
            average_attn_weights: bool, attn_mask, key_padding_mask):
    """Projected q, k, v of shape (L, N, E) -> attention output (and weights) as torch returns them."""
    heads, embed = m.num_heads, m.embed_dim
    head_dim = embed // heads
    # (L, N, E) -> (N * heads, L, head_dim)
    q = q.reshape(tgt, batch * heads, head_dim).transpose(0, 1)
    k = k.reshape(src, batch * heads, head_dim).transpose(0, 1)
    v = v.reshape(src, batch * heads, head_dim).transpose(0, 1)
    scores = torch.bmm(q * (1.0 / math.sqrt(head_dim)), k.transpose(1, 2))
    if attn_mask is None and key_padding_mask is None:
        weights = torch.softmax(scores, dim=-1)
    else:
        weights = attention_softmax(scores, attn_mask, key_padding_mask, heads)
    out = torch.bmm(weights, v).transpose(0, 1).reshape(tgt, batch, embed)
    out = m.out_proj(out)
    if not batched:
        out = out.squeeze(1)
    elif m.batch_first:
        out = out.transpose(1, 0)
    if not need_weights:
        return out, None
    weights = weights.view(batch, heads, tgt, src)
    if average_attn_weights:
        weights = weights.mean(dim=1)
    return out, (weights.squeeze(0) if not batched else weights)


def _encoder_layer(m: nn.TransformerEncoderLayer, p: Scope, src, src_mask=None, src_key_padding_mask=None,
                   is_causal: bool = False):
    def self_attention(x):
        out = m.self_attn(x, x, x, attn_mask=src_mask, key_padding_mask=src_key_padding_mask,
                          need_weights=False)[0]
        return m.dropout1(out)

    def feed_forward(x):
        return m.dropout2(m.linear2(m.dropout(m.activation(m.linear1(x)))))

    x = src
    if m.norm_first:
        x = x + self_attention(m.norm1(x))
        return x + feed_forward(m.norm2(x))
    x = m.norm1(x + self_attention(x))
    return m.norm2(x + feed_forward(x))


def _encoder(m: nn.TransformerEncoder, p: Scope, src, mask=None, src_key_padding_mask=None, is_causal=None):
    out = src
    for layer in m.layers:
        out = layer(out, src_mask=mask, src_key_padding_mask=src_key_padding_mask)
    return out if m.norm is None else m.norm(out)


MODULE_EXPANSIONS: dict[type, Callable[..., Any]] = {
    nn.RNNCell: _rnn_cell,
    nn.LSTMCell: _lstm_cell,
    nn.GRUCell: _gru_cell,
    nn.RNN: _recurrent,
    nn.LSTM: _recurrent,
    nn.GRU: _recurrent,
    nn.MultiheadAttention: _multihead_attention,
    nn.TransformerEncoderLayer: _encoder_layer,
    nn.TransformerEncoder: _encoder,
}
# Expansions that need the shapes of their example call (`scope.example`).
NEEDS_EXAMPLE: frozenset[type] = frozenset({nn.RNN, nn.LSTM, nn.GRU, nn.MultiheadAttention})
