"""The module tensors a graph reads as constants (buffers, frozen parameters), as they were at the trace.

A buffer read as it is stays a view of the module's tensor, so a change in place (a BatchNorm's running
statistics) is read by every rule. A value computed from buffers alone (`inv_freq.exp()`, a frozen weight's
norm, a mask sliced from a buffer) is folded into a constant at the trace, and a buffer replaced by another
tensor (`module.mask = new`) is not the one the graph holds: in both cases the graph computes with the trace's
values where the module computes with the new ones (the updates were silently off). The rules refuse a graph
whose sources changed so (`stale`): the graph holds only where they are as traced.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class Source:
    """A module tensor the graph reads: `name` (what it is and its qualified name), at `owner.<attr>` (`owner` a
    weak reference); its storage and layout at the trace; `copy`, a copy of its values where the graph folded a
    value computed from it (None where the graph reads it as it is)."""

    name: str
    owner: weakref.ref
    attr: str
    where: tuple  # (data_ptr, shape, stride, dtype) at the trace
    copy: torch.Tensor | None


def where(t: torch.Tensor) -> tuple:
    return t.data_ptr(), tuple(t.shape), t.stride(), t.dtype


def stale(sources: tuple[Source, ...]) -> str | None:
    """Why the graph no longer computes what the module does, naming the first source changed since the trace
    (replaced, or changed in place where a value computed from it was folded); None where none did."""
    for s in sources:
        owner = s.owner()
        if owner is None:  # the module is gone: nothing to compare with
            continue
        now = getattr(owner, s.attr, None)
        if not isinstance(now, torch.Tensor) or where(now) != s.where:
            return (f"{s.name} was replaced by another tensor since the trace (assigned, or its .data set): the "
                    "graph reads the tensor it had then; trace again")
        if s.copy is not None and not torch.equal(now.detach(), s.copy):
            return (f"{s.name} changed since the trace, and the graph holds a value computed from it then (a "
                    "function of buffers and frozen parameters alone is folded into a constant at the trace); "
                    "trace again after changing it")
    return None
