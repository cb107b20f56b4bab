"""Python numbers the traced program took from the inputs' values, checked again on every batch.

torch.export records `x.max().item()` (or a count of `x > 0`, or `int(x[0, 0])` where export can follow it) as a
Python number of the example's, and the captured calls that read it hold it as a literal: the graph computes with
the trace's value on any batch. A rule given a batch where that number differs would compute another function
than the module, silently. Each such number keeps the clamped calls it came from (`NumberGuard`), so a rule
recomputes it from the batch and refuses one where it moved.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from pcsim.errors import InputError
from pcsim.graph.ir import Vertex
from pcsim.graph.provenance import user_stacklevel
from pcsim.ops.local import call


@dataclass(frozen=True)
class NumberGuard:
    """A number computed from the inputs alone: the vertices between the inputs and it (inputs excluded, in
    order), the call that gives it, and its value at the trace."""

    chain: tuple[Vertex, ...]
    number: Vertex
    value: Any

    def renamed(self, new: Mapping[str, str]) -> NumberGuard:
        def rename(v: Vertex) -> Vertex:
            return replace(v, name=new.get(v.name, v.name), parents=tuple(new.get(p, p) for p in v.parents))
        return NumberGuard(tuple(rename(v) for v in self.chain), rename(self.number), self.value)


def warn_numbers(guards: list[NumberGuard]) -> None:
    """The trace's word on the first guarded number, at the user's call of trace()."""
    if guards:
        first = guards[0]
        warnings.warn(f"{first.number.source} takes a number from the *values* of {first.number.parents[0]!r} "
                      f"({first.value!r} here): the graph holds for inputs where it is the same as in the example, "
                      "and the rules refuse others (trace again for them)", stacklevel=user_stacklevel())


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def refuse_moved_numbers(guards: tuple[NumberGuard, ...], values: Mapping[str, torch.Tensor], params,
                         constants) -> None:
    """InputError where a guarded number, recomputed from these inputs (`values`: the graph's inputs and
    clamped vertices), is not what it was at the trace."""
    for guard in guards:
        local = dict(values)
        with torch.no_grad():
            for v in guard.chain:
                if v.name not in local:
                    local[v.name] = call(v, [local[p] for p in v.parents], params, constants)
            now = call(guard.number, [local[p] for p in guard.number.parents], params, constants)
        if not _same(now, guard.value):
            raise InputError(f"{guard.number.source} takes the Python number {guard.value!r} from the inputs' values "
                             f"at the trace, and {now!r} from these: torch.export captured that number as a "
                             "constant, so the graph computes as the traced inputs did. Trace again with these "
                             "inputs, or keep the value a tensor (no .item(), int() or float() of it)")
