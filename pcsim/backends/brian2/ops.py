"""Each op as synaptic connectivity and Brian2 expressions (data only; no Brian2 import).

An op becomes one `Edge` per parent population: which neurons connect (`i` -> `j`), what a
synapse adds to the post-synaptic prediction (`forward`, in x_pre) and to the pre-synaptic
feedback (`backward` = J^T err, in err_post), and, for parameterised ops, the weight each synapse
holds and its index `kidx` into the shared parameter. Biases and constants are per-neuron `Offset`s.

  linear, convolutions  weight * x_pre / weight * err_post, one synapse per (sample, in, out) or per
                        (sample, out position, kernel tap), each with its copy of the weight it reads;
                        conv1d is conv2d of height 1, a transposed convolution the same taps read backwards.
                        A weight may be an index map of a parameter (a tied W.T): `kidx` goes through it
  avg_pool2d, adaptive  fixed weights (torch's own 1 / window size, read from the op)
  sum, mean             fixed weights: the op's Jacobian, read from torch's VJP (`linear_map`)
  activations           one-to-one: f(x_pre) / f'(x_pre) * err_post (erf, for gelu, is in `FUNCTIONS`)
  add, sub, neg, scale  one-to-one (or broadcast) with the op's coefficients as weights; a parameter added
                        is a bias with its accumulator, a parameter scaling a population a plastic weight
  reshapes, identity,   index maps of one or more parents (cat, stack, slices, padding: a pad value is an
  cat, pad, slices      `Offset`), read from the op applied to the parents' neuron ids
  embedding             no synapses: a parameter `Offset` per (token, feature), the token's table row

Products of populations, softmax, norms and max pooling need helper neurons: circuits.py. Anything else
raises UnsupportedOpError naming the vertex and why it has no synaptic form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pcsim.errors import UnsupportedOpError
from pcsim.graph.ir import Computed, ConstArg, ParamArg, ParentArg, Vertex, compile_template, template_slots
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
    hebb: str | None = None  # the plastic synapse's Hebbian term; None: err_post * x_pre (d forward / d weight)


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


@dataclass
class Weight:
    """A parameter slot as the synapses see it: its values, the parameter their accumulators add to, and
    each value's flat index into that parameter (the identity for a parameter, a permutation for a tied W.T)."""

    value: torch.Tensor
    param: str
    index: np.ndarray


def _weight(vertex: Vertex, slot, params, constants, what: str) -> Weight | None:
    """A parameter, or an index map of one parameter (a transpose, permute, view or slice of it: a tied
    `W.T`), with each entry's index into the parameter, read by applying the map to the parameter's own
    flat indices. Anything else (a population, a constant, a weight-normed `g v / |v|`) is refused."""
    if slot is None:
        return None
    if isinstance(slot, ParamArg):
        value = params[slot.name].detach()
        return Weight(value, slot.name, np.arange(value.numel(), dtype=np.int64))
    if isinstance(slot, Computed):
        inner = list(template_slots(slot))
        names = {s.name for s in inner if isinstance(s, ParamArg)}
        if len(names) == 1 and not any(isinstance(s, ParentArg) for s in inner):
            (name,) = names
            fn = compile_template(slot)
            p = params[name].detach()
            value = fn((), params, constants)
            if isinstance(value, torch.Tensor):
                value = value.detach()
                ids = torch.arange(p.numel(), dtype=torch.float64).reshape(p.shape)
                shift = float(p.numel() + 1)
                try:
                    a = fn((), {**params, name: ids + 1.0}, constants)
                    b = fn((), {**params, name: ids + 1.0 + shift}, constants)
                except (RuntimeError, TypeError, ValueError):
                    a = b = None
                if (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == value.shape
                        and bool(((b - a) == shift).all()) and bool((a == torch.round(a)).all())):
                    index = (a.reshape(-1) - 1).to(torch.int64)
                    if bool((index >= 0).all()) and bool((p.reshape(-1)[index] == value.reshape(-1)).all()):
                        return Weight(value, name, index.numpy())
            label = slot.label or getattr(slot.fn, "__name__", "a function")
            raise _unsupported(vertex, f"its {what} is {label} of parameter '{name}', which is not an index map "
                                       f"of it (a transpose, view or slice): its synapses could not share the "
                                       f"parameter's entries; {WHY}")
    raise _unsupported(vertex, f"its {what} is not a module parameter or an index map of one (a population or "
                               f"constant as a {what} would make a synapse multiply two variables); {WHY}")


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).reshape(-1).cpu().numpy()


def _bias_offset(bias: Weight | None, idx: np.ndarray) -> list[Offset]:
    """The bias of every output neuron, `idx` its index into the bias (parameter, or index map of one)."""
    if bias is None:
        return []
    return [Offset(to_numpy(bias.value)[idx], bias.param, bias.index[idx])]


def _linear(vertex, shapes, params, constants, values=None):
    a = _bind(vertex, ("input", "weight", "bias"), {"bias": None})
    _single_parent(vertex, a["input"])
    W = _weight(vertex, a["weight"], params, constants, "weight")
    b = _weight(vertex, a["bias"], params, constants, "bias")
    (shape_in,) = shapes
    if W.value.dim() != 2 or shape_in[-1] != W.value.shape[1]:
        raise _unsupported(vertex, f"weight of shape {tuple(W.value.shape)} on input {shape_in}")
    n_out, n_in = W.value.shape
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
    edges = [Edge(0, i, j, "weight * x_pre", "weight * err_post", to_numpy(W.value)[k], W.param, W.index[k])]
    return edges, _bias_offset(b, np.arange(lead * n_out, dtype=np.int64) % n_out)


def _ints(v, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (int(v),) * n
    v = tuple(int(x) for x in v)
    return v * n if len(v) == 1 else v


CONV_ARGS = {  # op -> (argument names, defaults)
    "conv1d": (("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
               {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}),
    "conv2d": (("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
               {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}),
    "convolution": (("input", "weight", "bias", "stride", "padding", "dilation", "transposed", "output_padding",
                     "groups"), {"bias": None}),
}


def _conv(vertex, shapes, params, constants, values=None):
    """conv1d, conv2d and aten.convolution (1-d or 2-d, plain or transposed): one synapse per (sample,
    kernel tap, input position, output position) pair the kernel connects, each with its kernel entry.
    A 1-d convolution is wired as a 2-d one of height 1."""
    names, defaults = CONV_ARGS[vertex.op]
    a = _bind(vertex, names, defaults)
    _single_parent(vertex, a["input"])
    W = _weight(vertex, a["weight"], params, constants, "weight")
    b = _weight(vertex, a["bias"], params, constants, "bias")
    (shape_in,) = shapes
    dims = W.value.dim() - 2
    if dims not in (1, 2) or len(shape_in) != dims + 2 or len(vertex.shape) != dims + 2:
        raise _unsupported(vertex, f"a {dims}-d convolution on an input of shape {shape_in} (the brian2 backend "
                                   "wires batched 1-d and 2-d convolutions)")
    transposed = bool(a.get("transposed", False))
    groups = int(a["groups"])
    stride, dilation = _ints(a["stride"], dims), _ints(a["dilation"], dims)
    pad = a["padding"]
    ksize = tuple(W.value.shape[2:])
    if pad == "valid":
        pad = 0
    if pad == "same":
        pad = tuple((d * (k - 1)) // 2 for d, k in zip(dilation, ksize, strict=True))
    pad = _ints(pad, dims)
    if dims == 1:  # as 2-d, height 1
        stride, dilation, pad, ksize = (1, *stride), (1, *dilation), (0, *pad), (1, *ksize)
    B, C, H, Wd = (*shape_in[:2], 1, shape_in[2]) if dims == 1 else shape_in
    _, O, Ho, Wo = (*vertex.shape[:2], 1, vertex.shape[2]) if dims == 1 else vertex.shape
    KH, KW = ksize
    (sh, sw), (dh, dw), (ph, pw) = stride, dilation, pad
    if not transposed:  # weight (O, C / groups, KH, KW): out position oh reads in position oh s - p + kh d
        Og, Cg = O // groups, W.value.shape[1]
        bb, oo, cl, kh, kw, oh, ow = np.meshgrid(np.arange(B), np.arange(O), np.arange(Cg), np.arange(KH),
                                                 np.arange(KW), np.arange(Ho), np.arange(Wo), indexing="ij")
        ih, iw = oh * sh - ph + kh * dh, ow * sw - pw + kw * dw
        cc = (oo // Og) * Cg + cl
        k = ((oo * Cg + cl) * KH + kh) * KW + kw
    else:  # weight (C, O / groups, KH, KW): in position ih feeds out position ih s - p + kh d
        Cg, Og = C // groups, W.value.shape[1]
        bb, cc, ol, kh, kw, ih, iw = np.meshgrid(np.arange(B), np.arange(C), np.arange(Og), np.arange(KH),
                                                 np.arange(KW), np.arange(H), np.arange(Wd), indexing="ij")
        oh, ow = ih * sh - ph + kh * dh, iw * sw - pw + kw * dw
        oo = (cc // Cg) * Og + ol
        k = ((cc * Og + ol) * KH + kh) * KW + kw
    ok = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < Wd) & (oh >= 0) & (oh < Ho) & (ow >= 0) & (ow < Wo)
    i = (((bb * C + cc) * H + ih) * Wd + iw)[ok].astype(np.int64)
    j = (((bb * O + oo) * Ho + oh) * Wo + ow)[ok].astype(np.int64)
    k = k[ok].astype(np.int64)
    edges = [Edge(0, i, j, "weight * x_pre", "weight * err_post", to_numpy(W.value)[k], W.param, W.index[k])]
    return edges, _bias_offset(b, (np.arange(B * O * Ho * Wo, dtype=np.int64) // (Ho * Wo)) % O)


def _plane_local_linear(vertex, shapes, params, constants, values=None):
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


def _act_hardtanh(a):
    lo, hi = float(a.get("min_val", -1.0)), float(a.get("max_val", 1.0))
    return f"clip(x_pre, {lo!r}, {hi!r})", f"int(x_pre > {lo!r}) * int(x_pre < {hi!r})"


def _act_clamp(a):
    lo, hi = a.get("min"), a.get("max")
    if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in (lo, hi)):
        return None  # a population or tensor as a bound
    if lo is not None and hi is not None:
        lo, hi = float(lo), float(hi)
        return f"clip(x_pre, {lo!r}, {hi!r})", f"int(x_pre >= {lo!r}) * int(x_pre <= {hi!r})"
    if lo is not None:
        lo = float(lo)
        return f"x_pre * int(x_pre > {lo!r}) + {lo!r} * int(x_pre <= {lo!r})", f"int(x_pre >= {lo!r})"
    if hi is not None:
        hi = float(hi)
        return f"x_pre * int(x_pre < {hi!r}) + {hi!r} * int(x_pre >= {hi!r})", f"int(x_pre <= {hi!r})"
    return "x_pre", "1"


def _act_pow(a):
    e = a.get("exponent")
    if isinstance(e, bool) or not isinstance(e, int | float):
        return None  # a population as the exponent, or a number to a population's power
    e = float(e)
    if e == 0.0:
        return "0 * x_pre + 1", "0"
    if e == 1.0:
        return "x_pre", "1"
    if e == 2.0:
        return "x_pre * x_pre", "2.0 * x_pre"
    return f"x_pre ** {e!r}", f"{e!r} * x_pre ** {e - 1.0!r}"


_SQRT1_2 = 0.7071067811865476  # M_SQRT1_2, as torch's gelu kernels
_PDF = 0.3989422804014327  # M_2_SQRTPI * M_SQRT1_2 * 0.5 = 1 / sqrt(2 pi)
_KBETA = 0.7978845608028654  # M_SQRT2 * M_2_SQRTPI * 0.5 = sqrt(2 / pi)


def _act_gelu(a):
    approx = a.get("approximate", "none")
    if approx == "none":
        cdf = f"0.5 * (1 + erf(x_pre * {_SQRT1_2!r}))"
        return f"x_pre * {cdf}", f"({cdf} + x_pre * exp(-0.5 * x_pre * x_pre) * {_PDF!r})"
    if approx == "tanh":
        t = f"tanh({_KBETA!r} * (x_pre + 0.044715 * x_pre * x_pre * x_pre))"
        return (f"0.5 * x_pre * (1 + {t})",
                f"(0.5 * (1 + {t}) + 0.5 * x_pre * (1 - {t} ** 2) * {_KBETA!r} * (1 + 3 * 0.044715 * x_pre * x_pre))")
    return None


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
    # the derivatives as torch's autograd formulas write them (rounding then agrees to ~1e-16)
    "sqrt": (("input",), {}, lambda a: ("sqrt(x_pre)", "1 / (2 * sqrt(x_pre))")),
    "rsqrt": (("input",), {}, lambda a: ("1 / sqrt(x_pre)", "-0.5 * (1 / sqrt(x_pre)) ** 3")),
    "reciprocal": (("input",), {}, lambda a: ("1 / x_pre", "-(1 / x_pre) * (1 / x_pre)")),
    "log": (("input",), {}, lambda a: ("log(x_pre)", "1 / x_pre")),
    "abs": (("input",), {}, lambda a: ("abs(x_pre)", "sign(x_pre)")),
    "square": (("input",), {}, lambda a: ("x_pre * x_pre", "2.0 * x_pre")),
    "sin": (("input",), {}, lambda a: ("sin(x_pre)", "cos(x_pre)")),
    "cos": (("input",), {}, lambda a: ("cos(x_pre)", "-sin(x_pre)")),
    "erf": (("input",), {}, lambda a: ("erf(x_pre)", "1.1283791670955126 * exp(-x_pre * x_pre)")),
    "pow": (("input", "exponent"), {}, _act_pow),
    "hardtanh": (("input", "min_val", "max_val"), {"min_val": -1.0, "max_val": 1.0}, _act_hardtanh),
    "clamp": (("input", "min", "max"), {"min": None, "max": None}, _act_clamp),
    "gelu": (("input",), {"approximate": "none"}, _act_gelu),
}

# Functions the expressions call that Brian2 does not provide, as data (runner.py makes the Brian2
# `Function`s where it builds the namespaces): name -> its implementation per code-generation target.
FUNCTIONS = {
    "erf": {
        "numpy": "scipy.special:erf",  # module:attribute
        "cython": ("from libc.math cimport erf as _libc_erf\n"
                   "cdef double pcsim_erf(double x):\n    return _libc_erf(x)\n", "pcsim_erf"),
        "cpp": ("inline double pcsim_erf(double x) { return erf(x); }", "pcsim_erf"),  # <cmath>
    },
}


def _activation(vertex, shapes, params, constants, values=None):
    names, defaults, render = ACTIVATIONS[vertex.op]
    a = _bind(vertex, names, defaults)
    if len(vertex.parents) > 1:
        raise _unsupported(vertex, f"'{vertex.op}' of {len(vertex.parents)} populations ({_PRODUCT}); {WHY}")
    _single_parent(vertex, a["input"])
    if tuple(shapes[0]) != tuple(vertex.shape):
        raise _unsupported(vertex, "an elementwise op that changes shape")
    extra = sorted(k for k in a if k not in names and k not in defaults and k != "inplace")
    if extra:
        raise _unsupported(vertex, f"arguments {extra} have no Brian2 rendering")
    rendered = render(a)
    if rendered is None:
        shown = {k: v for k, v in a.items() if k != "input"}
        raise _unsupported(vertex, f"'{vertex.op}' with arguments {shown} (a population where a number is "
                                   f"expected, or an unknown variant); {WHY}")
    fwd, der = rendered
    n = int(np.prod(vertex.shape, dtype=np.int64))
    idx = np.arange(n, dtype=np.int64)
    return [Edge(0, idx, idx.copy(), fwd, f"{der} * err_post")], []


def _probe_inputs(vertex, shapes, values, what: str):
    """Float probes for the parents, with integer parents (clamped indices) filled with their values."""
    values = values or [None] * len(shapes)

    def fill(k, probe):
        v = values[k]
        if v is not None and not (v.is_floating_point() or v.is_complex()):
            return v
        return probe

    return fill


def _index_map(vertex, shapes, params, constants, values=None):
    """Ops that only move values (views, slices, cat, stack, padding): the op applied to the neuron ids of
    all its parents (numbered one after the other) gives each output neuron's source. It runs twice, the ids
    shifted by S the second time: an output that moves by S is a source, one that stays put is a constant (a
    pad value: an `Offset`); anything else is not an index map and is refused. One Edge per parent."""
    fill = _probe_inputs(vertex, shapes, values, "index")
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    base = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    shift = float(base[-1] + 1)

    def run(offset):
        ids = [fill(k, torch.arange(base[k], base[k + 1], dtype=torch.float64).reshape(s) + offset)
               for k, s in enumerate(shapes)]
        out = call(vertex, ids, params, constants)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(vertex.shape):
            raise _unsupported(vertex, "its index map does not have the vertex's shape")
        return out.detach().to(torch.float64).reshape(-1)

    try:
        a, b = run(1.0), run(1.0 + shift)
    except (RuntimeError, TypeError, ValueError) as e:
        raise _unsupported(vertex, f"applying it to neuron ids failed ({e}); {WHY}") from e
    moved, still = (b - a) == shift, (b - a) == 0
    src = (a - 1).to(torch.int64).numpy()
    ok = bool((moved | still).all()) and bool((a[moved] == torch.round(a[moved])).all())
    ok = ok and bool(((src[moved.numpy()] >= 0) & (src[moved.numpy()] < base[-1])).all())
    if not ok:
        raise _unsupported(vertex, f"'{vertex.op}' here does more than move values (its output is not a "
                                   f"selection of its parents' neurons); {WHY}")
    moved = moved.numpy()
    j_all = np.arange(src.size, dtype=np.int64)
    edges = []
    for k in range(len(shapes)):
        sel = moved & (src >= base[k]) & (src < base[k + 1])
        if sel.any():
            edges.append(Edge(k, src[sel] - base[k], j_all[sel], "x_pre", "err_post"))
    const = np.where(moved, 0.0, a.numpy())
    return edges, ([Offset(const)] if bool((const != 0).any()) else [])


def _linear_map(vertex, shapes, params, constants, values=None):
    """Parameter-free ops linear in their parents (sum, mean over any dims): the Jacobian, read row by row
    from torch's own VJP (one-hot cotangents, in chunks), its entries as the synapses' weights; a constant
    part is an `Offset`. Checked to be affine on random inputs, else refused."""
    fill = _probe_inputs(vertex, shapes, values, "linear")
    floats = [k for k in range(len(shapes)) if fill(k, None) is None]
    zeros = [fill(k, torch.zeros(s, dtype=torch.float64)) for k, s in enumerate(shapes)]

    def f(*xs):
        full = list(zeros)
        for k, x in zip(floats, xs, strict=True):
            full[k] = x
        return call(vertex, full, params, constants)

    try:
        c0, pull = torch.func.vjp(f, *[zeros[k] for k in floats])
    except (RuntimeError, TypeError, ValueError) as e:
        raise _unsupported(vertex, f"its Jacobian could not be read ({e}); {WHY}") from e
    if not isinstance(c0, torch.Tensor) or tuple(c0.shape) != tuple(vertex.shape):
        raise _unsupported(vertex, "its output does not have the vertex's shape")
    n_out = c0.numel()
    n_in = sum(int(np.prod(shapes[k], dtype=np.int64)) for k in floats)
    chunk = max(1, 4_000_000 // max(1, n_in))
    found = {k: ([], [], []) for k in floats}
    for start in range(0, n_out, chunk):
        m = min(chunk, n_out - start)
        rows = torch.zeros(m, n_out, dtype=torch.float64)
        rows[torch.arange(m), start + torch.arange(m)] = 1.0
        cots = torch.func.vmap(pull)(rows.reshape(m, *vertex.shape))
        for k, cot in zip(floats, cots, strict=True):
            cot = cot.reshape(m, -1)
            nz = torch.nonzero(cot)
            found[k][0].append(nz[:, 1].numpy())
            found[k][1].append(start + nz[:, 0].numpy())
            found[k][2].append(cot[nz[:, 0], nz[:, 1]].numpy())
    g = torch.Generator().manual_seed(0)
    rnd = {k: torch.randn(shapes[k], generator=g, dtype=torch.float64) for k in floats}
    want = to_numpy(c0).copy()
    edges = []
    for k in floats:
        i, j, w = (np.concatenate(v) for v in found[k])
        i, j = i.astype(np.int64), j.astype(np.int64)
        want += np.bincount(j, weights=w * to_numpy(rnd[k])[i], minlength=n_out)
        if i.size == 0:
            continue
        if np.all(w == 1.0):
            edges.append(Edge(k, i, j, "x_pre", "err_post"))
        else:
            edges.append(Edge(k, i, j, "weight * x_pre", "weight * err_post", w))
    got = to_numpy(f(*[rnd[k] for k in floats]))
    if not np.allclose(got, want, rtol=1e-12, atol=1e-12):
        raise _unsupported(vertex, f"'{vertex.op}' here is not linear in its parent populations; {WHY}")
    return edges, ([Offset(to_numpy(c0))] if bool((c0 != 0).any()) else [])


def _embedding(vertex, shapes, params, constants, values=None):
    """Each output neuron (token t, feature d) predicts the table's entry (index[t], d): a per-neuron `Offset`
    of that parameter entry, whose accumulator (err) is the embedding's gradient, added into the token's row.
    The indices are clamped (integers): the rendering reads them."""
    a = _bind(vertex, ("weight", "indices", "padding_idx", "scale_grad_by_freq", "sparse"),
              {"padding_idx": -1, "scale_grad_by_freq": False, "sparse": False})
    W = _weight(vertex, a["weight"], params, constants, "weight")
    slot = a["indices"]
    tokens = None
    if isinstance(slot, ParentArg) and values is not None:
        tokens = values[slot.index]
    elif isinstance(slot, ConstArg):
        tokens = constants[slot.name]
    if tokens is None or tokens.is_floating_point():
        raise _unsupported(vertex, "its indices are not a clamped integer input (a population of indices would "
                                   f"make the prediction a lookup by a variable); {WHY}")
    if bool(a["scale_grad_by_freq"]):
        raise _unsupported(vertex, "scale_grad_by_freq divides each row's gradient by its token count, which a "
                                   f"per-neuron accumulator does not; {WHY}")
    if W.value.dim() != 2:
        raise _unsupported(vertex, f"an embedding table of shape {tuple(W.value.shape)}")
    n, D = W.value.shape
    tok = tokens.detach().reshape(-1).to(torch.int64).cpu().numpy()
    pad = int(a["padding_idx"])
    if pad >= 0 and bool((tok == pad).any()):
        raise _unsupported(vertex, f"token {pad} is its padding_idx, whose row torch gives no gradient, but a "
                                   f"neuron predicting it would accumulate one; {WHY}")
    flat = (tok[:, None] * D + np.arange(D, dtype=np.int64)[None, :]).reshape(-1)
    if flat.size != int(np.prod(vertex.shape, dtype=np.int64)):
        raise _unsupported(vertex, "its output does not have the vertex's shape")
    return [], [Offset(to_numpy(W.value)[flat], W.param, W.index[flat])]


def _slots(vertex):
    return list(template_slots((vertex.args, dict(vertex.kwargs))))


def _affine(vertex, shapes, params, constants, values=None):
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
    if vertex.op == "mul" and len(shapes) == 1 and len(vertex.params) == 1:
        return _scaled_by_parameter(vertex, shapes[0], params, constants, coefs[0], j)
    edges = []
    for k, s in enumerate(shapes):
        src = torch.arange(int(np.prod(s, dtype=np.int64)), dtype=torch.int64).reshape(s)
        i = torch.broadcast_to(src, vertex.shape).reshape(-1).numpy().astype(np.int64)
        w = to_numpy(coefs[k])
        if np.all(w == 1.0):
            edges.append(Edge(k, i, j.copy(), "x_pre", "err_post"))
        else:
            edges.append(Edge(k, i, j.copy(), "weight * x_pre", "weight * err_post", w))
    offsets = []
    for name in vertex.params:  # a parameter added to the populations (a learned positional code): a bias
        zeroed = {**params, name: torch.zeros_like(params[name])}
        rest = call(vertex, zeros, zeroed, constants)
        ones = call(vertex, zeros, {**params, name: torch.ones_like(params[name])}, constants) - rest
        if not bool((ones == 1).all()):
            raise _unsupported(vertex, f"parameter '{name}' enters '{vertex.op}' scaled, not added; only an added "
                                       "parameter is rendered (as a bias with its accumulator)")
        # which entry of the parameter lands on each neuron (through a slice or a broadcast): probe with ids
        ids = torch.arange(params[name].numel(), dtype=torch.float64).reshape(params[name].shape)
        index = call(vertex, zeros, {**params, name: ids}, constants) - rest
        offsets.append(Offset(to_numpy(c0 - rest), name, to_numpy(index).astype(np.int64)))
        c0, params = rest, zeroed
    if bool((c0 != 0).any()):
        offsets.append(Offset(to_numpy(c0)))
    return edges, offsets


def _scaled_by_parameter(vertex, shape, params, constants, coef, j):
    """A population times (a slice or broadcast of) a parameter: a synapse weight read from the parameter,
    plastic like a linear layer's (a zero initial state leaves a GRU's r * b_hn)."""
    (name,) = vertex.params
    ids = torch.arange(params[name].numel(), dtype=torch.float64).reshape(params[name].shape)
    ones = [torch.ones(shape, dtype=torch.float64)]
    kidx = call(vertex, ones, {**params, name: ids}, constants)
    if not bool((call(vertex, ones, params, constants) == coef).all()) or not bool((kidx == kidx.round()).all()):
        raise _unsupported(vertex, f"parameter '{name}' does not scale the population entry by entry; " + WHY)
    kidx = to_numpy(kidx).astype(np.int64)
    src = torch.arange(int(np.prod(shape, dtype=np.int64)), dtype=torch.int64).reshape(shape)
    i = torch.broadcast_to(src, vertex.shape).reshape(-1).numpy().astype(np.int64)
    return [Edge(0, i, j.copy(), "weight * x_pre", "weight * err_post", to_numpy(coef), name, kidx)], []


# the op table's `brian2` field -> the renderer
RENDERERS = {"linear": _linear, "conv2d": _conv, "pooling": _plane_local_linear, "activation": _activation,
             "index": _index_map, "affine": _affine, "linear_map": _linear_map, "embedding": _embedding}
TUPLE_VALUED = ("index",)  # renderers that read `vertex.select` themselves
_PRODUCT = "a product of two variables; a synapse carries one presynaptic variable"

REASONS = {  # (products, softmax, norms and max pooling are circuits: circuits.py)
    **dict.fromkeys(("addmm", "baddbmm"), _PRODUCT),
    **dict.fromkeys(("rnn_tanh", "rnn_relu", "lstm", "gru"), "it is a whole recurrent layer fused into one vertex "
                                            "(trace(..., fused=...)); traced without `fused`, each gate is a "
                                            "population of its own"),
}


def edges_of(vertex: Vertex, shapes, params, constants, values=None):
    """The vertex's Edges and Offsets. `values`: per parent, its clamped value where it is clamped (the
    indices an embedding reads, an integer index tensor), else None."""
    kind = entry(vertex.op).brian2
    if vertex.select is not None and kind not in TUPLE_VALUED and vertex.op not in REASONS:
        raise _unsupported(vertex, f"it selects output {vertex.select} of a tuple-valued call; {WHY}")
    renderer = RENDERERS.get(kind)
    if renderer is None:
        why = REASONS.get(vertex.op, "no synaptic form is known for this op")
        supported = ", ".join(sorted(e.name for e in ENTRIES if e.brian2))
        raise _unsupported(vertex, f"{why}, so {WHY}.\nThe brian2 backend renders: {supported}")
    return renderer(vertex, shapes, params, constants, values)
