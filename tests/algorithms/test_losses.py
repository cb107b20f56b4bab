"""Output losses: dL/dmu against autograd, and bit for bit the negated output error the exact rules replaced."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import pcsim
from pcsim.algorithms.losses import Loss, get_loss
from pcsim.numerics import relative_difference, tolerance


def _case(name: str, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(3)
    mu = torch.randn(6, 5, generator=gen, dtype=dtype) * 3
    target = (torch.randn(6, 5, generator=gen, dtype=dtype) if name == "mse"
              else torch.randint(0, 5, (6,), generator=gen))
    return mu, target


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["mse", "ce"])
def test_gradient_is_minus_error_bit_for_bit_and_autograds_gradient(name, dtype):
    loss = get_loss(name)
    mu, target = _case(name, dtype)
    grad = loss.gradient(mu, target)
    assert torch.equal(grad, -loss.error(mu, target))
    leaf = mu.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(loss.value(leaf, target), leaf)
    assert relative_difference(grad, expected) <= tolerance(dtype)


def test_a_user_loss_gets_the_negated_error_as_its_gradient():
    @dataclass(frozen=True)
    class Scaled(Loss):
        name: str = "scaled"

        def error(self, mu, target):
            return 3.0 * (target - mu)

    mu, target = _case("mse", torch.float64)
    assert torch.equal(Scaled().gradient(mu, target), -3.0 * (target - mu))


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int16])
def test_class_indices_of_any_integer_dtype_give_the_int64_indices_updates(dtype):
    """torch's cross_entropy takes int64 (and uint8) indices, scatter int64: int32 class ids stopped bp and
    check's oracle inside torch ('expected target dtype to be Long or Byte'), uint8 ones Z-IL and Fa-Z-IL
    ('scatter(): Expected dtype int32/int64 for index'). Checked to lie in [0, classes), they are read as int64."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    x, classes = torch.randn(6, 4, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0, 2])
    loss = torch.nn.functional.cross_entropy(net(x), classes, reduction="sum")
    want = dict(zip([n for n, _ in net.named_parameters()], torch.autograd.grad(loss, list(net.parameters())),
                    strict=True))
    g = pcsim.trace(net, x)
    for rule in (pcsim.bp, pcsim.zil, pcsim.fa_zil, lambda *a, **k: pcsim.fa_zil(*a, mode="autonomous", **k)):
        got = rule(g, (x,), classes.to(dtype), loss="ce")
        for n, w in want.items():
            assert relative_difference(got[n], w) <= tolerance(torch.float64), n
    report = pcsim.check(net, (x,), classes.to(dtype), loss="ce")
    assert report.passed and all(relative_difference(report.reference[n], w) <= tolerance(torch.float64)
                                 for n, w in want.items())
