"""Ops that need more than one presynaptic variable per synapse, as small circuits (data only).

A synapse reads one presynaptic and one postsynaptic neuron, so a product of two populations, a
softmax or a normalisation cannot be one projection. Each becomes a circuit:
- copies (`copy`): a population reads another's variable neuron by neuron (a gate's value beside the
  value it multiplies: a sigma-pi unit);
- helper groups (`Group`): instantaneous neurons with no dynamics, whose summed variables pool a
  row (a softmax's normaliser, a norm's mean and variance, the products of a matrix product);
- summed projections (`Sum`), each at a `stage` of the step: sums that read only values first,
  then those that read what the earlier ones pooled; feedback sums (BACKWARD + k) read errors.
The vertex's own feedback to parent k is a `Sum` into "fb" on "parent:k" (J^T err, by hand for
each circuit; sympy differentiates the elementwise ones), so explicit Euler stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy
import torch

from pcsim.backends.brian2.synapses import broadcast_ids, flat_ids, ids, ints, size, to_numpy, unsupported
from pcsim.graph.ir import ConstArg, ParamArg, ParentArg, Vertex

BACKWARD = 10  # stages below read values (and what earlier stages pooled), from here on errors
READS_MU = BACKWARD - 2  # a sum over a population's prediction (the cross-entropy's normaliser)


@dataclass
class Group:
    name: str
    n: int
    equations: list[str]
    values: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Sum:
    """Synapses pre -> post (i -> j) summing `expr` into `var` on one side ("fb" on a parent: its feedback)."""

    pre: str
    post: str
    i: np.ndarray
    j: np.ndarray
    var: str
    side: str
    expr: str
    stage: int
    values: dict[str, np.ndarray] = field(default_factory=dict)  # per-synapse constants


def copy(holder: str, name: str, source: str, var: str, index: np.ndarray, stage: int = 0) -> Sum:
    """`name` on `holder` ("self" or a helper group, which declares `name : 1`) is `var` of `source`
    ("parent:k", "self" or a helper group) at neuron index[j], copied at `stage` (after the stage that
    wrote `var`). A summed copy, one synapse per reading neuron: Brian2 lets a synapse read a population's
    subexpressions (err_post) only when they rest on the population's own variables, not on linked ones."""
    return Sum(source, holder, index, np.arange(index.size), name, "post", f"{var}_pre", stage)


@dataclass
class Accumulator:
    """A per-neuron plasticity accumulator of the vertex: dw/dt = gate * hebb / tau_w, summed into
    `param` at `index` when read (a bias: hebb = err; a norm's scale: err * xhat)."""

    param: str
    index: np.ndarray
    hebb: str


@dataclass
class Circuit:
    mu: str
    equations: list[str] = field(default_factory=list)  # subexpressions and constants on the vertex
    values: dict[str, np.ndarray] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)
    sums: list[Sum] = field(default_factory=list)
    accumulators: list[Accumulator] = field(default_factory=list)
    code: list[tuple[str, int]] = field(default_factory=list)  # (statements run on the vertex, stage)


def pooled_rows(shape, dims) -> tuple[np.ndarray, int, int]:
    """Each neuron's row when `dims` are pooled (rows numbered in order), rows, and row length."""
    dims = sorted(d % len(shape) for d in dims)
    kept = [d for d in range(len(shape)) if d not in dims]
    pooled = ids(shape).permute(*kept, *dims).reshape(-1, size([shape[d] for d in dims]))
    row = np.empty(size(shape), dtype=np.int64)
    row[flat_ids(pooled)] = np.repeat(np.arange(pooled.shape[0]), pooled.shape[1])
    return row, pooled.shape[0], pooled.shape[1]


def cross_entropy(shape) -> Circuit:
    """The normaliser zce = sum of exp(mu) over the classes (dim 1) of the cross-entropy's output error
    y - exp(mu) / zce (render.py): a helper neuron per sample (and position) pools it, and the output reads it back.
    Its own name: an output computed by log_softmax holds that op's normaliser zr beside it."""
    row, rows, _ = pooled_rows(tuple(shape), [1])
    every = np.arange(row.size)
    return Circuit("", groups=[Group("softmax", rows, ["z : 1"])],
                   sums=[Sum("self", "softmax", every, row, "z", "post", "exp(mu_pre)", READS_MU),
                         copy("self", "zce", "softmax", "z", row, READS_MU + 1)])


ELEMENTWISE = {"mul": "{0} * {1}", "div": "{0} / {1}", "pow": "{0} ** {1}"}


def _elementwise(vertex: Vertex, shapes, params, constants) -> Circuit:
    """x * y, x / y or x ** y of two populations (`circuit_of` sends only those here): each parent's value
    copied beside the other's, and each parent's feedback err times its partial derivative (sympy's)."""
    if len(vertex.args) > 2 or vertex.kwargs:
        raise unsupported(vertex, "extra arguments have no Brian2 rendering")
    mu = ELEMENTWISE[vertex.op].format(*(f"xp{arg.index}" for arg in vertex.args))
    expr = sympy.sympify(mu)
    eqs, sums, links = [], [], []
    for k in dict.fromkeys(arg.index for arg in vertex.args):  # each parent once, in order
        links.append(copy("self", f"xp{k}", f"parent:{k}", "x", broadcast_ids(shapes[k], vertex.shape)))
        eqs += [f"d{k} = {sympy.diff(expr, sympy.Symbol(f'xp{k}'))} : 1", f"xp{k} : 1"]
        sums.append(Sum(f"parent:{k}", "self", links[-1].i, links[-1].j, "fb", "pre", f"err_post * d{k}_post",
                        BACKWARD))
    return Circuit(mu, eqs, {}, [], sums + links)


def _matmul(vertex: Vertex, shapes, params, constants) -> Circuit:
    """out[..., i, j] = sum_d a[..., i, d] b[..., d, j]: one helper neuron per product a * b."""
    a, b = vertex.args[:2]
    if not (isinstance(a, ParentArg) and isinstance(b, ParentArg)) or len(vertex.args) != 2:
        raise unsupported(vertex, "a matrix product of a population and a non-population")
    sa, sb = shapes[a.index], shapes[b.index]
    if len(sa) < 2 or len(sb) < 2:
        raise unsupported(vertex, f"a matrix product of shapes {sa} and {sb} (vectors are not rendered)")
    batch = torch.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]))
    full = (*batch, sa[-2], sa[-1], sb[-1])
    # each product's a, b and output neuron
    pa, pb, po = (flat_ids(torch.broadcast_to(ids(s).unsqueeze(d), full))
                  for s, d in ((sa, -1), (sb, -3), (vertex.shape, -2)))
    m = pa.size
    products = Group("prod", m, ["p = xa * xb : 1", "es : 1", "xa : 1", "xb : 1"])
    every = np.arange(m)
    sums = [Sum("prod", "self", every, po, "prod_sum", "post", "p_pre", 1),
            Sum("self", "prod", po, every, "es", "post", "err_pre", BACKWARD),
            Sum(f"parent:{a.index}", "prod", pa, every, "fb", "pre", "es_post * xb_post", BACKWARD + 1),
            Sum(f"parent:{b.index}", "prod", pb, every, "fb", "pre", "es_post * xa_post", BACKWARD + 1),
            copy("prod", "xa", f"parent:{a.index}", "x", pa), copy("prod", "xb", f"parent:{b.index}", "x", pb)]
    return Circuit("prod_sum", ["prod_sum : 1"], groups=[products], sums=sums)


def _softmax(vertex: Vertex, shapes, params, constants) -> Circuit:
    """softmax or log_softmax over a dimension: helper neurons pool each row's normaliser and its error dot."""
    x, dim = vertex.args[0], vertex.args[1]
    if not isinstance(x, ParentArg):
        raise unsupported(vertex, "its input is not a population")
    shape = shapes[x.index]
    row, rows, _ = pooled_rows(shape, [dim])
    every = np.arange(size(shape))
    log = vertex.op == "_log_softmax"
    groups = [Group("norm", rows, ["s : 1"]), Group("dot", rows, ["d : 1"])]
    back = "err_post - exp(mu_post) * dr_post" if log else "mu_post * (err_post - dr_post)"
    sums = [Sum(f"parent:{x.index}", "norm", every, row, "s", "post", "exp(x_pre)", 0),
            Sum("self", "dot", every, row, "d", "post", "err_pre" if log else "mu_pre * err_pre", BACKWARD),
            Sum(f"parent:{x.index}", "self", every, every.copy(), "fb", "pre", back, BACKWARD + 2),
            copy("self", "xp", f"parent:{x.index}", "x", every), copy("self", "zr", "norm", "s", row, 1),
            copy("self", "dr", "dot", "d", row, BACKWARD + 1)]
    mu = "xp - log(zr)" if log else "exp(xp) / zr"
    return Circuit(mu, ["xp : 1", "zr : 1", "dr : 1"], {}, groups, sums)


def _norm_parts(vertex: Vertex, shape):
    """(rows pooled by the statistics, eps, scale/shift slots and each neuron's index into them, stats):
    stats None = from the batch, else constant (mean, var) per neuron."""
    op, a, every = vertex.op, vertex.args, np.arange(size(shape), dtype=np.int64)
    if op == "native_layer_norm":
        k = len(a[1])
        row, _, _ = pooled_rows(shape, range(len(shape) - k, len(shape)))
        return row, float(a[4]), a[2], a[3], every % size(shape[-k:]), None
    channel = every // size(shape[2:]) % shape[1]
    if op == "native_group_norm":
        groups = int(a[6])
        row = every // size(shape[1:]) * groups + channel // (shape[1] // groups)
        return row, float(a[7]), a[1], a[2], channel, None
    if op == "_native_batch_norm_legit_no_training":
        return channel, float(a[6]), a[1], a[2], channel, (a[3], a[4])
    if op in ("_native_batch_norm_legit", "native_batch_norm", "_native_batch_norm_legit_functional"):
        if len(a) == 6:  # the overload without running statistics
            return channel, float(a[5]), a[1], a[2], channel, None
        return channel, float(a[7]), a[1], a[2], channel, None if bool(a[5]) else (a[3], a[4])
    raise unsupported(vertex, "an unknown normalisation")


def _normalise(vertex: Vertex, shapes, params, constants) -> Circuit:
    """Layer, group and batch norm: each neuron's xhat from its row's mean and variance (pooled or constant)."""
    x = vertex.args[0]
    if not isinstance(x, ParentArg) or vertex.select not in (None, 0):
        raise unsupported(vertex, "only the normalised output of a population is rendered")
    shape = shapes[x.index]
    row, eps, scale, shift, pidx, stats = _norm_parts(vertex, shape)
    n, every, src = size(shape), np.arange(size(shape)), f"parent:{x.index}"
    eqs, values, accs = [], {}, []
    for name, slot, default in (("gam", scale, 1.0), ("bet", shift, 0.0)):
        eqs.append(f"{name} : 1 (constant)")
        if slot is None:
            values[name] = np.full(n, default)
        elif isinstance(slot, ParamArg):
            values[name] = to_numpy(params[slot.name])[pidx]
            accs.append(Accumulator(slot.name, pidx, "err * xhat" if name == "gam" else "err"))
        else:
            raise unsupported(vertex, f"its {'scale' if name == 'gam' else 'shift'} is not a parameter")
    links, groups, sums = [copy("self", "xp", src, "x", every)], [], []
    if stats is None:  # batch statistics: mean, then variance, pooled by helper neurons, one per row
        rows = int(row.max()) + 1
        length = np.bincount(row, minlength=rows).astype(np.float64)
        values["dn"] = length[row]
        eqs += ["dn : 1 (constant)", f"rs = 1 / sqrt(vr + {eps!r}) : 1"]
        groups += [Group("mean", rows, ["m : 1", "dn : 1 (constant)"], {"dn": length}),
                   Group("var", rows, ["v : 1", "dn : 1 (constant)", "mg : 1"], {"dn": length}),
                   Group("g1", rows, ["s1 : 1"]), Group("g2", rows, ["s2 : 1"])]
        links += [copy("self", "mr", "mean", "m", row, 3), copy("self", "vr", "var", "v", row, 3),
                  copy("self", "s1r", "g1", "s1", row, BACKWARD + 1),
                  copy("self", "s2r", "g2", "s2", row, BACKWARD + 1),
                  copy("var", "mg", "mean", "m", np.arange(rows), 1)]
        sums += [Sum(src, "mean", every, row, "m", "post", "x_pre / dn_post", 0),
                 Sum(src, "var", every, row, "v", "post", "(x_pre - mg_post)**2 / dn_post", 2),
                 Sum("self", "g1", every, row, "s1", "post", "err_pre * gam_pre / dn_pre", BACKWARD),
                 Sum("self", "g2", every, row, "s2", "post", "err_pre * gam_pre * xhat_pre / dn_pre", BACKWARD),
                 Sum(src, "self", every, every.copy(), "fb", "pre",
                     "rs_post * (err_post * gam_post - s1r_post - xhat_post * s2r_post)", BACKWARD + 2)]
    else:
        mean, var = (to_numpy(constants[s.name])[pidx] if isinstance(s, ConstArg) else None for s in stats)
        if mean is None or var is None:
            raise unsupported(vertex, "its running statistics are not constants")
        values["mr"], values["rs"] = mean, 1.0 / np.sqrt(var + eps)
        eqs += ["mr : 1 (constant)", "rs : 1 (constant)"]
        sums.append(Sum(src, "self", every, every.copy(), "fb", "pre", "err_post * gam_post * rs_post", BACKWARD))
    eqs += ["xhat = (xp - mr) * rs : 1"] + [f"{lk.var} : 1" for lk in links if lk.post == "self"]
    return Circuit("gam * xhat + bet", eqs, values, groups, sums + links, accs)


def _max_pool(vertex: Vertex, shapes, params, constants) -> Circuit:
    """A window's max and its first argmax (torch's choice on ties), kept as the population's own variables
    by a comparison over one copied value per window offset (Brian2 code run at each step), and the error
    routed back to the argmax by one synapse per (input, window)."""
    a = list(vertex.args) + [None] * 6
    x = a[0]
    if not isinstance(x, ParentArg) or vertex.select not in (None, 0):
        raise unsupported(vertex, "only the pooled values of a population are rendered")
    kh, kw = ints(a[1], 2)
    # (an empty stride is the kernel's size)
    (sh, sw), (ph, pw), (dh, dw) = ints(a[2] or (kh, kw), 2), ints(a[3] or 0, 2), ints(a[4] or 1, 2)
    B, C, H, W = shapes[x.index]
    _, _, Ho, Wo = vertex.shape
    offsets = [(i, j) for i in range(kh) for j in range(kw)]
    ih = np.arange(Ho)[None, :, None] * sh - ph + np.array([i * dh for i, _ in offsets])[:, None, None]
    iw = np.arange(Wo)[None, None, :] * sw - pw + np.array([j * dw for _, j in offsets])[:, None, None]
    ok = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)  # (offset, Ho, Wo)
    src = np.clip(ih, 0, H - 1) * W + np.clip(iw, 0, W - 1)
    # an offset that falls in the padding reads the window's first real input instead: a repeat never
    # changes the max, and the strict comparison keeps the first argmax
    first_offset = ok.argmax(axis=0)  # (Ho, Wo)
    first = src[first_offset, np.arange(Ho)[:, None], np.arange(Wo)[None, :]]
    src = np.where(ok, src, first)
    planes = np.arange(B * C)[:, None, None, None] * (H * W)
    src = (planes + src[None]).transpose(1, 0, 2, 3).reshape(len(offsets), -1)  # (offset, out neuron)
    okn = np.broadcast_to(ok[:, None], (len(offsets), B * C, Ho, Wo)).reshape(len(offsets), -1)
    # the offset each copy stands for: its own, or (in the padding) the first real one it repeats
    stands = np.where(okn, np.arange(len(offsets))[:, None], np.broadcast_to(first_offset, (B * C, Ho, Wo)).reshape(-1))
    copies = [copy("self", f"c{r}", f"parent:{x.index}", "x", src[r]) for r in range(len(offsets))]
    eqs = [f"o{r} : 1 (constant)" for r in range(len(offsets))] + [f"c{r} : 1" for r in range(len(offsets))]
    values = {f"o{r}": stands[r].astype(np.float64) for r in range(len(offsets))}
    code = ["pmax = c0", "parg = o0"]
    for r in range(1, len(offsets)):
        up = f"int(c{r} > pmax)"
        code += [f"parg = parg * (1 - {up}) + o{r} * {up}", f"pmax = pmax * (1 - {up}) + c{r} * {up}"]
    n = size(vertex.shape)
    out = np.broadcast_to(np.arange(n), (len(offsets), n))
    fb = Sum(f"parent:{x.index}", "self", src[okn], out[okn], "fb", "pre",
             "err_post * int(abs(parg_post - offset) < 0.5)", BACKWARD,
             {"offset": np.broadcast_to(np.arange(len(offsets))[:, None], okn.shape)[okn].astype(np.float64)})
    return Circuit("pmax", ["pmax : 1", "parg : 1", *eqs], values, [], [fb, *copies], code=[("\n".join(code), 1)])


CIRCUITS = {
    **dict.fromkeys(("mul", "div", "pow"), _elementwise),
    **dict.fromkeys(("bmm", "matmul", "mm"), _matmul),
    **dict.fromkeys(("_softmax", "_safe_softmax", "_log_softmax"), _softmax),
    **dict.fromkeys(("native_layer_norm", "native_group_norm", "_native_batch_norm_legit", "native_batch_norm",
                     "_native_batch_norm_legit_no_training", "_native_batch_norm_legit_functional"), _normalise),
    **dict.fromkeys(("max_pool2d_with_indices", "max_pool2d"), _max_pool),
}


def circuit_of(vertex: Vertex, shapes, params, constants) -> Circuit | None:
    """The vertex's circuit, or None when its op renders as plain projections (ops.py)."""
    make = CIRCUITS.get(vertex.op)
    if make is None:
        return None
    if make is _elementwise and sum(isinstance(s, ParentArg) for s in vertex.args) < 2:
        return None  # affine in one population (a scaling, a shift): plain projections
    return make(vertex, shapes, params, constants)
