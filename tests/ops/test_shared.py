"""`SharedLinear` sums a shared layer's Hebbian terms in place: the same gradients as autograd's."""

import pytest
import torch
import torch.nn.functional as F

from pcsim.numerics import relative_difference, tolerance
from pcsim.ops.shared import SharedLinear, WeightSum


@pytest.mark.parametrize("bias", [True, False])
def test_shared_linear_gradients_equal_autograd(bias):
    gen = torch.Generator().manual_seed(0)
    kw = {"dtype": torch.float64, "generator": gen}
    w = torch.randn(6, 4, **kw)
    b = torch.randn(6, **kw) if bias else None
    x1 = torch.randn(5, 4, **kw).requires_grad_(True)  # feedback wanted
    x2 = torch.randn(5, 4, **kw)  # a clamped input: no feedback
    x3 = torch.randn(2, 3, 4, **kw).requires_grad_(True)  # leading dims are summed over too
    cots = [torch.randn(5, 6, **kw), torch.randn(5, 6, **kw), torch.randn(2, 3, 6, **kw)]

    def grads(linear):
        wl = w.clone().requires_grad_(True)
        bl = None if b is None else b.clone().requires_grad_(True)
        outs = [linear(x, wl, bl) for x in (x1, x2, x3)]
        leaves = [x1, x3, wl] + ([bl] if bias else [])
        return torch.autograd.grad(outs, leaves, cots, allow_unused=True)

    sums = WeightSum()
    got = grads(lambda x, wl, bl: SharedLinear.apply(x, wl, bl, sums))
    want = grads(F.linear)
    for g, r in zip(got[:2], want[:2], strict=True):  # feedback to the inputs
        assert relative_difference(g, r) <= tolerance(torch.float64)
    assert all(g is None for g in got[2:])  # the parameters' terms went to `sums` instead
    assert relative_difference(sums.weight, want[2]) <= tolerance(torch.float64)
    if bias:
        assert relative_difference(sums.bias, want[3]) <= tolerance(torch.float64)
    else:
        assert sums.bias is None


def test_shared_linear_differs_when_a_use_is_left_out():
    """The check above can fail: dropping one use's term is seen."""
    w = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    xs = [torch.randn(4, 2, dtype=torch.float64) for _ in range(2)]
    sums = WeightSum()
    out = SharedLinear.apply(xs[0], w, None, sums)
    torch.autograd.grad(out, [w], torch.ones_like(out), allow_unused=True)
    full = torch.ones(4, 3, dtype=torch.float64).t().mm(xs[0]) + torch.ones(4, 3, dtype=torch.float64).t().mm(xs[1])
    assert relative_difference(sums.weight, full) > 0.1
