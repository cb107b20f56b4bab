"""The Brian2 backend: pcsim's value and error populations as NeuronGroups, projections as Synapses.

`render.py` writes the vector field as Brian2 equations and connectivity (data); `runner.py` builds them in their
own `Network`, runs them on a code-generation target and reads them back. Brian2 is imported only when a
simulation runs: `import pcsim` never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Integral
from typing import ClassVar

from pcsim.dynamics.solver import SOLVERS, Solver, check_step
from pcsim.errors import InputError
from pcsim.graph.argument import check_fields

TARGETS = ("numpy", "cython", "cpp_standalone")


@dataclass(frozen=True)
class Brian2(Solver):
    """Explicit Euler on Brian2's clock, step dt, generated for `target`.

    target: 'numpy' (default), 'cython' (falls back to numpy with one warning when nothing compiles) or
        'cpp_standalone' (built under build/brian2-standalone/<network hash> unless `directory` is given).
    threads: OpenMP threads for cpp_standalone (0: none).
    inputs_once: sum the clamped inputs' projections at the first step only (they cannot change).
    on_build: called with the built network (`runner.Built`: `.network`, the Brian2 `Network`; `.groups`,
        vertex -> `NeuronGroup`; `.synapses`, (projection, `Synapses`) pairs; `.clock`) after pcsim has made
        its Brian2 objects and before it runs them, to extend them: add a `StateMonitor`, a `run_regularly`
        operation (noise), more groups; whatever is added to `.network` runs with it, and pcsim reads its
        own populations back as usual.
    """

    dt: float
    target: str = "numpy"
    directory: str | None = None
    threads: int = 0
    inputs_once: bool = True
    on_build: Callable | None = field(default=None, compare=False)
    backend: ClassVar[str] = "brian2"
    method: ClassVar[str] = "euler"
    order: ClassVar[int] = 1

    def __post_init__(self):
        check_step(self.dt, self.method)
        if self.target not in TARGETS:
            raise ValueError(f"unknown Brian2 code-generation target '{self.target}'; choose one of {list(TARGETS)}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, Integral) or self.threads < 0:
            raise ValueError(f"Brian2 threads must be a whole number >= 0 (0: no OpenMP), got {self.threads!r}")
        check_fields(self)

    def run(self, field, recorder, *, t_end, progress=False):
        from pcsim.backends.brian2.runner import run

        graph = field.problem.graph
        empty = [graph[n].describe() for n in graph.latent if 0 in graph[n].shape]
        if empty:  # (Brian2 says 'NeuronGroup size should be at least 1')
            raise InputError(f"the brian2 backend makes one neuron per entry, and {empty[0]} has none (an empty "
                             "batch?): there is nothing to simulate")
        return run(self, field, recorder, t_end=t_end, progress=progress)


def _make(*, dt=None, rtol=None, atol=None, codegen_target: str = "numpy", **options):
    return Brian2(dt=check_step(dt, "euler"), target=codegen_target, **options)


SOLVERS.register("brian2", "euler", _make, default=True)


def describe(field, *, dt: float, t_end: float) -> str:
    """The Brian2 equations the backend writes for a vector field (no Brian2 needed)."""
    from pcsim.backends.brian2.render import checked_steps, render

    return render(field, dt=dt, n_steps=checked_steps(t_end, dt)).describe()
