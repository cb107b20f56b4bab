"""Presentation protocols and plasticity gates.

The input is shown from t = 0 with the output free; the network starts at (or settles to) the
feed-forward state where every error is zero. At `t_on` the target is shown: clamped for MSE,
injected as the output error -dL/dmu for other losses. Plasticity runs through gates: a gate
is a function of (vertex, its level, t) returning 0 or 1, and its switching times are
breakpoints at which adaptive solvers restart, so no step straddles a discontinuity. A gate may
also end the protocol for a population (`holds_from`): Z-IL's windows hold each population once
no later update can read it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from pcsim.algorithms.schedule import SLACK, Schedule
from pcsim.graph.argument import checked
from pcsim.graph.ir import Graph


class Gate:
    """Abstract plasticity gate: `gate(vertex, level, t) -> 0.0 or 1.0`."""

    # pcsim's own gates switch at times the user gave as numbers, which a fixed-step grid time k dt may miss by a
    # rounding: they are read just after it (`VectorField.nudge`). Any other gate is called at the grid time itself.
    nudged: ClassVar[bool] = False

    def __call__(self, vertex: str, level: int, t: float) -> float:
        raise NotImplementedError

    def breakpoints(self, levels: Mapping[str, int]) -> list[float]:
        """Times at which the gate may switch (for adaptive solvers)."""
        return []

    @property
    def switches_known(self) -> bool:
        """Whether `breakpoints` lists every switch. Solvers read a known gate once per piece between switches;
        an unknown one (a function with no `switch_times`) is read at each stage's own time instead."""
        return True

    def holds_from(self, vertex: str) -> float | None:
        """When the protocol ends for the vertex (None: never): from then on its value population holds and
        its error falls silent (zero, leaky or instantaneous: it feeds its parents nothing). Only a schedule
        whose later updates read nothing of the population may set it."""
        return None

    def wave_arrives(self, vertex: str) -> float | None:
        """When the error wave reaches the vertex (None: no such time), before which its error and the
        drive of its value are exactly zero: a backend whose arithmetic differs from pcsim's may
        hold them at zero until then (Brian2 does)."""
        return None


@dataclass(frozen=True)
class Off(Gate):
    def __call__(self, vertex, level, t):
        return 0.0


@dataclass(frozen=True)
class Always(Gate):
    def __call__(self, vertex, level, t):
        return 1.0


@dataclass(frozen=True)
class After(Gate):
    """Open from `start` on (e.g. from target onset)."""

    nudged: ClassVar[bool] = True
    start: float

    def __call__(self, vertex, level, t):
        return 1.0 if t >= self.start else 0.0

    def breakpoints(self, levels):
        return [self.start]


@dataclass(frozen=True)
class Windows(Gate):
    """Each vertex open during its schedule step's window after t_on, `width` long
    (`Schedule.window`): Z-IL's schedule in continuous time."""

    nudged: ClassVar[bool] = True
    schedule: Schedule  # bound to the simulated graph (`Schedule.of`)
    t_on: float
    width: float

    def window(self, vertex: str) -> tuple[float, float]:
        return self.schedule.window(vertex, self.t_on, self.width)

    def __call__(self, vertex, level, t):
        start, stop = self.window(vertex)
        return 1.0 if start <= t < stop else 0.0

    def holds_from(self, vertex: str) -> float:
        """When the vertex's window closes; from the start for a vertex that reaches no output.

        Why the updates stay BP's, on a levelled graph, for a vertex c due at step s: its value is read
        by its own update and its children's (due earlier) up to step s, and by its error, which its
        parents read at the step before theirs, s + per_level - 1; that error is computed from the state
        of the step before it (leaky errors) or of the same step (instantaneous), so the value of step
        s + 1 and the error of step s + per_level (the first to come from a held value) are never read,
        nor is an error after step s: a parent reads it only through its own value of the step after,
        which only its own errors of later steps read, and those no update reads (a leaky error
        at step s + 1 enters x_p(s + 2), which only e_p(s + 3) reads, after p's step s + 2). Holding the
        population from s + 1, its error silent, changes no update, and stops the values above the error
        wave from growing without bound at gamma = 1 (condition C3), doubly exponentially through
        products of populations; a held leaky error kept feeding its parents through their moving
        Jacobian would grow them so (exp(x_p) e: NaN by step 38 on the multi-op graph at tau_e = dt).
        A vertex that reaches no output feeds its parents only after their windows (`Graph.pruned`): it
        holds from the start. An output needs no hold (its value is clamped, or
        free before the target, and its parents hold from step 2), so its recorded value stays the
        target's: prediction plus error."""
        if vertex not in self.schedule.levels:
            return float("-inf")
        if self.schedule.levels[vertex] == 0:
            return None
        return self.window(vertex)[1]

    def unfinished(self, graph: Graph, t_end: float) -> list[tuple[float, str]]:
        """(close, vertex) of the vertices with parameters whose window closes after t_end, latest first: a run
        ending there integrates part of their update (none, if it has not opened)."""
        late = [(self.window(n)[1], n) for n in graph.latent if n in self.schedule.levels and graph[n].params]
        return sorted(((c, n) for c, n in late if c > t_end), reverse=True)

    def wave_arrives(self, vertex: str) -> float | None:
        """When its children's errors first move: the window of the level below it opens (a vertex at distance
        d reads its children's errors, and its value first moves, at step `at_level(d - 1)`). Offsets
        (a vertex made late) move windows, not the wave. Before then, from a feed-forward start, its error
        is x - mu of unchanged values and its feedback is zero: exact zeros in pcsim's arithmetic, while a
        backend that sums predictions in another order leaves rounding residues that gamma = 1 amplifies
        step after step on a deep graph."""
        level = self.schedule.levels.get(vertex)
        if not level:
            return None
        return self.t_on + (self.schedule.at_level(level - 1) - SLACK) * self.width

    def breakpoints(self, levels):
        scheduled = [n for n in levels if n in self.schedule.levels]
        times = {edge for n in scheduled for edge in self.window(n)} | {self.holds_from(n) for n in scheduled}
        return sorted(times - {None})  # an output never holds


@dataclass(frozen=True)
class UserGate(Gate):
    """Wraps a user function `fn(vertex, t) -> bool or float`."""

    fn: Callable[[str, float], float]
    switch_times: Sequence[float] = ()

    def __call__(self, vertex, level, t):
        got = self.fn(vertex, t)
        try:
            value = float(got)
        except (TypeError, ValueError):
            value = float("nan")
        if not 0.0 <= value < float("inf"):  # a NaN gate would turn every update NaN, a negative one reverse it
            raise ValueError(f"the plasticity function {_name(self.fn)} returned {got!r} for vertex '{vertex}' at "
                             f"t = {t:.6g}: a gate is a bool or a number >= 0")
        return value

    def breakpoints(self, levels):
        return list(self.switch_times)

    @property
    def switches_known(self) -> bool:
        return bool(self.switch_times)


@checked
def after(t: float) -> After:
    """Plasticity open from time t on."""
    if not -math.inf < t < math.inf:  # NaN and inf never opened: every update zero, with no word
        raise ValueError(f"after(t): t must be a finite time, got {t} (plasticity='off' never opens)")
    return After(float(t))


def make_gate(plasticity, *, t_on: float, dt: float | None, tau_x: float, leaky: bool, graph: Graph) -> Gate:
    """Turn the `plasticity=` argument of `simulate` on `graph` into a Gate."""
    if isinstance(plasticity, Gate):
        return plasticity
    if callable(plasticity):
        try:
            inspect.signature(plasticity).bind("vertex", 0.0)
        except TypeError:
            raise TypeError(f"plasticity= takes a function (vertex, t) -> bool; {_name(plasticity)} cannot be called "
                            "with a vertex name and a time") from None
        except ValueError:  # no signature to read (some builtins): it is called as it is
            pass
        return UserGate(plasticity)
    if plasticity in ("off", "always"):
        return Off() if plasticity == "off" else Always()
    if plasticity == "zil":
        width = tau_x if dt is None else dt
        return Windows(Schedule.of(graph, leaky), t_on=t_on, width=width)
    raise ValueError(f"plasticity must be 'off', 'always', 'zil', a Gate or a function (vertex, t) -> bool; "
                     f"got {plasticity!r}")



def _name(fn) -> str:
    """A function as a message names it: its name and where it is defined."""
    code = getattr(fn, "__code__", None)
    where = f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
    return f"'{getattr(fn, '__qualname__', repr(fn))}'{where}"
