"""Running sums of feedback (children's pullbacks) and Hebbian terms (a shared weight's uses) for the
exact rules, without a buffer per term."""

from __future__ import annotations

import torch

from pcsim.ops.local import Placed


class Sums(dict):
    """Running sums by key, bit for bit `prev + term` in arrival order, with one allocation per key.

    The first term is stored as given (a VJP result may alias a cotangent still in use); the second
    makes a fresh tensor this object owns, into which later terms are added in place (a weight shared
    by an unrolled RNN's vertices costs one buffer, as in autograd). A `Placed` term is added into its
    part of an owned buffer (zeros elsewhere): its zero-padded form's values, up to the sign of zero.
    A popped tensor is the caller's: it is never written again.
    """

    __slots__ = ("_owned",)

    def __init__(self) -> None:
        super().__init__()
        self._owned: set[str] = set()

    def add(self, key: str, term: torch.Tensor | Placed) -> None:
        if isinstance(term, Placed):
            self._place(key, term)
            return
        prev = self.get(key)
        if prev is None:
            self[key] = term
        elif key in self._owned and prev.shape == term.shape and prev.dtype == term.dtype:
            prev.add_(term)
        else:
            self[key] = prev + term
            self._owned.add(key)

    def add_all(self, pairs) -> None:
        """`add` for every (key, term) pair, skipping absent (None) terms: one pullback's results."""
        for key, term in pairs:
            if term is not None:
                self.add(key, term)

    def _place(self, key: str, term: Placed) -> None:
        value, where = term
        prev = self.get(key)
        if prev is None:
            buf = torch.zeros(where.parent_shape, dtype=value.dtype, device=value.device)
        elif key in self._owned and prev.is_contiguous() and tuple(prev.shape) == where.parent_shape:
            buf = prev
        else:  # a term that is not ours, or a layout the geometry does not describe: copy once
            buf = prev.clone(memory_format=torch.contiguous_format)
        buf.as_strided(where.size, where.stride, buf.storage_offset() + where.offset).add_(value)
        self[key] = buf
        self._owned.add(key)

    def pop(self, key: str, *default):
        self._owned.discard(key)
        return super().pop(key, *default)
