"""Structural zeros (pcsim/capture/zeros.py): products with a zero the program fixes are left out, exactly.

The oracle is autograd on the module (`trace_and_compare`, and every exact rule through
`capture`); the structure checks say which calls were left out and which were not.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pcsim
from tests.capture.test_recurrent_and_attention import EXACT, assert_forward_matches, capture, op_counts
from tests.graph.helpers import DT, Net, seeded


class ZeroStart(nn.Module):
    """A hand-written recurrence from `torch.zeros`, as research code writes it: h = tanh(W x_t + U h)."""

    def __init__(self, n_in=3, hidden=4, bias=True):
        super().__init__()
        self.w, self.u = nn.Linear(n_in, hidden), nn.Linear(hidden, hidden, bias=bias)
        self.hidden = hidden

    def forward(self, x):
        h = torch.zeros(x.shape[1], self.hidden, dtype=x.dtype)
        for t in range(x.shape[0]):
            h = torch.tanh(self.w(x[t]) + self.u(h))
        return h


def _x(*shape, seed=0):
    with seeded(seed):
        return torch.randn(*shape, dtype=DT)


def test_a_zero_initial_state_leaves_out_its_product_and_stays_exact():
    with seeded(0):
        net = ZeroStart().to(DT)
    graph = capture(net, (_x(3, 2, 3),), EXACT)
    # u reads the state at steps 1 and 2 only; at step 0, u(0) is its bias, a parameter function
    assert len(graph.users["u.weight"]) == 2
    assert op_counts(graph)["linear"] == 3 + 2  # no vertex computes U 0


def test_without_a_bias_the_zero_product_and_its_sum_are_left_out():
    with seeded(0):
        net = ZeroStart(bias=False).to(DT)
    graph = capture(net, (_x(3, 2, 3),), EXACT)
    assert op_counts(graph)["add"] == 2  # steps 1 and 2: w(x) + u(h); step 0 is w(x) + 0 = w(x)
    assert graph["tanh"].parents == ("w",)


def test_a_product_with_zero_drops_its_other_factor_when_nothing_else_reads_it():
    def body(s, x):
        gate = torch.sigmoid(s.g(x))  # read only by the product with zero: no population is left for it
        return s.out(torch.tanh(s.a(x)) + gate * torch.zeros(5, 4, dtype=DT))
    with seeded(0):
        net = Net(body, g=nn.Linear(3, 4), a=nn.Linear(3, 4), out=nn.Linear(4, 2)).to(DT)
    x = _x(5, 3)
    with pytest.warns(UserWarning, match=r"g\.weight"):  # g's gradient is exactly zero: the trace says so
        graph = pcsim.trace(net, x)
    assert_forward_matches(graph, net, (x,))
    assert "sigmoid" not in op_counts(graph) and "g" not in graph
    report = pcsim.check(net, (x,), torch.randn(5, 2, dtype=DT), rule="zil")
    assert report.max_rel_diff <= pcsim.tolerance(DT), report.table()


def test_a_zero_buffer_is_not_structural():
    """A buffer can change after the trace (a loaded state dict): its product stays, and the graph follows it."""
    class BufferStart(nn.Module):
        def __init__(self):
            super().__init__()
            self.u = nn.Linear(4, 4)
            self.register_buffer("h0", torch.zeros(2, 4))

        def forward(self, x):
            return torch.tanh(x + self.u(self.h0))
    with seeded(0):
        net = BufferStart().to(DT)
    x = _x(2, 4)
    graph = pcsim.trace(net, x)
    with torch.no_grad():
        net.h0.fill_(0.5)
    assert_forward_matches(graph, net, (x,))
    assert "u.weight" in graph.users


def test_zero_minus_a_stays_a_negation():
    def body(s, x):
        return s.out(torch.zeros(5, 4, dtype=DT) - torch.tanh(s.a(x)))
    with seeded(0):
        net = Net(body, a=nn.Linear(3, 4), out=nn.Linear(4, 2)).to(DT)
    graph = capture(net, (_x(5, 3),), EXACT)
    assert "sub" in op_counts(graph)


@pytest.mark.parametrize(("src_shape", "shape", "sizes", "dim"), [
    ((6,), (4, 6), (2, 4), 1), ((6,), (4, 6), 3, -1), ((1, 6), (4, 6), (1, 3), 0), ((3, 1), (2, 3, 5), (1, 2), 1),
    ((3, 1), (2, 3, 5), (2, 3), 2)])
def test_split_before_the_broadcast_is_the_split_of_the_broadcast(src_shape, shape, sizes, dim):
    """Values and gradients of `split_broadcast` against `expand` then `split`, autograd the oracle."""
    from pcsim.capture.zeros import split_broadcast

    with seeded(2):
        src = torch.randn(src_shape, dtype=DT, requires_grad=True)
        weights = [torch.randn(p.shape, dtype=DT) for p in src.detach().expand(shape).split(sizes, dim)]
    got = split_broadcast(src, sizes, dim, shape)
    want = src.expand(shape).split(sizes, dim)
    assert len(got) == len(want) and all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    (g_got,) = torch.autograd.grad(sum((g * w).sum() for g, w in zip(got, weights, strict=True)), src)
    (g_want,) = torch.autograd.grad(sum((g * w).sum() for g, w in zip(want, weights, strict=True)), src)
    torch.testing.assert_close(g_got, g_want, rtol=1e-15, atol=1e-15)
