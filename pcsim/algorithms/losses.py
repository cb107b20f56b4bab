"""Output losses, summed over the batch, with their output errors `eps_out = -dL/dmu_out`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pcsim.errors import InputError


@dataclass(frozen=True)
class Loss:
    """A loss on one output vertex. Subclasses give the value and its negative gradient."""

    name: str = ""

    def check_target(self, output: str, shape: tuple[int, ...], target: torch.Tensor) -> None:
        raise NotImplementedError

    def as_target(self, target: torch.Tensor) -> torch.Tensor:
        """`target` (checked) in the form `value`, `error` and `gradient` read."""
        return target

    def value(self, mu: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def error(self, mu: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The output error population's value: -dL/dmu (y - mu for MSE)."""
        raise NotImplementedError

    def gradient(self, mu: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """dL/dmu, bit for bit `-error(mu, target)` (the exact rules run in autograd's sign).

        Subclasses that can compute it in one pass (`mu - y` is exactly `-(y - mu)`) override it.
        """
        return -self.error(mu, target)


@dataclass(frozen=True)
class MSE(Loss):
    """L = 1/2 sum (mu - y)^2: the output value clamped to the target."""

    name: str = "mse"

    def check_target(self, output, shape, target):
        if not target.is_floating_point():
            raise InputError(f"loss 'mse' on output '{output}' needs a floating target, got {target.dtype}")
        if tuple(target.shape) != tuple(shape):
            raise InputError(f"target for output '{output}' has shape {tuple(target.shape)}, "
                             f"the output has shape {tuple(shape)}")

    def value(self, mu, target):
        return 0.5 * ((mu - target) ** 2).sum()

    def error(self, mu, target):
        return target - mu

    def gradient(self, mu, target):
        return mu - target


@dataclass(frozen=True)
class CrossEntropy(Loss):
    """Summed cross-entropy of logits `mu` (classes on dim 1) against class indices (of any integer dtype)."""

    name: str = "ce"

    def as_target(self, target):
        # torch's cross_entropy and scatter read int64 indices (int32 stopped bp inside torch, uint8 Z-IL):
        # checked to lie in [0, classes), the indices are the same numbers in int64
        return target if target.dtype == torch.int64 else target.long()

    def check_target(self, output, shape, target):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise InputError(f"loss 'ce' on output '{output}' needs integer class indices, got {target.dtype}")
        if len(shape) < 2:
            raise InputError(f"loss 'ce' on output '{output}' needs logits of shape (batch, classes, ...), "
                             f"the output has shape {tuple(shape)}")
        want = (shape[0],) + tuple(shape[2:])
        if tuple(target.shape) != want:
            raise InputError(f"target for output '{output}' has shape {tuple(target.shape)}, "
                             f"'ce' on logits of shape {tuple(shape)} needs {want}")
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= shape[1]):
            raise InputError(f"target for output '{output}' has class indices outside [0, {shape[1]})")

    def value(self, mu, target):
        return F.cross_entropy(mu, target, reduction="sum")

    def error(self, mu, target):
        return self._add_at_target(torch.softmax(mu, dim=1).neg_(), target, 1.0)  # onehot - softmax

    def gradient(self, mu, target):
        return self._add_at_target(torch.softmax(mu, dim=1), target, -1.0)  # softmax - onehot

    @staticmethod
    def _add_at_target(p, target, value):
        """`p` plus `value` at each sample's target class, in place: the bits of `p -/+ onehot`.

        One scatter instead of building the one-hot (F.one_hot validates, allocates and casts): 40 us
        against 70 us a call on a 256x10 output, paid at every inference step of IL.
        """
        index = target.unsqueeze(1)
        return p.scatter_add_(1, index, torch.full(index.shape, value, dtype=p.dtype, device=p.device))


LOSSES: dict[str, Loss] = {"mse": MSE(), "ce": CrossEntropy()}


def get_loss(loss: str | Loss) -> Loss:
    if isinstance(loss, Loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss '{loss}'; choose one of {sorted(LOSSES)} or pass a pcsim Loss")
    return LOSSES[loss]
