"""Output losses: dL/dmu against autograd, and bit for bit the negated output error the exact rules replaced."""

from dataclasses import dataclass

import pytest
import torch

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
