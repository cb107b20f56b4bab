"""Ops read from torch by probing: index maps of one or more populations (reshapes, slices, cat, padding),
fixed linear maps (sum, mean), affine ops (add, sub, scaling; an added or scaling parameter), embeddings."""

from __future__ import annotations

import numpy as np
import torch

from pcsim.backends.brian2.synapses import (
    WHY,
    Offset,
    bind,
    broadcast_ids,
    edge,
    ids,
    size,
    to_numpy,
    unsupported,
    weight_of,
)
from pcsim.graph.ir import ConstArg, ParentArg
from pcsim.ops.local import call


def one_hot_rows(n: int, width: int, apply, outputs: int = 1) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A linear map read from torch row by row: `apply` maps m one-hot rows (an (m, n) float64 tensor) to
    `outputs` tensors of m rows (of `width` entries in all, which sizes the chunks of rows); per output,
    the (row, column, value) of its nonzero entries, in row-major order."""
    found = [([], [], []) for _ in range(outputs)]
    chunk = max(1, 4_000_000 // max(1, width))
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        eye = torch.zeros(m, n, dtype=torch.float64)
        eye[torch.arange(m), start + torch.arange(m)] = 1.0
        for (rows, cols, vals), out in zip(found, apply(eye), strict=True):
            out = out.reshape(m, -1)
            nz = torch.nonzero(out)
            rows.append(start + nz[:, 0].numpy())
            cols.append(nz[:, 1].numpy())
            vals.append(out[nz[:, 0], nz[:, 1]].numpy())
    return [tuple(np.concatenate(v) for v in f) for f in found]


def _integer_parents(values, n: int) -> list:
    """Per parent, its clamped value where that is an integer tensor (indices the op reads), else None."""
    return [v if v is not None and not (v.is_floating_point() or v.is_complex()) else None
            for v in (values or [None] * n)]


def _index_map(vertex, shapes, params, constants, values=None):
    """Ops that only move values (views, slices, cat, stack, padding): the op applied to the neuron ids of
    all its parents (numbered one after the other) gives each output neuron's source. It runs twice, the ids
    shifted by S the second time: an output that moves by S is a source, one that stays put is a constant (a
    pad value: an `Offset`); anything else is not an index map and is refused. One Edge per parent."""
    fixed = _integer_parents(values, len(shapes))
    base = np.cumsum([0, *(size(s) for s in shapes)], dtype=np.int64)  # each parent's first id
    shift = float(base[-1] + 1)

    def run(offset):
        probes = [torch.arange(base[k], base[k + 1], dtype=torch.float64).reshape(s) + offset
                  for k, s in enumerate(shapes)]
        out = call(vertex, [p if v is None else v for p, v in zip(probes, fixed, strict=True)], params, constants)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(vertex.shape):
            raise unsupported(vertex, "its index map does not have the vertex's shape")
        return out.detach().to(torch.float64).reshape(-1)

    try:
        a, b = run(1.0), run(1.0 + shift)
    except (RuntimeError, TypeError, ValueError) as e:
        raise unsupported(vertex, f"applying it to neuron ids failed ({e}); {WHY}") from e
    moved, still = (b - a) == shift, (b - a) == 0
    src = (a - 1).to(torch.int64).numpy()
    ok = bool((moved | still).all()) and bool((a[moved] == torch.round(a[moved])).all())
    ok = ok and bool(((src[moved.numpy()] >= 0) & (src[moved.numpy()] < base[-1])).all())
    if not ok:
        raise unsupported(vertex, f"'{vertex.op}' here does more than move values (its output is not a "
                                   f"selection of its parents' neurons); {WHY}")
    moved = moved.numpy()
    j_all = np.arange(src.size, dtype=np.int64)
    edges = []
    for k in range(len(shapes)):
        sel = moved & (src >= base[k]) & (src < base[k + 1])
        if sel.any():
            edges.append(edge(k, src[sel] - base[k], j_all[sel]))
    const = np.where(moved, 0.0, a.numpy())
    return edges, ([Offset(const)] if bool((const != 0).any()) else [])


def _linear_map(vertex, shapes, params, constants, values=None):
    """Parameter-free ops linear in their parents (sum, mean over any dims): the Jacobian, read row by row
    from torch's own VJP (one-hot cotangents, in chunks), its entries as the synapses' weights; a constant
    part is an `Offset`. Checked to be affine on random inputs, else refused."""
    fixed = _integer_parents(values, len(shapes))
    floats = [k for k in range(len(shapes)) if fixed[k] is None]
    zeros = [torch.zeros(s, dtype=torch.float64) if v is None else v for s, v in zip(shapes, fixed, strict=True)]

    def f(*xs):
        given = dict(zip(floats, xs, strict=True))
        return call(vertex, [given.get(k, z) for k, z in enumerate(zeros)], params, constants)

    try:
        c0, pull = torch.func.vjp(f, *[zeros[k] for k in floats])
    except (RuntimeError, TypeError, ValueError) as e:
        raise unsupported(vertex, f"its Jacobian could not be read ({e}); {WHY}") from e
    if not isinstance(c0, torch.Tensor) or tuple(c0.shape) != tuple(vertex.shape):
        raise unsupported(vertex, "its output does not have the vertex's shape")
    n_out = c0.numel()
    found = one_hot_rows(n_out, sum(size(shapes[k]) for k in floats),
                         lambda eye: torch.func.vmap(pull)(eye.reshape(-1, *vertex.shape)), len(floats))
    g = torch.Generator().manual_seed(0)
    rnd = {k: torch.randn(shapes[k], generator=g, dtype=torch.float64) for k in floats}
    want = to_numpy(c0).copy()
    edges = []
    for k, (j, i, w) in zip(floats, found, strict=True):
        want += np.bincount(j, weights=w * to_numpy(rnd[k])[i], minlength=n_out)
        if i.size:
            edges.append(edge(k, i, j, w))
    got = to_numpy(f(*[rnd[k] for k in floats]))
    if not np.allclose(got, want, rtol=1e-12, atol=1e-12):
        raise unsupported(vertex, f"'{vertex.op}' here is not linear in its parent populations; {WHY}")
    return edges, ([Offset(to_numpy(c0))] if bool((c0 != 0).any()) else [])


def _embedding(vertex, shapes, params, constants, values=None):
    """Each output neuron (token t, feature d) predicts the table's entry (index[t], d): a per-neuron `Offset`
    of that parameter entry, whose accumulator (err) is the embedding's gradient, added into the token's row.
    The indices are clamped (integers): the rendering reads them."""
    a = bind(vertex, ("weight", "indices", "padding_idx", "scale_grad_by_freq", "sparse"),
              {"padding_idx": -1, "scale_grad_by_freq": False, "sparse": False})
    W = weight_of(vertex, a["weight"], params, constants, "weight")
    slot = a["indices"]
    tokens = None
    if isinstance(slot, ParentArg) and values is not None:
        tokens = values[slot.index]
    elif isinstance(slot, ConstArg):
        tokens = constants[slot.name]
    if tokens is None or tokens.is_floating_point():
        raise unsupported(vertex, "its indices are not a clamped integer input (a population of indices would "
                                   f"make the prediction a lookup by a variable); {WHY}")
    if bool(a["scale_grad_by_freq"]):
        raise unsupported(vertex, "scale_grad_by_freq divides each row's gradient by its token count, which a "
                                   f"per-neuron accumulator does not; {WHY}")
    if W.value.dim() != 2:
        raise unsupported(vertex, f"an embedding table of shape {tuple(W.value.shape)}")
    D = W.value.shape[1]
    tok = tokens.detach().reshape(-1).to(torch.int64).cpu().numpy()
    pad = int(a["padding_idx"])
    if pad >= 0 and bool((tok == pad).any()):
        raise unsupported(vertex, f"token {pad} is its padding_idx, whose row torch gives no gradient, but a "
                                   f"neuron predicting it would accumulate one; {WHY}")
    flat = (tok[:, None] * D + np.arange(D, dtype=np.int64)[None, :]).reshape(-1)
    if flat.size != size(vertex.shape):
        raise unsupported(vertex, "its output does not have the vertex's shape")
    return [], W.offsets(flat)


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
        raise unsupported(vertex, f"'{vertex.op}' here is not affine in its parent populations (a product or "
                                   "quotient of populations: a synapse carries one presynaptic variable); " + WHY)
    sources = [broadcast_ids(s, vertex.shape) for s in shapes]
    j = np.arange(size(vertex.shape), dtype=np.int64)
    if vertex.op == "mul" and len(shapes) == 1 and len(vertex.params) == 1:
        # a population times (a slice or broadcast of) a parameter: a synapse weight read from the parameter,
        # plastic like a linear layer's (a zero initial state leaves a GRU's r * b_hn)
        (name,) = vertex.params
        ones = [torch.ones(shapes[0], dtype=torch.float64)]
        kidx = call(vertex, ones, {**params, name: ids(params[name].shape).double()}, constants)
        entrywise = bool((call(vertex, ones, params, constants) == coefs[0]).all())
        if not entrywise or not bool((kidx == kidx.round()).all()):
            raise unsupported(vertex, f"parameter '{name}' does not scale the population entry by entry; " + WHY)
        return [edge(0, sources[0], j, to_numpy(coefs[0]), name, to_numpy(kidx).astype(np.int64))], []
    edges = [edge(k, i, j.copy(), to_numpy(cf)) for k, (i, cf) in enumerate(zip(sources, coefs, strict=True))]
    offsets = []
    for name in vertex.params:  # a parameter added to the populations (a learned positional code): a bias
        zeroed = {**params, name: torch.zeros_like(params[name])}
        rest = call(vertex, zeros, zeroed, constants)
        ones = call(vertex, zeros, {**params, name: torch.ones_like(params[name])}, constants) - rest
        if not bool((ones == 1).all()):
            raise unsupported(vertex, f"parameter '{name}' enters '{vertex.op}' scaled, not added; only an added "
                                       "parameter is rendered (as a bias with its accumulator)")
        # which entry of the parameter lands on each neuron (through a slice or a broadcast): probe with ids
        index = call(vertex, zeros, {**params, name: ids(params[name].shape).double()}, constants) - rest
        offsets.append(Offset(to_numpy(c0 - rest), name, to_numpy(index).astype(np.int64)))
        c0, params = rest, zeroed
    if bool((c0 != 0).any()):
        offsets.append(Offset(to_numpy(c0)))
    return edges, offsets
