"""`scaled_dot_product_attention` as pcsim decomposes it: two batched matrix products around a softmax.

torch's own decomposition (`_scaled_dot_product_attention_math`) scales the queries and the keys
separately, runs `_safe_softmax` (which tests every row for all `-inf`, on CPU as costly as the
softmax itself) even where nothing is masked, and returns its output through two layout copies.
As PC populations each of those is a vertex with an error. Here the attention is what a
researcher writes, `softmax(q k^T * scale + mask) v`, with the safe softmax only where a mask can
empty a row, and the output in the fused kernel's layout (the query's), which model code that
`view`s it relies on. Dropout runs as the identity, as everywhere in pcsim.
"""

from __future__ import annotations

import math

import torch

aten = torch.ops.aten


def attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    *batch, length, dim = query.shape
    source, dim_v = key.size(-2), value.size(-1)
    if enable_gqa and key.dim() >= 3 and key.size(-3) != query.size(-3):  # grouped-query: share each k/v head
        repeat = query.size(-3) // key.size(-3)
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    q = (query * scale).reshape(-1, length, dim)
    k = _broadcast(key, batch).reshape(-1, source, dim)
    v = _broadcast(value, batch).reshape(-1, source, dim_v)
    scores = torch.bmm(q, k.transpose(1, 2)).view(*batch, length, source)
    masked = is_causal or attn_mask is not None
    if is_causal:
        keep = torch.ones(length, source, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(keep.logical_not(), float("-inf"))
    if attn_mask is not None:
        scores = (scores.masked_fill(attn_mask.logical_not(), float("-inf")) if attn_mask.dtype == torch.bool
                  else scores + attn_mask)
    # a fully masked row is all -inf: the safe softmax gives it zeros, as torch's kernels do, not NaN
    weights = aten._safe_softmax(scores, -1) if masked else torch.softmax(scores, -1)
    out = torch.bmm(weights.reshape(-1, length, source), v)
    return _in_layout_of(out.view(*batch, length, dim_v), query)


def _in_layout_of(out, query):
    """`out` in the query's memory layout, as torch's attention kernels allocate it (export traced their
    strides, and model code relies on them: Hugging Face's GPT-2 `view`s the transposed output)."""
    order = sorted(range(query.dim()), key=lambda d: -query.stride(d))  # outermost dimension first
    if order == list(range(query.dim())):
        return out
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return out.permute(order).contiguous().permute(inverse)


def _broadcast(x, batch: list[int]):
    """`x` with the query's leading dimensions (SDPA broadcasts them); untouched where it has them."""
    return x if list(x.shape[:-2]) == list(batch) else x.expand(*batch, *x.shape[-2:])


DECOMPOSITIONS = {aten.scaled_dot_product_attention.default: attention}
