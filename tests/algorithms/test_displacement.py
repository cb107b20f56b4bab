"""The displacement forms of the synchronous sweeps against the general form and autograd."""

import pytest
import torch
from torch import nn

import pcsim
from pcsim.algorithms.displacement import (
    Values,
    advance_displacements,
    affine_delta,
    identity_delta,
    linear_form,
    selection_delta,
    vertex_delta,
)
from pcsim.algorithms.sums import Sums
from pcsim.numerics import tolerance
from pcsim.ops.local import Placement, call


@pytest.mark.parametrize("moved", [("i", "p"), ("i",), ("p",)])
def test_identity_delta_is_its_prediction_minus_its_value(moved):
    """-eps of an inserted identity i below p is x_p - x_i (autograd's sign), for each side that moved."""
    gen = torch.Generator().manual_seed(0)
    x_ff = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    base = {"p": x_ff, "i": x_ff}  # an identity's feed-forward value is its parent's
    neg_disp = {n: 1e-3 * torch.randn(3, 4, generator=gen, dtype=torch.float64) for n in moved}
    value = Values(base, neg_disp, {})
    want = value("p") - value("i")
    got, neg_pred = identity_delta("i", "p", neg_disp)
    assert torch.allclose(got, want, rtol=0, atol=tolerance(torch.float64) * float(x_ff.abs().max())), (got - want)
    assert not torch.equal(want, torch.zeros_like(want))
    pred = x_ff if neg_pred is None else x_ff - neg_pred  # x_ff - neg_pred: the prediction, x_p
    assert torch.equal(pred, value("p"))


def test_closed_form_update_is_the_literal_one_at_gamma_1():
    """`advance_displacements`'s closed form x <- mu + feedback equals x + (-eps + feedback) to rounding,
    vertex by vertex."""
    gen = torch.Generator().manual_seed(1)
    names = ["a", "b", "c", "d"]
    x_ff = {n: torch.randn(5, generator=gen, dtype=torch.float64) for n in names}
    mu = {n: x_ff[n] + 0.1 * torch.randn(5, generator=gen, dtype=torch.float64) for n in names}
    neg_disp = {n: 0.1 * torch.randn(5, generator=gen, dtype=torch.float64) for n in ["a", "b"]}
    fb = {n: torch.randn(5, generator=gen, dtype=torch.float64) for n in ["a", "c"]}
    delta, neg_pred = {}, {}
    for n in names:
        delta[n], neg_pred[n] = vertex_delta(mu[n], x_ff[n], neg_disp.get(n), True)
        assert torch.equal(delta[n], (mu[n] - x_ff[n]) + neg_disp[n] if n in neg_disp else mu[n] - x_ff[n])
    literal = advance_displacements(names, set(), neg_disp, delta, fb, 1.0)
    closed = advance_displacements(names, set(), neg_disp, delta, fb, 1.0, neg_pred)
    assert sorted(literal) == sorted(closed) == names
    for n in names:
        want = -(mu[n] - fb.get(n, 0.0) - x_ff[n])  # -(x_new - x_ff) with x_new = mu - neg_feedback
        assert torch.allclose(closed[n], want, rtol=0, atol=1e-15), n
        assert torch.allclose(closed[n], literal[n], rtol=0, atol=1e-15), n


@pytest.mark.parametrize("own_moved", [True, False])
def test_selection_delta_is_its_prediction_minus_its_value(own_moved):
    """-eps of a chunk of a moved parent is select(x_p) - x (autograd's sign), from displacements alone."""
    gen = torch.Generator().manual_seed(2)
    g = pcsim.trace(_Chunk(), torch.randn(3, 8, dtype=torch.float64))
    item = next(v for v in g.vertices if v.op == "split_with_sizes" and v.name not in g.clamped)
    parent = item.parents[0]
    x_ff = {parent: torch.randn(3, 8, generator=gen, dtype=torch.float64)}
    x_ff[item.name] = call(item, [x_ff[parent]], {}, g.constants).clone()
    neg_disp = {parent: 1e-3 * torch.randn(3, 8, generator=gen, dtype=torch.float64)}
    if own_moved:
        neg_disp[item.name] = 1e-3 * torch.randn(x_ff[item.name].shape, generator=gen, dtype=torch.float64)
    value = Values(x_ff, neg_disp, {})
    lin, got, neg_pred = selection_delta(item, neg_disp, {}, g.constants)
    mu = call(item, [value(parent)], {}, g.constants)
    assert torch.allclose(got, mu - value(item.name), rtol=0, atol=1e-15)
    assert torch.allclose(x_ff[item.name] - neg_pred, mu, rtol=0, atol=1e-15)
    assert isinstance(lin, Placement)


class _Chunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8).double()

    def forward(self, x):
        a, b = self.lin(x).chunk(2, dim=1)
        return a * b


class _Affine(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.lin = nn.Linear(6, 6).double(), nn.Linear(6, 6).double()

    def forward(self, x):
        h = torch.tanh(self.first(x))  # latent: it depends on parameters
        return self.lin(h) + h


@pytest.mark.parametrize("op", ["linear", "add"])
@pytest.mark.parametrize("own_moved", [True, False])
def test_affine_delta_is_its_prediction_minus_its_value(op, own_moved):
    """delta, neg_pred and feedback of a linear layer / a sum from displacements, against mu(x) and autograd's VJP."""
    gen = torch.Generator().manual_seed(3)
    module = _Affine()
    g = pcsim.trace(module, torch.randn(4, 6, dtype=torch.float64))
    v = next(u for u in g.vertices if u.op == op and all(p in g.latent for p in u.parents))
    params = {n: p.detach() for n, p in g.params.items()}
    x_ff, neg_disp = {}, {}
    for u in g.vertices:
        if u.name in g.latent:
            x_ff[u.name] = torch.randn(u.shape, generator=gen, dtype=torch.float64)
    for p in v.parents:
        neg_disp[p] = 1e-3 * torch.randn(g[p].shape, generator=gen, dtype=torch.float64)
    if own_moved:
        neg_disp[v.name] = 1e-3 * torch.randn(v.shape, generator=gen, dtype=torch.float64)
    x_ff[v.name] = call(v, [x_ff[p] for p in v.parents], params, g.constants)  # the feed-forward prediction
    value = Values(x_ff, neg_disp, {})
    d, neg_pred, feedback = affine_delta(v, neg_disp, params, set(x_ff), [g[p].shape for p in v.parents])
    parents = [value(p).clone().requires_grad_(True) for p in v.parents]
    mu = call(v, parents, params, g.constants)
    assert torch.allclose(d, mu.detach() - value(v.name), rtol=0, atol=1e-14)
    assert torch.allclose(x_ff[v.name] - neg_pred, mu.detach(), rtol=0, atol=1e-14)
    want = torch.autograd.grad(mu, parents, d)
    got = {}
    for p, term in feedback:
        got[p] = got[p] + term if p in got else term
    for p, w in zip(v.parents, want, strict=True):
        assert torch.allclose(got[p], w, rtol=0, atol=1e-14), p


def test_linear_form_routes_a_chunks_feedback_to_its_parent_as_autograd_does():
    """`linear_form` on a chunk: its delta, and a feedback term that sums to autograd's VJP; None when not closed."""
    gen = torch.Generator().manual_seed(4)
    g = pcsim.trace(_Chunk(), torch.randn(3, 8, dtype=torch.float64))
    item = next(v for v in g.vertices if v.op == "split_with_sizes" and v.name not in g.clamped)
    parent = item.parents[0]
    neg_disp = {parent: torch.randn(3, 8, generator=gen, dtype=torch.float64)}
    args = (item, neg_disp, {}, g.constants, {parent}, [g[parent].shape])
    assert linear_form(*args, closed=False) is None
    d, _, feedback = linear_form(*args, closed=True)
    assert [p for p, _ in feedback] == [parent]
    sums = Sums()
    sums.add_all(feedback)
    x = neg_disp[parent].clone().requires_grad_(True)
    want, = torch.autograd.grad(call(item, [x], {}, g.constants), x, d)
    assert torch.equal(sums[parent], want)
