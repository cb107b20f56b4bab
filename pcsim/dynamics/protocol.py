"""Presentation protocols and plasticity gates.

The network starts at the feed-forward state (every error zero); at `t_on` the target is shown (clamped for MSE,
the output error -dL/dmu otherwise). A gate is a function of (vertex, its level, t) returning 0 or 1; its switching
times are breakpoints where adaptive solvers restart, and it may end the protocol for a population (`holds_from`).
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

    # pcsim's own gates switch at times a grid time k dt may miss by a rounding: read just after (`VectorField.nudge`)
    nudged: ClassVar[bool] = False

    def __call__(self, vertex: str, level: int, t: float) -> float:
        raise NotImplementedError

    def breakpoints(self, levels: Mapping[str, int]) -> list[float]:
        """Times at which the gate may switch (for adaptive solvers)."""
        return []

    @property
    def switches_known(self) -> bool:
        """Whether `breakpoints` lists every switch: then solvers read the gate once per piece between switches,
        otherwise at each stage's own time."""
        return True

    def holds_from(self, vertex: str) -> float | None:
        """When the protocol ends for the vertex (None: never): its value holds and its error falls silent (zero).
        Only a schedule whose later updates read nothing of the population may set it."""
        return None

    def wave_arrives(self, vertex: str) -> float | None:
        """When the error wave reaches the vertex (None: no such time); before it its error and drive are exactly
        zero, which a backend with other arithmetic may enforce (Brian2 does)."""
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
        """When the vertex's window closes; from the start for a vertex that reaches no output (it feeds its
        parents only after their windows: `Graph.pruned`); never for an output (clamped, or free before the target).

        On a levelled graph no update reads a value after its own step s, nor an error from a held value (its
        parents read it at step s + per_level - 1 at the latest), so holding changes no update; it stops the values
        above the error wave from growing without bound at gamma = 1 (condition C3), and a held error falls silent
        because one fed through its parents' moving Jacobian grows them so too."""
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
        """When its children's errors first move: the window of the level below it opens (offsets move windows, not
        the wave). Before then its error and feedback are exact zeros in pcsim's arithmetic, where another order of
        sums leaves residues that gamma = 1 amplifies on a deep graph."""
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
