"""Z-IL's schedule (condition C2): the step at which each vertex's plasticity is due.

A vertex at distance d from the output updates at step `first + per_level * d`: step d with
instantaneous errors, step 2d + 1 with leaky errors at tau_e = dt (errors lag values by one
step, so the wave needs two steps per level and the output error itself appears at step 1).
The discrete `zil` clock, `discretise` and the continuous-time "zil" gate all read this object.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from pcsim.graph.ir import Graph

# A window's edges move back by this fraction of its width, so a fixed-step grid point computed as
# k * dt lands inside its window despite rounding, and the next one outside.
SLACK = 1e-6


@dataclass(frozen=True)
class Schedule:
    """Step of vertex v: `first + per_level * levels[v] + offsets.get(v, 0)`. Without `levels` it is
    the rule alone (`at_level`); `on(graph)` binds it to a graph's distances to the output."""

    first: int = 0  # the step at which level 0 (the output) updates
    per_level: int = 1  # steps the error wave takes per level
    levels: Mapping[str, int] = field(default_factory=dict)  # vertex -> distance to the output
    offsets: Mapping[str, int] = field(default_factory=dict)  # vertex -> steps late (timing studies, mutations)

    def __post_init__(self):  # a negative step is never reached: its vertices would update by zero, silently
        for name in ("first", "per_level"):
            value = getattr(self, name)
            if isinstance(value, bool) or _index(value) is None or value < 0:
                raise ValueError(f"Schedule's {name} must be a whole number of steps >= 0, got {value!r}")

    @classmethod
    def for_errors(cls, leaky: bool) -> Schedule:
        return cls(first=1, per_level=2) if leaky else cls()

    @classmethod
    def of(cls, graph: Graph, leaky: bool = False) -> Schedule:
        """Z-IL's schedule on `graph`: each vertex that reaches an output, at its shortest distance."""
        return cls.for_errors(leaky).on(graph)

    def on(self, graph: Graph) -> Schedule:
        return Schedule(self.first, self.per_level, dict(graph.min_distance))

    def at_level(self, level: int) -> int:
        return self.first + self.per_level * level

    @cached_property
    def steps(self) -> dict[str, int]:
        return {n: self.at_level(d) + self.offsets.get(n, 0) for n, d in self.levels.items()}

    def step(self, name: str) -> int:
        """The step at which vertex `name` updates (README: `.schedule.on(graph).step(vertex)`)."""
        return self.steps[name]

    @cached_property
    def _due(self) -> dict[int, frozenset[str]]:
        by_step: dict[int, set[str]] = {}
        for n, s in self.steps.items():
            by_step.setdefault(s, set()).add(n)
        return {s: frozenset(names) for s, names in by_step.items()}

    def due(self, t: int) -> frozenset[str]:
        return self._due.get(t, frozenset())

    @property
    def last(self) -> int:
        return max(self.steps.values())

    def shifted(self, offsets: Mapping[str, int]) -> Schedule:
        """This schedule with each named vertex `offsets[v]` steps later (negative: earlier)."""
        offsets = _whole(offsets, "offset")
        unknown = sorted(set(offsets) - set(self.levels))
        if unknown:
            raise ValueError(f"schedule names vertices not in the graph (or reaching no output): {unknown}")
        moved = {n: self.offsets.get(n, 0) + offsets.get(n, 0) for n in {*self.offsets, *offsets}}
        schedule = Schedule(self.first, self.per_level, self.levels, moved)
        early = {n: schedule.steps[n] for n in sorted(offsets) if schedule.steps[n] < 0}
        if early:  # no clock reaches them: their updates would be zero, silently
            raise ValueError(f"schedule puts vertices before step 0, where they would never update: {early}")
        return schedule

    def moved_to(self, steps: Mapping[str, int]) -> Schedule:
        """This schedule with each named vertex due at `steps[v]` instead."""
        return self.shifted({n: s - self.steps.get(n, s) for n, s in _whole(steps, "step").items()})

    def window(self, name: str, t_on: float, width: float) -> tuple[float, float]:
        """[open, close): the window of the vertex's step in time, steps `width` long from t_on."""
        start = t_on + self.steps[name] * width - SLACK * width
        return start, start + width


def _index(value) -> int | None:
    """`value` as an int where it is a whole number (an int, numpy's, a 0-d integer tensor), else None."""
    try:
        return operator.index(value)
    except TypeError:
        return None


def _whole(steps: Mapping[str, int], what: str) -> dict[str, int]:
    """Whole numbers of steps: a fraction matches no clock tick, so its vertex would update by zero, silently."""
    out = {n: _index(k) for n, k in steps.items()}
    bad = next((n for n, k in out.items() if k is None), None)
    if bad is not None:
        raise ValueError(f"{what} of vertex {bad!r} must be a whole number of steps, got {steps[bad]!r}")
    return out
