"""Linear layers, convolutions and average pooling as synapses (`Edge`s and `Offset`s: synapses.py), and
`edges_of`, which sends every op to its renderer by the op table's `brian2` kind: activations.py and maps.py
render the other synaptic kinds, circuits.py what needs helper neurons. Anything else raises UnsupportedOpError
naming the vertex and why it has no synaptic form.
"""

from __future__ import annotations

import numpy as np

from pcsim.backends.brian2.activations import _activation
from pcsim.backends.brian2.maps import _affine, _embedding, _index_map, _linear_map, one_hot_rows
from pcsim.backends.brian2.synapses import (
    PRODUCT,
    WHY,
    Weight,
    bind,
    edge,
    ints,
    single_parent,
    size,
    unsupported,
    weight_of,
)
from pcsim.graph.ir import Vertex
from pcsim.ops.local import call
from pcsim.ops.table import ENTRIES, entry


def _linear(vertex, shapes, params, constants, values=None):
    a = bind(vertex, ("input", "weight", "bias"), {"bias": None})
    single_parent(vertex, a["input"])
    W = weight_of(vertex, a["weight"], params, constants, "weight")
    b = weight_of(vertex, a["bias"], params, constants, "bias")
    return _dense(vertex, shapes, W, b)


def _addmm(vertex, shapes, params, constants, values=None):
    """addmm(bias, x, W) of a population x and a parameter W (Hugging Face's Conv1D): the linear layer whose
    weight is W^T, each synapse keeping its entry's index into W. A population as W or bias is refused."""
    a = bind(vertex, ("self", "mat1", "mat2"), {"beta": 1, "alpha": 1})
    if a["beta"] != 1 or a["alpha"] != 1:
        raise unsupported(vertex, f"addmm scaled by beta = {a['beta']}, alpha = {a['alpha']}; {WHY}")
    W = weight_of(vertex, a["mat2"], params, constants, "weight")  # first: a product of two populations says so
    b = weight_of(vertex, a["self"], params, constants, "bias")
    single_parent(vertex, a["mat1"])
    if W.value.dim() != 2:
        raise unsupported(vertex, f"addmm with a weight of shape {tuple(W.value.shape)}; {WHY}")
    index = W.index.reshape(tuple(W.value.shape)).T.reshape(-1)
    return _dense(vertex, shapes, Weight(W.value.t().contiguous(), W.param, index), b)


def _dense(vertex, shapes, W, b):
    """Synapses of x W^T + b, W of shape (outputs, inputs), on the last dimension of the one parent."""
    (shape_in,) = shapes
    if W.value.dim() != 2 or shape_in[-1] != W.value.shape[1]:
        raise unsupported(vertex, f"weight of shape {tuple(W.value.shape)} on input {shape_in}")
    n_out, n_in = W.value.shape
    lead = size(shape_in[:-1])
    # Synapses in diagonal order: (out o, in (o + d) mod n_in) for d = 0, 1, ...; consecutive synapses
    # then differ in both their pre- and post-synaptic neuron, so neither summed variable's loop
    # adds into the same neuron twice in a row (a store-to-load stall per synapse otherwise).
    rows = np.arange(lead, dtype=np.int64)[:, None, None]
    o = np.arange(n_out, dtype=np.int64)[None, None, :]
    c = (o + np.arange(n_in, dtype=np.int64)[None, :, None]) % n_in
    shape = (lead, n_in, n_out)
    i = np.broadcast_to(rows * n_in + c, shape).reshape(-1)
    j = np.broadcast_to(rows * n_out + o, shape).reshape(-1)
    k = np.broadcast_to(o * n_in + c, shape).reshape(-1)
    if b is not None and b.value.numel() not in (n_out, lead * n_out):
        raise unsupported(vertex, f"a bias of shape {tuple(b.value.shape)} on an output of shape {vertex.shape}")
    per_neuron = np.arange(lead * n_out, dtype=np.int64)  # a bias of one row repeats it on every row
    return [W.edge(i, j, k)], b.offsets(per_neuron % b.value.numel()) if b else []


CONV = ("input", "weight", "bias", "stride", "padding", "dilation")
CONV_ARGS = {  # op -> (argument names, defaults)
    **dict.fromkeys(("conv1d", "conv2d"), ((*CONV, "groups"), {"bias": None, "stride": 1, "padding": 0,
                                                                "dilation": 1, "groups": 1})),
    "convolution": ((*CONV, "transposed", "output_padding", "groups"), {"bias": None}),
}


def _conv(vertex, shapes, params, constants, values=None):
    """conv1d, conv2d and aten.convolution (1-d or 2-d, plain or transposed): one synapse per (sample,
    kernel tap, input position, output position) pair the kernel connects, each with its kernel entry.
    A 1-d convolution is wired as a 2-d one of height 1."""
    names, defaults = CONV_ARGS[vertex.op]
    a = bind(vertex, names, defaults)
    single_parent(vertex, a["input"])
    W = weight_of(vertex, a["weight"], params, constants, "weight")
    b = weight_of(vertex, a["bias"], params, constants, "bias")
    (shape_in,) = shapes
    dims = W.value.dim() - 2
    if dims not in (1, 2) or len(shape_in) != dims + 2 or len(vertex.shape) != dims + 2:
        raise unsupported(vertex, f"a {dims}-d convolution on an input of shape {shape_in} (the brian2 backend "
                                   "wires batched 1-d and 2-d convolutions)")
    transposed = bool(a.get("transposed", False))
    groups = int(a["groups"])
    stride, dilation = ints(a["stride"], dims), ints(a["dilation"], dims)
    pad = a["padding"]
    ksize = tuple(W.value.shape[2:])
    if pad == "valid":
        pad = 0
    if pad == "same":
        pad = tuple((d * (k - 1)) // 2 for d, k in zip(dilation, ksize, strict=True))
    pad = ints(pad, dims)
    if dims == 1:  # as 2-d, height 1
        stride, dilation, pad, ksize = (1, *stride), (1, *dilation), (0, *pad), (1, *ksize)
    B, C, H, Wd = (*shape_in[:2], 1, shape_in[2]) if dims == 1 else shape_in
    _, O, Ho, Wo = (*vertex.shape[:2], 1, vertex.shape[2]) if dims == 1 else vertex.shape
    KH, KW = ksize
    (sh, sw), (dh, dw), (ph, pw) = stride, dilation, pad
    # The weight is (L, M / groups, KH, KW), L the outputs and M the inputs (transposed: the other way round),
    # and position l of the L side meets position l s - p + k d of the M side.
    (L, Lh, Lw), (M, Mh, Mw) = ((C, H, Wd), (O, Ho, Wo)) if transposed else ((O, Ho, Wo), (C, H, Wd))
    Lg, Mg = L // groups, W.value.shape[1]
    bb, ll, ml, kh, kw, lh, lw = np.meshgrid(np.arange(B), np.arange(L), np.arange(Mg), np.arange(KH),
                                             np.arange(KW), np.arange(Lh), np.arange(Lw), indexing="ij")
    mh, mw = lh * sh - ph + kh * dh, lw * sw - pw + kw * dw
    mm = (ll // Lg) * Mg + ml
    ok = (mh >= 0) & (mh < Mh) & (mw >= 0) & (mw < Mw)
    lid = (((bb * L + ll) * Lh + lh) * Lw + lw)[ok].astype(np.int64)
    mid = (((bb * M + mm) * Mh + mh) * Mw + mw)[ok].astype(np.int64)
    k = (((ll * Mg + ml) * KH + kh) * KW + kw)[ok].astype(np.int64)
    i, j = (lid, mid) if transposed else (mid, lid)
    return [W.edge(i, j, k)], b.offsets((np.arange(B * O * Ho * Wo, dtype=np.int64) // (Ho * Wo)) % O) if b else []


def _plane_local_linear(vertex, shapes, params, constants, values=None):
    """avg_pool2d and adaptive_avg_pool2d: a fixed linear map on each (sample, channel) plane, taken
    from the op itself applied to one-hot planes (so padding, ceil_mode and divisors are torch's)."""
    single_parent(vertex, vertex.args[0] if vertex.args else None)
    (shape_in,) = shapes
    if len(shape_in) != 4 or len(vertex.shape) != 4:
        raise unsupported(vertex, f"pooling on shape {shape_in} (expected batch, channels, h, w)")
    B, C, H, W = shape_in
    Ho, Wo = vertex.shape[2:]
    ((pin, pout, val),) = one_hot_rows(
        H * W, Ho * Wo, lambda eye: [call(vertex, [eye.reshape(-1, 1, H, W)], params, constants)])
    order = np.lexsort((pin, pout))
    pin, pout, val = pin[order], pout[order], val[order]
    planes = np.arange(B * C, dtype=np.int64)[:, None]
    i = (planes * (H * W) + pin[None, :]).reshape(-1)
    j = (planes * (Ho * Wo) + pout[None, :]).reshape(-1)
    return [edge(0, i, j, np.broadcast_to(val[None, :], (B * C, val.size)).reshape(-1).copy())], []


# the op table's `brian2` field -> the renderer
RENDERERS = {"linear": _linear, "addmm": _addmm, "conv2d": _conv, "pooling": _plane_local_linear,
             "activation": _activation, "index": _index_map, "affine": _affine, "linear_map": _linear_map,
             "embedding": _embedding}

REASONS = {  # (products, softmax, norms and max pooling are circuits: circuits.py)
    "baddbmm": PRODUCT,
    **dict.fromkeys(("rnn_tanh", "rnn_relu", "lstm", "gru"), "it is a whole recurrent layer fused into one vertex "
                                            "(trace(..., fused=...)); traced without `fused`, each gate is a "
                                            "population of its own"),
}


def edges_of(vertex: Vertex, shapes, params, constants, values=None):
    """The vertex's Edges and Offsets. `values`: per parent, its clamped value where it is clamped (the
    indices an embedding reads, an integer index tensor), else None."""
    kind = entry(vertex.op).brian2
    if vertex.select is not None and kind != "index" and vertex.op not in REASONS:  # (index maps read `select`)
        raise unsupported(vertex, f"it selects output {vertex.select} of a tuple-valued call; {WHY}")
    renderer = RENDERERS.get(kind)
    if renderer is None:
        why = REASONS.get(vertex.op, "no synaptic form is known for this op")
        supported = ", ".join(sorted(e.name for e in ENTRIES if e.brian2))
        raise unsupported(vertex, f"{why}, so {WHY}.\nThe brian2 backend renders: {supported}")
    return renderer(vertex, shapes, params, constants, values)
