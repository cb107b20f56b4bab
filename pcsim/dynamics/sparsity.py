"""Neuron-level sparsity of the vector field's Jacobian, for implicit solvers.

Each (vertex, parent) edge's pattern P is the identity for elementwise ops, block-diagonal over the batch for ops
that never mix samples (probed with a perturbation of one sample), dense otherwise. A value neuron feels its parents
through its prediction (P), its children through their errors (P^T), their other parents through them (P^T P).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from pcsim.dynamics.field import VectorField
from pcsim.ops.local import call
from pcsim.ops.table import entry


def _batch_local(field: VectorField, name: str, parent: str, batch: int) -> bool:
    """Perturbing the parent in one sample changes the vertex in that sample only."""
    problem = field.problem
    vertex = problem.graph[name]
    values = {**problem.clamped, **field.base}
    if batch < 2 or vertex.shape[:1] != (batch,) or tuple(values[parent].shape[:1]) != (batch,):
        return False
    gen = torch.Generator(device="cpu").manual_seed(0)
    base = call(vertex, [values[p] for p in vertex.parents], problem.params, problem.graph.constants)
    for sample in (0, batch - 1):
        moved = dict(values)
        bump = torch.zeros_like(values[parent])
        bump[sample] = torch.randn(bump[sample].shape, generator=gen, dtype=bump.dtype).to(bump.device)
        moved[parent] = values[parent] + bump
        out = call(vertex, [moved[p] for p in vertex.parents], problem.params, problem.graph.constants)
        others = [b for b in range(batch) if b != sample]
        if not torch.equal(out[others], base[others]):
            return False
    return True


def edge_patterns(field: VectorField) -> dict[tuple[str, str], sp.csr_matrix]:
    """(vertex, latent parent) -> boolean pattern of d mu_vertex / d x_parent (rows: vertex neurons)."""
    g = field.problem.graph
    sizes = {n: field.sizes["u", n] for n in field.latent}
    batch = next(iter(field.base.values())).shape[0] if field.base else 0
    patterns = {}
    for n in field.latent:
        v = g[n]
        for p in v.parents:
            if p not in sizes:
                continue
            if entry(v.fn).elementwise and tuple(g[p].shape) == tuple(v.shape):
                patterns[n, p] = sp.identity(sizes[n], dtype=bool, format="csr")
            elif _batch_local(field, n, p, batch):
                block = np.ones((sizes[n] // batch, sizes[p] // batch), dtype=bool)
                patterns[n, p] = sp.kron(sp.identity(batch, dtype=bool), sp.csr_matrix(block), format="csr")
            else:
                patterns[n, p] = sp.csr_matrix(np.ones((sizes[n], sizes[p]), dtype=bool))
    return patterns


def jacobian_sparsity(field: VectorField) -> sp.csr_matrix:
    """Boolean pattern of d f / d y over the field's packed state (see field.layout)."""
    g = field.problem.graph
    latent = set(field.latent)
    P = edge_patterns(field)
    blocks: dict[tuple, sp.csr_matrix] = {}

    def add(row, col, m):
        m = sp.csr_matrix(m, dtype=bool)
        blocks[row, col] = m if (row, col) not in blocks else (blocks[row, col] + m)

    leaky = set(field.leaky)
    for n in field.latent:
        eye = sp.identity(field.sizes["u", n], dtype=bool, format="csr")
        own = ("e", n) if n in leaky else None
        add(("u", n), ("u", n), eye)
        for p in g[n].parents:  # through the vertex's own prediction
            if p in latent:
                add(("u", n), ("u", p), P[n, p])
                if own:
                    add(own, ("u", p), P[n, p])
        if own:
            add(("u", n), own, eye)
            add(own, own, eye)
            add(own, ("u", n), eye)
        for c in g.children[n]:  # through the children's errors and Jacobians
            add(("u", n), ("e", c) if c in leaky else ("u", c), P[c, n].T)
            for q in g[c].parents:
                if q in latent:
                    add(("u", n), ("u", q), P[c, n].T @ P[c, q])
    for k in [k for k in field.layout if k[0] == "w"]:  # accumulators: read by none; from users' errors and inputs
        size = field.sizes[k]
        for n in field.latent:
            if k[1] in g[n].params:
                for src in [("u", n)] + [("u", p) for p in g[n].parents if p in latent] + (
                        [("e", n)] if n in leaky else []):
                    add(k, src, np.ones((size, field.sizes[src]), dtype=bool))
    rows, cols = [], []
    for (r, c), m in blocks.items():
        coo = m.tocoo()
        rows.append(coo.row + field.offsets[r])
        cols.append(coo.col + field.offsets[c])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(field.size, field.size))
