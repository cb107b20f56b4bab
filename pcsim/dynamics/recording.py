"""Monitors: which populations and times a simulation records, and the blow-up guard."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import torch
from tqdm.auto import tqdm

from pcsim.dynamics.field import Observation, State, VectorField
from pcsim.dynamics.trajectory import Trajectory
from pcsim.errors import PcsimError
from pcsim.graph.argument import check_fields
from pcsim.numerics import nan_or_inf, nonfinite, numpy_dtype, to_numpy


class SimulationError(PcsimError):
    """The simulation blew up, or a solver failed; the message says when and where."""


SNAPSHOTS = 21  # the default recording: every population at this many evenly spaced grid times, ends included
WHAT = {"u": "value", "e": "error", "w": "plasticity"}


@dataclass(frozen=True)
class Record:
    """What a simulation keeps: populations (None: every latent vertex) at one of `times`, every step (`every_step`:
    the grid or each accepted adaptive step) or `snapshots` evenly spaced grid times from 0 to t_end (the default)."""

    populations: tuple[str, ...] | None = None
    times: tuple[float, ...] | None = None
    every_step: bool = False
    snapshots: int = SNAPSHOTS

    def __post_init__(self):
        if isinstance(self.snapshots, bool) or not isinstance(self.snapshots, Integral):
            raise ValueError(f"Record's snapshots must be an integer, got {self.snapshots!r}")
        if self.snapshots < 2:
            raise ValueError(f"Record needs at least 2 snapshots (t = 0 and t_end), got {self.snapshots}")
        check_fields(self)
        chosen = [f for f, on in (("times", self.times is not None), ("every_step", self.every_step),
                                  ("snapshots", self.snapshots != SNAPSHOTS)) if on]
        if len(chosen) > 1:
            raise ValueError(f"Record takes one of times, every_step and snapshots, got {' and '.join(chosen)}")
        if isinstance(self.populations, str):  # one name, not its letters
            object.__setattr__(self, "populations", (self.populations,))
        elif not isinstance(self.populations, Iterable | None):  # Record(populations=3) stopped in the recorder
            raise ValueError(f"Record's populations must be a list of population names, got {self.populations!r}")
        if self.times is None:
            return
        try:  # kept as a tuple of floats: a generator would be read once, here
            times = tuple(float(t) for t in self.times)
        except (TypeError, ValueError):
            raise ValueError(f"Record's times must be a list of numbers, got {self.times!r}") from None
        object.__setattr__(self, "times", times)

    @staticmethod
    def parse(record) -> Record:
        if record is None:
            return Record()
        if isinstance(record, Record):
            return record
        if isinstance(record, dict):
            unknown = sorted(set(record) - {"populations", "times", "every_step", "snapshots"})
            if unknown:
                raise ValueError(f"record has unknown keys {unknown}; use populations, times, every_step, snapshots")
            pops, times = record.get("populations"), record.get("times")
            return Record(None if pops is None else tuple(pops), times,
                          record.get("every_step", False), record.get("snapshots", SNAPSHOTS))
        if isinstance(record, Sequence) and not isinstance(record, str):
            return Record(populations=tuple(record))
        raise ValueError("record must be None, a pcsim Record, a list of population names, "
                         f"or a dict with 'populations', 'times', 'every_step' or 'snapshots'; got {record!r}")


def guard(t: float, state: State, finite_at: float | None = None) -> None:
    """A non-finite component of a state (or of errors keyed ("e", name)) is a blow-up, raised naming each."""
    bad = [f"the {WHAT[kind]} population '{name}' became {nan_or_inf(state[kind, name])}"
           for kind, name in nonfinite(state)]
    if bad:
        since = "" if finite_at is None else f" (finite at t = {finite_at:.6g})"
        raise SimulationError(f"the simulation blew up at t = {t:.6g}{since}: {', '.join(bad)}; try a smaller dt or "
                              "larger time constants")


def n_steps(t_end: float, dt: float) -> int:
    """Steps of dt from 0 to t_end, the last one shorter if dt does not divide t_end."""
    n = int(round(t_end / dt))
    return n + 1 if n * dt < t_end - 1e-9 * dt else n


class Recorder:
    """Collects observations; checks every state it sees for NaN or inf."""

    def __init__(self, field: VectorField, record: Record, t_end: float):
        self.field = field
        unknown = sorted(set(record.populations or ()) - set(field.latent))
        if unknown:
            raise ValueError(f"record names populations not in the graph: {unknown}; known: {field.latent}")
        self.populations = list(field.latent if record.populations is None else record.populations)
        # records in the graph's dtype whatever the backend computed in (Brian2 works in float64)
        self._dtypes = {n: numpy_dtype(field.problem.graph[n].dtype) for n in self.populations}
        if record.times is not None:
            bad = [t for t in record.times if not 0.0 <= t <= t_end]
            if bad:
                raise ValueError(f"record times {bad} lie outside [0, t_end = {t_end}]")
        self.times = None if record.times is None else np.unique(np.asarray(record.times, dtype=float))
        self.record = record
        self.t_end = t_end
        self.t: list[float] = []
        self.values: dict[str, list] = {n: [] for n in self.populations}
        self.errors: dict[str, list] = {n: [] for n in self.populations}
        self.energy: dict[str, list[float]] = {n: [] for n in self.populations}
        self._bar = None  # an adaptive solve's progress bar, while it runs (`pieces`)
        self._rows: int | None = None  # known (a fixed-step grid): values and errors go into preallocated arrays

    def plan_grid(self, n: int, dt: float) -> list[int]:
        """Which of a fixed-step run's grid points 0..n (at min(k dt, t_end)) to record, in order; storage for that
        many rows is then made at the first observation, each copied once into place."""
        if self.times is not None:  # the grid points within rounding of a wanted time
            grid = np.minimum(np.arange(n + 1) * dt, self.t_end)
            near = np.abs(grid[:, None] - self.times[None, :]) <= 1e-9 * dt
            missed = self.times[~near.any(axis=0)]
            if missed.size:  # a fixed-step run has no state between its grid points
                raise ValueError(f"record times {missed.tolist()} are not on the fixed-step grid (multiples of dt = "
                                 f"{dt:g}, and t_end = {self.t_end:g}): choose grid times, or an adaptive solver")
            steps = np.flatnonzero(near.any(axis=1)).tolist()
        elif self.record.every_step:
            steps = list(range(n + 1))
        else:
            steps = sorted(set(np.rint(np.linspace(0, n, min(self.record.snapshots, n + 1))).astype(int).tolist()))
        self._rows = len(steps)
        self.values = dict.fromkeys(self.populations)
        self.errors = dict.fromkeys(self.populations)
        return steps

    def sample_times(self) -> np.ndarray | None:
        """An adaptive solver's output times; None: each accepted step."""
        if self.times is not None:
            return self.times
        if self.record.every_step:
            return None
        return np.linspace(0.0, self.t_end, self.record.snapshots)

    def pieces(self, desc: str, progress: bool):
        """An adaptive solve from 0 to t_end split at the field's switches, so that no step straddles one: yields
        (a, b, the sample times in (a, b] or None for every step), after recording t = 0."""
        field, sample = self.field, self.sample_times()
        if sample is None or (sample.size and sample[0] == 0.0):  # Record(times=[]): the updates alone
            self.see(0.0, field.initial_state())
        grid = [0.0, *field.switches(self.t_end), float(self.t_end)]
        with tqdm(total=self.t_end, desc=f"pcsim {desc}", disable=not progress, leave=False,
                  bar_format="{l_bar}{bar}| t = {n:.4g} of {total:.4g} [{elapsed}<{remaining}]") as bar:
            self._bar = bar
            for a, b in zip(grid[:-1], grid[1:], strict=True):
                yield a, b, None if sample is None else sample[(sample > a) & (sample <= b)]
                self.reached(b)
        self._bar = None

    def reached(self, t: float) -> None:
        """An adaptive solver has got to t: the progress bar follows it inside a piece, not only at its end."""
        if self._bar is not None and t > self._bar.n:
            self._bar.update(t - self._bar.n)

    def see(self, t: float, state: State, keep: bool = True) -> None:
        """Guard a solver's state at t, and record it if `keep`."""
        guard(t, state)
        if keep:
            self.add_observation(t, self.field.observe(t, state, self.populations))

    def add_observation(self, t: float, obs: Observation) -> None:
        """Record a copy of what a backend observed (e.g. Brian2's monitors) at time t: `obs` may hold views."""
        row = len(self.t)
        t = float(t)
        if self.times is not None and self.times.size:  # a time asked for is kept as asked: k dt may round off it
            near = float(self.times[np.abs(self.times - t).argmin()])
            t = near if abs(near - t) <= 1e-9 * max(abs(t), 1.0) else t
        self.t.append(t)
        for n in self.populations:
            dtype = self._dtypes[n]
            for kept, v in ((self.values, obs.values[n]), (self.errors, obs.errors[n])):
                if self._rows is None:
                    kept[n].append(to_numpy(v.detach().to(dtype)).copy())
                else:  # into a CPU tensor made at the first row, whose NumPy view the trajectory keeps
                    if kept[n] is None:
                        kept[n] = torch.empty((self._rows, *v.shape), dtype=dtype)
                    kept[n][row].copy_(v.detach())
            self.energy[n].append(obs.energy[n])

    def trajectory(self, final: State, meta: dict) -> Trajectory:
        def empty(n):  # no time recorded (Record(times=[])): still (len(t), *shape), as the docs say
            return torch.zeros((0, *self.field.shapes["u", n]), dtype=self._dtypes[n]).numpy()

        def stack(d):
            if self._rows is not None:
                return {n: v[:len(self.t)].numpy() if v is not None else empty(n) for n, v in d.items()}
            return {n: np.stack(v) if v else empty(n) for n, v in d.items()}
        return Trajectory(t=np.array(self.t), values=stack(self.values), errors=stack(self.errors),
                          energy={n: np.array(v) for n, v in self.energy.items()},
                          updates={n: to_numpy(u) for n, u in self.field.updates(final).items()},
                          meta=meta)
