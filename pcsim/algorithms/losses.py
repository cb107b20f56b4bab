"""Output losses, summed over the batch, with their output errors `eps_out = -dL/dmu_out`."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from pcsim.algorithms.probabilities import check_probabilities
from pcsim.errors import InputError


@dataclass(frozen=True)
class Loss:
    """A loss on one output vertex: subclass it with `value(mu, target)` (summed over the batch) and, if you
    like, `error` (-dL/dmu) or `gradient` (dL/dmu) in closed form; what is not given follows from what is
    (the error from the value by autograd). `check_target` refuses targets the loss cannot read (by default
    those not of the output's shape)."""

    name: str = ""

    def __post_init__(self):
        if not self.name:  # a user's loss that names itself not: its class names it in reports and records
            object.__setattr__(self, "name", type(self).__name__)

    def __init_subclass__(cls, **kwargs):
        # The derivatives follow the most derived definition. Z-IL and Fa-Z-IL read `gradient`, IL and the ODEs
        # `error`, the energy and check's oracle `value`: a subclass of MSE that redefines its error alone kept
        # MSE's one-pass gradient (Z-IL silently MSE's updates, IL the subclass's), one that redefines its value
        # alone kept MSE's error for every rule.
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "value" in own and cls.__module__ != __name__:  # a user's value is checked where it is read
            cls.value = _checked_value(own["value"])
        if "value" in own and "error" not in own and "gradient" not in own:
            cls.error, cls.gradient = Loss.error, Loss.gradient
        elif "error" in own and "gradient" not in own:
            cls.gradient = Loss.gradient
        elif "gradient" in own and "error" not in own:
            cls.error = Loss._negated_gradient
        if ("error" in own or "gradient" in own) and "value" not in own and cls.value is not Loss.value:
            raise TypeError(f"{cls.__name__} redefines the output error but keeps {_definer(cls, 'value')}'s "
                            "value(mu, target): the energy, the loss reported and check's oracle would not be the "
                            "loss its error descends; define value too")

    def check_target(self, output: str, shape: tuple[int, ...], target: torch.Tensor) -> None:
        if tuple(target.shape) != tuple(shape):
            raise InputError(f"target for output '{output}' has shape {tuple(target.shape)}, the output has shape "
                             f"{tuple(shape)} (loss {type(self).__name__}: override check_target for targets of "
                             "another shape)")

    def as_target(self, target: torch.Tensor) -> torch.Tensor:
        """`target` (checked) in the form `value`, `error` and `gradient` read."""
        return target

    def for_target(self, target: torch.Tensor) -> Loss:
        """The loss as it reads `target` (checked): itself, unless the target changes what it computes."""
        return self

    def value(self, mu: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"loss {type(self).__name__} gives no value(mu, target): define it (a scalar "
                                  "tensor, summed over the batch)")

    def error(self, mu: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The output error population's value: -dL/dmu (y - mu for MSE). By default from `value` by autograd."""
        leaf = mu.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.value(leaf, target), leaf)
        return grad.neg_()

    def gradient(self, mu: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """dL/dmu, bit for bit `-error(mu, target)` (the exact rules run in autograd's sign).

        Subclasses that can compute it in one pass (`mu - y` is exactly `-(y - mu)`) override it.
        """
        return -self.error(mu, target)

    def _negated_gradient(self, mu: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -self.gradient(mu, target)


def _checked_value(value):
    """A user's `value`, refused unless it gives a differentiable scalar tensor: a loss not summed (a tensor per
    entry) or turned into a Python number stopped the rules inside torch ('grad can be implicitly created only for
    scalar outputs'), and check blamed the module's own backward."""
    @functools.wraps(value)
    def checked(self, mu, target):
        out = value(self, mu, target)
        what = (f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) and out.ndim
                else None if isinstance(out, torch.Tensor) else f"a {type(out).__name__}")
        if what is None and mu.requires_grad and not out.requires_grad:
            what = "a tensor that autograd cannot differentiate in mu (through .item(), float(), .detach() or numpy?)"
        if what is not None:
            code = getattr(value, "__code__", None)
            at = f" at {code.co_filename}:{code.co_firstlineno}" if code is not None else ""
            raise InputError(f"loss {type(self).__name__}: value(mu, target){at} must give a scalar tensor "
                             f"differentiable in mu (the loss summed over the batch), got {what}")
        return out
    return checked


def _definer(cls: type, attribute: str) -> str:
    """The class in `cls`'s MRO that defines `attribute`."""
    return next(c.__name__ for c in cls.__mro__ if attribute in c.__dict__)


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


# torch's cross_entropy leaves out entries of this class index (Hugging Face pads labels with it)
IGNORE_INDEX = -100


@dataclass(frozen=True)
class CrossEntropy(Loss):
    """Summed cross-entropy of logits `mu` (classes on dim 1), `F.cross_entropy(mu, y, reduction="sum",
    label_smoothing=...)`, against class indices (of any integer dtype) or class probabilities ('soft labels': a
    floating target of the logits' shape whose rows over dim 1 sum to 1). Index entries of -100 count for nothing,
    as in `F.cross_entropy` (its `ignore_index`; it does not apply to probabilities)."""

    name: str = "ce"
    ignoring: bool = False  # whether the target holds -100 entries (for_target sets it): their error is zero
    label_smoothing: float = 0.0  # torch's: the target distribution mixed with the uniform one, (1 - s) y + s / C

    def __post_init__(self):
        super().__post_init__()
        s = self.label_smoothing
        if isinstance(s, bool) or not isinstance(s, int | float) or not 0.0 <= s <= 1.0:
            raise ValueError(f"CrossEntropy's label_smoothing must be a number in [0, 1], got {s!r}")

    def as_target(self, target):
        # torch's cross_entropy and scatter read int64 indices (int32 stopped bp inside torch, uint8 Z-IL):
        # checked to lie in [0, classes), the indices are the same numbers in int64
        return target if target.dtype == torch.int64 or target.is_floating_point() else target.long()

    def for_target(self, target):
        # one check per target rather than a mask at every inference step for the many targets without -100
        if target.is_floating_point() or not target.numel() or target.dtype == torch.uint8:
            ignoring = False
        else:  # (checked: every entry is -100 or a class index, so a negative least entry is a -100; one reduction)
            ignoring = int(target.min()) < 0
        return replace(self, ignoring=ignoring) if ignoring != self.ignoring else self

    def check_target(self, output, shape, target):
        if target.is_complex() or target.dtype == torch.bool:
            raise InputError(f"loss 'ce' on output '{output}' needs integer class indices or floating class "
                             f"probabilities, got {target.dtype}")
        if len(shape) < 2:
            raise InputError(f"loss 'ce' on output '{output}' needs logits of shape (batch, classes, ...), "
                             f"the output has shape {tuple(shape)}")
        if target.is_floating_point():
            check_probabilities(output, shape, target)
            return
        want = (shape[0],) + tuple(shape[2:])
        if tuple(target.shape) != want:
            raise InputError(f"target for output '{output}' has shape {tuple(target.shape)}, "
                             f"'ce' on logits of shape {tuple(shape)} needs {want} (class indices; classes on dim 1, "
                             f"as in F.cross_entropy) or {tuple(shape)} (class probabilities)")
        if target.numel():
            # one reduction and one synchronisation on the usual target, every index a class; masks only otherwise
            least, most = torch.stack(torch.aminmax(target)).tolist()
            if 0 <= least and most < shape[1]:
                return
            bad = ((target < 0) & (target != IGNORE_INDEX)) | (target >= shape[1])
            if bool(bad.any()):
                at = tuple(bad.nonzero()[0].tolist())
                raise InputError(f"target for output '{output}' has class index {int(target[at])} at {at}, outside "
                                 f"[0, {shape[1]}) (-100 leaves an entry out, as in F.cross_entropy)")

    def value(self, mu, target):
        # ignore_index -100: those entries count for nothing
        return F.cross_entropy(mu, target, reduction="sum", label_smoothing=self.label_smoothing)

    def error(self, mu, target):
        if target.is_floating_point() or self.label_smoothing:
            return self.gradient(mu, target).neg_()
        return self._add_at_target(torch.softmax(mu, dim=1).neg_(), target, 1.0)  # onehot - softmax

    def gradient(self, mu, target):
        p = torch.softmax(mu, dim=1)
        s = self.label_smoothing
        if target.is_floating_point():
            # -sum q log softmax(mu) with q = (1 - s) y + s / C: softmax * sum(q) - q, torch's own derivative (the
            # rows of y sum to 1 up to rounding, which this keeps exact)
            q = target * (1.0 - s) + s / mu.shape[1] if s else target
            return p.mul_(q.sum(dim=1, keepdim=True)).sub_(q)
        if s:
            p.sub_(s / mu.shape[1])
        return self._add_at_target(p, target, -(1.0 - s))  # softmax - ((1 - s) onehot + s / C)

    def distribution(self, target: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """The class distribution the loss reads from `target` for logits of `shape`: the probabilities, or the
        indices one-hot on dim 1, mixed with the uniform one by label_smoothing (the Brian2 circuit's y)."""
        if target.is_floating_point():
            q = target.to(dtype)
        else:
            q = torch.zeros(shape, dtype=dtype, device=target.device).scatter_(1, target.unsqueeze(1), 1.0)
        s = self.label_smoothing
        return q * (1.0 - s) + s / shape[1] if s else q

    def _add_at_target(self, p, target, value):
        """`p` plus `value` at each sample's target class, in place: the bits of `p -/+ onehot`; zero at the entries
        left out (-100), where the loss does not depend on `mu`. One scatter: F.one_hot validates, allocates and
        casts, at every inference step of IL."""
        index = target.unsqueeze(1)
        if not self.ignoring:
            return p.scatter_add_(1, index, torch.full(index.shape, value, dtype=p.dtype, device=p.device))
        kept = index != IGNORE_INDEX
        p.scatter_add_(1, index.clamp(min=0), kept.to(p.dtype).mul_(value))
        return p.mul_(kept)


LOSSES: dict[str, Loss] = {"mse": MSE(), "ce": CrossEntropy()}


def get_loss(loss: str | Loss) -> Loss:
    if isinstance(loss, Loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss '{loss}'; choose one of {sorted(LOSSES)} or pass a pcsim Loss")
    return LOSSES[loss]
