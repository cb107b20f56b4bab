"""Each op as synaptic connectivity and Brian2 expressions (data only; no Brian2 import).

An op becomes one `Edge` per parent population: which neurons connect (`i` -> `j`), what a
synapse adds to the post-synaptic prediction (`forward`, in x_pre) and to the pre-synaptic
feedback (`backward` = J^T err, in err_post), and, for parameterised ops, the weight each synapse
holds and its index `kidx` into the shared parameter. Biases and constants are per-neuron `Offset`s.

  linear, conv2d        weight * x_pre / weight * err_post, one synapse per (sample, in, out) or per
                        (sample, out position, kernel tap), each with its copy of the weight it reads
  avg_pool2d, adaptive  fixed weights (torch's own 1 / window size, read from the op)
  activations           one-to-one: f(x_pre) / f'(x_pre) * err_post
  add, sub, neg, scale  one-to-one (or broadcast) with the op's coefficients as weights
  reshapes, identity    one-to-one index maps, read from the op applied to neuron indices

Anything else raises UnsupportedOpError naming the vertex and why it has no synaptic form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pcsim.errors import UnsupportedOpError
from pcsim.graph.ir import ParamArg, ParentArg, Vertex, template_slots
from pcsim.ops.local import call
from pcsim.ops.table import ENTRIES, entry

WHY = "it cannot be written as Brian2 equations"


@dataclass
class Edge:
    parent: int  # parent position in vertex.parents
    i: np.ndarray
    j: np.ndarray
    forward: str  # per-synapse contribution to mu, in x_pre (and weight)
    backward: str  # per-synapse contribution to the parent's feedback, in err_post (and x_pre, weight)
    weight: np.ndarray | None = None
    param: str | None = None
    kidx: np.ndarray | None = None


@dataclass
class Offset:
    """Per-neuron additive term of mu: a bias (with its parameter) or a constant."""

    values: np.ndarray
    param: str | None = None
    index: np.ndarray | None = None


def _bind(vertex: Vertex, names: tuple[str, ...], defaults: dict):
    """The call's arguments by name (positional first, then keywords, then defaults)."""
    out = dict(defaults)
    out.update(zip(names, vertex.args, strict=False))
    out.update(dict(vertex.kwargs))
    return out


def _unsupported(vertex: Vertex, why: str) -> UnsupportedOpError:
    return UnsupportedOpError(f"the brian2 backend cannot render {vertex.describe()}: {why}")


def _single_parent(vertex: Vertex, arg) -> None:
    if arg != ParentArg(0) or len(vertex.parents) != 1:
        raise _unsupported(vertex, f"expected one population as its first argument; {WHY}")


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _param(vertex: Vertex, slot, params, what: str) -> torch.Tensor | None:
    if slot is None:
        return None
    if not isinstance(slot, ParamArg):
        raise _unsupported(vertex, f"its {what} is not a module parameter (a population or constant as a "
                                   f"{what} would make a synapse multiply two variables); {WHY}")
    return params[slot.name].detach()


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).reshape(-1).cpu().numpy()


def _linear(vertex, shapes, params, constants):
    a = _bind(vertex, ("input", "weight", "bias"), {"bias": None})
    _single_parent(vertex, a["input"])
    W = _param(vertex, a["weight"], params, "weight")
    b = _param(vertex, a["bias"], params, "bias")
    (shape_in,) = shapes
    if W.dim() != 2 or shape_in[-1] != W.shape[1]:
        raise _unsupported(vertex, f"weight of shape {tuple(W.shape)} on input {shape_in}")
    n_out, n_in = W.shape
    lead = int(np.prod(shape_in[:-1], dtype=np.int64))
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
    edges = [Edge(0, i, j, "weight * x_pre", "weight * err_post", to_numpy(W)[k], a["weight"].name, k)]
    offsets = []
    if b is not None:
        idx = np.arange(lead * n_out, dtype=np.int64) % n_out
        offsets.append(Offset(to_numpy(b)[idx], a["bias"].name, idx))
    return edges, offsets


def _conv2d(vertex, shapes, params, constants):
    a = _bind(vertex, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
              {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
    _single_parent(vertex, a["input"])
    W = _param(vertex, a["weight"], params, "weight")
    b = _param(vertex, a["bias"], params, "bias")
    (shape_in,) = shapes
    if len(shape_in) != 4:
        raise _unsupported(vertex, f"conv2d on an input of shape {shape_in} (expected batch, channels, h, w)")
    B, C, H, Wd = shape_in
    _, O, Ho, Wo = vertex.shape
    O_, Cg, KH, KW = W.shape
    groups = int(a["groups"])
    (sh, sw), (dh, dw) = _pair(a["stride"]), _pair(a["dilation"])
    pad = a["padding"]
    if pad == "valid":
        pad = 0
    if pad == "same":
        ph, pw = (dh * (KH - 1)) // 2, (dw * (KW - 1)) // 2
    else:
        ph, pw = _pair(pad)
    # one synapse per (batch, out channel, out position, in channel of the group, kernel position)
    # (output positions innermost: consecutive synapses differ in both neurons, as for linear)
    bb, oo, cl, kh, kw, oh, ow = np.meshgrid(np.arange(B), np.arange(O), np.arange(Cg), np.arange(KH),
                                             np.arange(KW), np.arange(Ho), np.arange(Wo), indexing="ij")
    ih, iw = oh * sh - ph + kh * dh, ow * sw - pw + kw * dw
    ok = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < Wd)
    cc = (oo // (O_ // groups)) * Cg + cl
    i = (((bb * C + cc) * H + ih) * Wd + iw)[ok].astype(np.int64)
    j = (((bb * O + oo) * Ho + oh) * Wo + ow)[ok].astype(np.int64)
    k = (((oo * Cg + cl) * KH + kh) * KW + kw)[ok].astype(np.int64)
    edges = [Edge(0, i, j, "weight * x_pre", "weight * err_post", to_numpy(W)[k], a["weight"].name, k)]
    offsets = []
    if b is not None:
        idx = (np.arange(B * O * Ho * Wo, dtype=np.int64) // (Ho * Wo)) % O
        offsets.append(Offset(to_numpy(b)[idx], a["bias"].name, idx))
    return edges, offsets


def _plane_local_linear(vertex, shapes, params, constants):
    """avg_pool2d and adaptive_avg_pool2d: a fixed linear map on each (sample, channel) plane, taken
    from the op itself applied to one-hot planes (so padding, ceil_mode and divisors are torch's)."""
    _single_parent(vertex, vertex.args[0] if vertex.args else None)
    (shape_in,) = shapes
    if len(shape_in) != 4 or len(vertex.shape) != 4:
        raise _unsupported(vertex, f"pooling on shape {shape_in} (expected batch, channels, h, w)")
    B, C, H, W = shape_in
    Ho, Wo = vertex.shape[2:]
    pins, pouts, vals = [], [], []
    chunk = max(1, 4_000_000 // max(1, Ho * Wo))
    for start in range(0, H * W, chunk):
        idx = torch.arange(start, min(start + chunk, H * W))
        planes = torch.zeros(len(idx), 1, H * W, dtype=torch.float64)
        planes[torch.arange(len(idx)), 0, idx] = 1.0
        out = call(vertex, [planes.reshape(len(idx), 1, H, W)], params, constants).reshape(len(idx), Ho * Wo)
        nz = torch.nonzero(out)
        pins.append(idx[nz[:, 0]].numpy())
        pouts.append(nz[:, 1].numpy())
        vals.append(out[nz[:, 0], nz[:, 1]].numpy())
    pin, pout, val = (np.concatenate(v) for v in (pins, pouts, vals))
    order = np.lexsort((pin, pout))
    pin, pout, val = pin[order], pout[order], val[order]
    planes = np.arange(B * C, dtype=np.int64)[:, None]
    i = (planes * (H * W) + pin[None, :]).reshape(-1)
    j = (planes * (Ho * Wo) + pout[None, :]).reshape(-1)
    weight = np.broadcast_to(val[None, :], (B * C, val.size)).reshape(-1).copy()
    return [Edge(0, i, j, "weight * x_pre", "weight * err_post", weight)], []


# Elementwise activations: (forward in x_pre, derivative in x_pre) with the op's own arguments.
def _act_relu(a):
    return "x_pre * int(x_pre > 0)", "int(x_pre > 0)"


def _act_leaky(a):
    s = float(a.get("negative_slope", 0.01))
    return (f"x_pre * (int(x_pre > 0) + {s!r} * int(x_pre <= 0))", f"(int(x_pre > 0) + {s!r} * int(x_pre <= 0))")


def _act_elu(a):
    al = float(a.get("alpha", 1.0))
    return (f"x_pre * int(x_pre > 0) + {al!r} * (exp(x_pre) - 1) * int(x_pre <= 0)",
            f"(int(x_pre > 0) + {al!r} * exp(x_pre) * int(x_pre <= 0))")


def _act_softplus(a):
    beta, thr = float(a.get("beta", 1.0)), float(a.get("threshold", 20.0))
    above = f"int({beta!r} * x_pre > {thr!r})"
    return (f"{above} * x_pre + (1 - {above}) * log(1 + exp({beta!r} * x_pre)) / {beta!r}",
            f"({above} + (1 - {above}) / (1 + exp(-{beta!r} * x_pre)))")


ACTIVATIONS = {
    "relu": (("input",), {}, _act_relu),
    "leaky_relu": (("input", "negative_slope"), {"negative_slope": 0.01}, _act_leaky),
    "tanh": (("input",), {}, lambda a: ("tanh(x_pre)", "(1 - tanh(x_pre)**2)")),
    "sigmoid": (("input",), {}, lambda a: ("1 / (1 + exp(-x_pre))",
                                           "(1 / (1 + exp(-x_pre))) * (1 - 1 / (1 + exp(-x_pre)))")),
    "silu": (("input",), {}, lambda a: ("x_pre / (1 + exp(-x_pre))",
                                        "(1 / (1 + exp(-x_pre))) * (1 + x_pre * (1 - 1 / (1 + exp(-x_pre))))")),
    "elu": (("input", "alpha"), {"alpha": 1.0}, _act_elu),
    "softplus": (("input", "beta", "threshold"), {"beta": 1.0, "threshold": 20.0}, _act_softplus),
    "exp": (("input",), {}, lambda a: ("exp(x_pre)", "exp(x_pre)")),
}


def _activation(vertex, shapes, params, constants):
    names, defaults, render = ACTIVATIONS[vertex.op]
    a = _bind(vertex, names, defaults)
    _single_parent(vertex, a["input"])
    if tuple(shapes[0]) != tuple(vertex.shape):
        raise _unsupported(vertex, "an elementwise op that changes shape")
    extra = sorted(k for k in a if k not in names and k != "inplace")
    if extra:
        raise _unsupported(vertex, f"arguments {extra} have no Brian2 rendering")
    fwd, der = render(a)
    n = int(np.prod(vertex.shape, dtype=np.int64))
    idx = np.arange(n, dtype=np.int64)
    return [Edge(0, idx, idx.copy(), fwd, f"{der} * err_post")], []


def _index_map(vertex, shapes, params, constants):
    """Ops that only move values: the op applied to the parent's neuron indices gives the wiring."""
    slots = [s for s in _slots(vertex) if isinstance(s, ParentArg)]
    if len(vertex.parents) != 1 or len(slots) != 1:
        raise _unsupported(vertex, f"a '{vertex.op}' of {len(vertex.parents)} populations; {WHY}")
    (shape_in,) = shapes
    index = torch.arange(int(np.prod(shape_in, dtype=np.int64)), dtype=torch.int64).reshape(shape_in)
    out = call(vertex, [index], params, constants)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(vertex.shape):
        raise _unsupported(vertex, "its index map does not have the vertex's shape")
    i = out.reshape(-1).numpy().astype(np.int64)
    j = np.arange(i.size, dtype=np.int64)
    return [Edge(0, i, j, "x_pre", "err_post")], []


def _affine(vertex, shapes, params, constants):
    """Elementwise ops affine in their parents (add, sub, neg, scaling): weights = coefficients,
    read from the op by probing; anything not affine (a product of populations) is refused."""
    zeros = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    c0 = None
    try:
        c0 = call(vertex, zeros, params, constants)
        coefs = []
        for k, s in enumerate(shapes):
            probe = list(zeros)
            probe[k] = torch.ones(s, dtype=torch.float64)
            coefs.append(call(vertex, probe, params, constants) - c0)
        g = torch.Generator().manual_seed(0)
        rnd = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
        got = call(vertex, rnd, params, constants)
        want = c0 + sum(cf * torch.broadcast_to(r, cf.shape) for cf, r in zip(coefs, rnd, strict=True))
        affine = bool(torch.allclose(got, want, rtol=1e-12, atol=1e-12)) and bool(torch.isfinite(got).all())
    except (RuntimeError, TypeError, ValueError):
        affine = False
    if not affine or tuple(c0.shape) != tuple(vertex.shape):
        raise _unsupported(vertex, f"'{vertex.op}' here is not affine in its parent populations (a product or "
                                   "quotient of populations: a synapse carries one presynaptic variable); " + WHY)
    n = int(np.prod(vertex.shape, dtype=np.int64))
    j = np.arange(n, dtype=np.int64)
    edges = []
    for k, s in enumerate(shapes):
        src = torch.arange(int(np.prod(s, dtype=np.int64)), dtype=torch.int64).reshape(s)
        i = torch.broadcast_to(src, vertex.shape).reshape(-1).numpy().astype(np.int64)
        w = to_numpy(coefs[k])
        if np.all(w == 1.0):
            edges.append(Edge(k, i, j.copy(), "x_pre", "err_post"))
        else:
            edges.append(Edge(k, i, j.copy(), "weight * x_pre", "weight * err_post", w))
    offsets = [] if not bool((c0 != 0).any()) else [Offset(to_numpy(c0))]
    return edges, offsets


def _slots(vertex):
    return list(template_slots((vertex.args, dict(vertex.kwargs))))


# the op table's `brian2` field -> the renderer
RENDERERS = {"linear": _linear, "conv2d": _conv2d, "pooling": _plane_local_linear, "activation": _activation,
             "index": _index_map, "affine": _affine}
_NORMALISES = "it normalises by statistics over neurons (a divisive interaction among a population)"
_PRODUCT = "a product of two variables; a synapse carries one presynaptic variable"

REASONS = {
    **dict.fromkeys(("max_pool2d", "max_pool2d_with_indices"),
                    "Brian2's summed variables can only add over synapses; a max over a window is no sum"),
    **dict.fromkeys(("_softmax", "_log_softmax", "_safe_softmax", "native_layer_norm", "native_group_norm",
                     "_native_batch_norm_legit_no_training", "_native_batch_norm_legit"), _NORMALISES),
    **dict.fromkeys(("mm", "bmm", "matmul", "addmm", "baddbmm"), _PRODUCT),
    "gelu": "it needs erf, which Brian2's code generators do not provide",
    "embedding": "it indexes a table by an integer input (no synaptic sum)",
    "cat": "it concatenates populations (not supported by this backend yet)",
    "stack": "it stacks populations (not supported by this backend yet)",
    **dict.fromkeys(("rnn_tanh", "rnn_relu", "lstm", "gru"), "it is a whole recurrent layer fused into one vertex "
                                            "(trace(..., fused=...)); traced without `fused`, each gate is a "
                                            "population of its own"),
}


def edges_of(vertex: Vertex, shapes, params, constants):
    kind = entry(vertex.op).brian2
    if vertex.select is not None and kind != "index" and vertex.op not in REASONS:
        raise _unsupported(vertex, f"it selects output {vertex.select} of a tuple-valued call; {WHY}")
    renderer = RENDERERS.get(kind)
    if renderer is None:
        why = REASONS.get(vertex.op, "no synaptic form is known for this op")
        supported = ", ".join(sorted(e.name for e in ENTRIES if e.brian2))
        raise _unsupported(vertex, f"{why}, so {WHY}.\nThe brian2 backend renders: {supported}")
    return renderer(vertex, shapes, params, constants)
