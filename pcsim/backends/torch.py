"""The torch backend: fixed-step Euler and RK4 on tensors, on whatever device the data is on.

The state stays in torch from step to step (no NumPy round trip), so large batched networks run
as fast as their VJPs do; on a CUDA machine, trace and pass CUDA tensors to run there. Euler with
instantaneous errors and one value time constant runs as IL's own inference step
(`pcsim.dynamics.relaxed`), compiled between recorded steps and switches with `compile=True`;
`fast=False` evaluates the vector field instead (the same dynamics, for comparison).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

from tqdm.auto import tqdm

from pcsim.dynamics import fixed_step, relaxed
from pcsim.dynamics.solver import SOLVERS, Solver, check_step


@dataclass(frozen=True)
class Euler(Solver):
    """Explicit Euler with step dt: IL at dt / tau_x = gamma, Z-IL at dt = tau_x (see `discretise`)."""

    dt: float
    fast: bool = True  # IL's step where it applies (see module docstring); False: the vector field
    compile: bool = False  # IL's steady step compiled between events (relaxed.py), where IL's step applies
    backend: ClassVar[str] = "torch"
    method: ClassVar[str] = "euler"
    order: ClassVar[int] = 1

    def __post_init__(self):
        check_step(self.dt, self.method)

    def run(self, field, recorder, *, t_end, progress=False):
        if self.fast and relaxed.applies(field, self.method):
            return relaxed.run(field, recorder, t_end=t_end, dt=self.dt, progress=progress, compile=self.compile)
        if self.compile:
            warnings.warn("pcsim: Euler(compile=True) compiles IL's step, which needs instantaneous errors, one tau_x "
                          "and fast=True: this run evaluates the vector field eagerly", RuntimeWarning, stacklevel=4)
        return run_fixed(field, recorder, method=self.method, t_end=t_end, dt=self.dt, progress=progress)


@dataclass(frozen=True)
class RK4(Solver):
    """Classic fourth-order Runge-Kutta with step dt."""

    dt: float
    backend: ClassVar[str] = "torch"
    method: ClassVar[str] = "rk4"
    order: ClassVar[int] = 4

    def __post_init__(self):
        check_step(self.dt, self.method)

    def run(self, field, recorder, *, t_end, progress=False):
        return run_fixed(field, recorder, method=self.method, t_end=t_end, dt=self.dt, progress=progress)


def run_fixed(field, recorder, *, method, t_end, dt, progress):
    """The vector field stepped by `fixed_step.integrate`, every state guarded, the wanted ones recorded."""
    wanted = set(recorder.steps_on_grid(fixed_step.n_steps(0.0, t_end, dt), dt))
    bar = tqdm(total=fixed_step.n_steps(0.0, t_end, dt), desc=f"pcsim {method}", disable=not progress, leave=False)

    def on_step(k, t, state):
        recorder.guard(t, state)
        if k in wanted:
            recorder.add(t, state)
        bar.update(1 if k else 0)

    try:
        return fixed_step.integrate(field, method, 0.0, t_end, dt, field.initial_state(), on_step)
    finally:
        bar.close()


SOLVERS.register("torch", "euler", lambda *, dt=None, rtol=None, atol=None, fast=True, compile=False:
                 Euler(check_step(dt, "euler"), fast=fast, compile=compile), default=True)
SOLVERS.register("torch", "rk4", lambda *, dt=None, rtol=None, atol=None: RK4(check_step(dt, "rk4")))
