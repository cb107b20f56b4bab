"""Monitors: which populations and times a simulation records, and the blow-up guard."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pcsim.dynamics.field import Observation, State, VectorField
from pcsim.dynamics.trajectory import Trajectory
from pcsim.errors import PcsimError


class SimulationError(PcsimError):
    """The simulation blew up, or a solver failed; the message says when and where."""


# The default recording: every population at this many evenly spaced grid times (ends included).
# Cheap (a few copies of the state, whatever the number of steps); every step is opt-in (every_step=True).
SNAPSHOTS = 21


@dataclass(frozen=True)
class Record:
    """What a simulation keeps: populations (None: every latent vertex) at `times` if given, else at every
    step (`every_step`: Euler's grid or each accepted adaptive step), else at `snapshots` evenly spaced
    grid times from 0 to t_end."""

    populations: tuple[str, ...] | None = None
    times: tuple[float, ...] | None = None
    every_step: bool = False
    snapshots: int = SNAPSHOTS

    def __post_init__(self):
        if self.snapshots < 2:
            raise ValueError(f"Record needs at least 2 snapshots (t = 0 and t_end), got {self.snapshots}")

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
            return Record(None if pops is None else tuple(pops), None if times is None else tuple(map(float, times)),
                          bool(record.get("every_step", False)), int(record.get("snapshots", SNAPSHOTS)))
        if isinstance(record, Sequence) and not isinstance(record, str):
            return Record(populations=tuple(record))
        raise ValueError("record must be None, a pcsim Record, a list of population names, "
                         f"or a dict with 'populations', 'times', 'every_step' or 'snapshots'; got {record!r}")


class Recorder:
    """Collects observations; checks every state it sees for NaN or inf."""

    def __init__(self, field: VectorField, record: Record, t_end: float):
        self.field = field
        unknown = sorted(set(record.populations or ()) - set(field.latent))
        if unknown:
            raise ValueError(f"record names populations not in the graph: {unknown}; "
                             f"known: {field.latent}")
        self.populations = list(field.latent if record.populations is None else record.populations)
        if record.times is not None:
            bad = [t for t in record.times if not 0.0 <= t <= t_end]
            if bad:
                raise ValueError(f"record times {bad} lie outside [0, t_end = {t_end}]")
        self.times = None if record.times is None else np.array(sorted(record.times))
        self.record = record
        self.t_end = t_end
        self.t: list[float] = []
        self.values: dict[str, list[np.ndarray]] = {n: [] for n in self.populations}
        self.errors: dict[str, list[np.ndarray]] = {n: [] for n in self.populations}
        self.energy: dict[str, list[float]] = {n: [] for n in self.populations}
        self._rows: int | None = None  # reserve(): values and errors go into preallocated arrays

    def reserve(self, rows: int) -> None:
        """Preallocate for `rows` observations, each then copied once into place (no stacking at the end):
        for a backend that knows its recording times and hands over views of storage it updates in place."""
        self._rows = rows
        self.values = dict.fromkeys(self.populations)
        self.errors = dict.fromkeys(self.populations)

    def guard(self, t: float, state: State) -> None:
        for (kind, name), v in state.items():
            if not bool(torch.isfinite(v).all()):
                what = {"u": "value", "e": "error", "w": "plasticity"}[kind]
                raise SimulationError(f"the simulation blew up at t = {t:.6g}: the {what} population "
                                      f"'{name}' became {'NaN' if bool(torch.isnan(v).any()) else 'inf'}; "
                                      "try a smaller dt or larger time constants")

    def steps_on_grid(self, n: int, dt: float) -> list[int]:
        """Which of a fixed-step run's grid points 0..n (at min(k dt, t_end)) to record, in order."""
        if self.times is not None:  # the grid points within rounding of a wanted time
            grid = np.minimum(np.arange(n + 1) * dt, self.t_end)
            near = np.abs(grid[:, None] - self.times[None, :]) <= 1e-9 * dt
            return np.flatnonzero(near.any(axis=1)).tolist()
        if self.record.every_step:
            return list(range(n + 1))
        return sorted(set(np.rint(np.linspace(0, n, min(self.record.snapshots, n + 1))).astype(int).tolist()))

    def sample_times(self) -> np.ndarray | None:
        """An adaptive solver's output times; None: each accepted step."""
        if self.times is not None:
            return self.times
        if self.record.every_step:
            return None
        return np.linspace(0.0, self.t_end, self.record.snapshots)

    def add(self, t: float, state: State) -> None:
        self.add_observation(t, self.field.observe(t, state))

    def add_observation(self, t: float, obs: Observation) -> None:
        """Record what a backend observed itself (e.g. Brian2's monitors) at time t."""
        row = len(self.t)
        self.t.append(float(t))
        for n in self.populations:
            if self._rows is None:
                self.values[n].append(obs.values[n].detach().cpu().numpy())
                self.errors[n].append(obs.errors[n].detach().cpu().numpy())
            else:
                _put(self.values, n, row, self._rows, obs.values[n])
                _put(self.errors, n, row, self._rows, obs.errors[n])
            self.energy[n].append(obs.energy[n])

    def trajectory(self, final: State, meta: dict) -> Trajectory:
        def stack(d):
            if self._rows is not None:
                return {n: v[:len(self.t)].numpy() if v is not None else np.zeros((0,)) for n, v in d.items()}
            return {n: np.stack(v) if v else np.zeros((0,)) for n, v in d.items()}
        return Trajectory(t=np.array(self.t), values=stack(self.values), errors=stack(self.errors),
                          energy={n: np.array(v) for n, v in self.energy.items()},
                          updates={n: u.detach().cpu().numpy() for n, u in self.field.updates(final).items()},
                          meta=meta)


def _put(arrays: dict, name: str, row: int, rows: int, value: torch.Tensor) -> None:
    """value into row `row` of a preallocated CPU tensor (made at the first row, from its shape and dtype),
    whose NumPy view the trajectory keeps: one copy, from any device."""
    if arrays[name] is None:
        arrays[name] = torch.empty((rows, *value.shape), dtype=value.dtype)
    arrays[name][row].copy_(value.detach())
