"""Class probabilities ('soft labels') as a cross-entropy target: what F.cross_entropy takes silently and pcsim
refuses by entry. torch reads any floating target of the logits' shape as probabilities: NaN gives NaN updates,
negative entries and rows that do not sum to 1 (percentages, logits, a row left at zero) a loss with no
distribution behind it. Each is a bug in the data rather than a choice, so it is named rather than learned."""

from __future__ import annotations

import torch

from pcsim.errors import InputError

# A row's sum may miss 1 by rounding: float32 softmax outputs over 50k classes miss it by ~3e-5, float32
# probabilities cast to float64 (check's dtype) keep float32's miss. The gradient stays torch's exact one for any
# sum (CrossEntropy.gradient scales the softmax by it); the bound only catches rows that are not distributions.
ROW_SUM_SLACK = 1e-4


def check_probabilities(output: str, shape: tuple[int, ...], target: torch.Tensor) -> None:
    """Refuse a soft-label target for the logits `shape` (classes on dim 1) unless it has their shape, is finite,
    non-negative, and each row over dim 1 sums to 1."""
    want = (shape[0],) + tuple(shape[2:])
    if tuple(target.shape) == want:  # class indices held as floats (a label column read from a float array)
        raise InputError(f"target for output '{output}' is {target.dtype} of shape {want}, the shape of class "
                         f"indices: 'ce' takes indices as integers (target.long()), or class probabilities of the "
                         f"logits' shape {tuple(shape)}")
    if tuple(target.shape) != tuple(shape):
        raise InputError(f"target for output '{output}' has shape {tuple(target.shape)}: 'ce' on logits of shape "
                         f"{tuple(shape)} takes class probabilities of that same shape, or integer class indices of "
                         f"shape {want} (classes on dim 1, as in F.cross_entropy)")
    if not target.numel():
        return
    for bad, what in ((~target.isfinite(), "non-finite"), (target < 0, "negative")):
        if bool(bad.any()):
            at = tuple(bad.nonzero()[0].tolist())
            raise InputError(f"target for output '{output}' (class probabilities) has a {what} entry, "
                             f"{float(target[at])} at {at}; probabilities lie in [0, 1]")
    sums = target.sum(dim=1, dtype=torch.float64)
    slack = max(ROW_SUM_SLACK, shape[1] * torch.finfo(target.dtype).eps)
    off = (sums - 1.0).abs() > slack
    if bool(off.any()):
        at = off.nonzero()[0].tolist()
        shown = ", ".join(str(i) for i in at[:1]) + ", :" + "".join(f", {i}" for i in at[1:])
        raise InputError(f"target for output '{output}' (class probabilities) has row [{shown}] summing to "
                         f"{float(sums[tuple(at)]):.6g}, not 1 (F.cross_entropy would take it silently, as a loss "
                         f"of no distribution); normalise the rows, y / y.sum(dim=1, keepdim=True)")
