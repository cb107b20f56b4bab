"""The solver protocol: a solver is an object carrying its settings (`Euler(dt)`, `Scipy("LSODA", rtol=)`), as in
diffrax, that runs a vector field from its feed-forward state to t_end into a recorder. Backends register theirs by
(backend, method) in `SOLVERS`, the one table `simulate`, the CLI and the docs read; this module imports no backend.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from typing import ClassVar

from pcsim.graph.argument import did_you_mean, fits
from pcsim.graph.provenance import user_stacklevel

# more steps than this take hours on a mid-size graph: said before the run starts
LONG_RUN_STEPS = 10**7


class Solver:
    """Abstract: a frozen dataclass whose `run(field, recorder, t_end=, progress=)` returns the final state."""

    backend: ClassVar[str]
    method: ClassVar[str]
    order: ClassVar[int | None]  # None: variable order (LSODA, BDF)

    stiff: ClassVar[bool] = False  # an implicit method: its steps are not bounded by the fastest time constant

    def run(self, field, recorder, *, t_end: float, progress: bool = False):
        raise NotImplementedError

    @property
    def step(self) -> float | None:
        """The fixed step (or the cap on adaptive steps); the plasticity windows of Z-IL are that wide."""
        return getattr(self, "dt", getattr(self, "max_step", None))

    def meta(self) -> dict:
        """What a Trajectory records of the solver."""
        settings = {k: v for k, v in asdict(self).items() if isinstance(v, str | int | float | bool) or v is None}
        return {"backend": self.backend, "method": self.method, "order": self.order, **settings}


class Registry:
    """(backend, method) -> how to build the solver from `simulate`'s keyword arguments, `make(dt=, rtol=, atol=,
    **options)`, and whether it is the backend's method when none is named."""

    def __init__(self):
        self._entries: dict[tuple[str, str], tuple[Callable[..., Solver], bool]] = {}

    def register(self, backend: str, method: str, make: Callable[..., Solver], *, default: bool = False) -> None:
        key = (backend, method)
        if key in self._entries:
            raise ValueError(f"solver '{method}' of backend '{backend}' is registered twice")
        self._entries[key] = (make, default)

    def backends(self) -> list[str]:
        return sorted({b for b, _ in self._entries})

    def methods(self, backend: str) -> list[str]:
        self._known(backend)  # an unknown backend had no methods, [], as a known one without any would
        return [m for b, m in self._entries if b == backend]

    def default_method(self, backend: str) -> str:
        self._known(backend)  # it stopped with a bare StopIteration
        return next(m for (b, m), (_, default) in self._entries.items() if b == backend and default)

    def _known(self, backend: str) -> None:
        if backend not in self.backends():
            raise ValueError(f"unknown backend '{backend}'; choose one of {self.backends()}")

    def make(self, backend: str, method: str | None = None, *, _suggest: Iterable[str] = (), **settings) -> Solver:
        """The solver `method` of `backend` with `settings`; a misspelt setting is matched against the solver's
        options and `_suggest` (the caller's own keywords, as simulate's t_end)."""
        method = method or self.default_method(backend)
        if (backend, method) not in self._entries:
            raise ValueError(f"unknown method '{method}' for backend '{backend}'; choose one of "
                             f"{self.methods(backend)}")
        make = self._entries[backend, method][0]
        params = inspect.signature(make).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            options = [k for k in params if not k.startswith("_")]
            unknown = sorted(set(settings) - set(options))
            if unknown:
                hint = did_you_mean(unknown[0], [*options, *_suggest]) if len(unknown) == 1 else ""
                raise ValueError(f"solver '{method}' of backend '{backend}' takes no option {', '.join(unknown)}"
                                 f"{hint}; its options: {', '.join(options)}")
        return make(**settings)


SOLVERS = Registry()  # filled once, at import, by pcsim.backends; read-only afterwards


def check_number(**settings) -> None:
    """Each setting (None: not given) is a real number, or a dict of them (a time constant per population)."""
    for name, value in settings.items():
        for key, v in value.items() if isinstance(value, Mapping) else [(None, value)]:
            if v is not None and not fits("float", v):
                raise ValueError(f"{name if key is None else f'{name}[{key!r}]'} must be a number, got {v!r}")


def check_positive(**settings: float | None) -> None:
    check_number(**settings)
    for name, value in settings.items():
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def check_step(dt: float | None, method: str) -> float:
    if dt is None:
        raise ValueError(f"method '{method}' integrates with a fixed step: pass dt= (pcsim simulate: --dt)")
    check_positive(dt=dt)
    if dt == float("inf"):  # 0 * inf is NaN: the run would record one time, NaN, and take no step
        raise ValueError(f"dt must be finite, got {dt}")
    return float(dt)


def warn_if_long(solver: Solver, t_end: float, fastest_tau: float) -> None:
    """Warn before a run of more than LONG_RUN_STEPS steps: a fixed step (or a cap on adaptive steps) far below
    t_end, or an explicit adaptive method, whose steps stay within a few of the fastest time constant."""
    said = [(t_end / solver.step, f"steps of at most {solver.step:g} to t_end = {t_end:g}")] if solver.step else []
    if getattr(solver, "dt", None) is None and not solver.stiff:  # `step` is also an adaptive method's cap
        said.append((t_end / fastest_tau, f"steps: the fastest time constant, {fastest_tau:g}, bounds the steps of an "
                                          f"explicit method ({solver.method}) to t_end = {t_end:g}; an implicit one "
                                          "(Scipy('LSODA'), 'Radau' or 'BDF') steps past it"))
    steps, why = max(said, default=(0.0, ""))
    if steps > LONG_RUN_STEPS:
        warnings.warn(f"this run takes about {steps:.3g} {why}", stacklevel=user_stacklevel())
