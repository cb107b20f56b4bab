"""The reference backend: scipy.integrate.solve_ivp (`Scipy(method, rtol=, atol=)`), plus the vector field
stepped by fixed-step Euler and RK4.

Adaptive solvers integrate piecewise between target onset and gate switching times, so no step
straddles a discontinuity. Implicit methods get the Jacobian's neuron-level sparsity
(dynamics/sparsity.py), which keeps finite-difference Jacobians tractable for networks with
thousands of neurons.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.integrate import solve_ivp
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from pcsim.backends.torch import RK4, Euler
from pcsim.dynamics.protocol import window_grid
from pcsim.dynamics.recording import SimulationError
from pcsim.dynamics.solver import SOLVERS, Solver, check_positive, check_step
from pcsim.dynamics.sparsity import jacobian_sparsity

# The order of each method's solution (None: variable order), as scipy documents it.
ORDERS = {"RK45": 5, "RK23": 3, "DOP853": 8, "Radau": 5, "LSODA": None, "BDF": None}
IMPLICIT = ("BDF", "Radau")


@dataclass(frozen=True)
class Scipy(Solver):
    """`scipy.integrate.solve_ivp` with `method`, rtol and atol; max_step caps the steps (None: no cap)."""

    method: str = "RK45"
    rtol: float = 1e-8
    atol: float = 1e-10
    max_step: float | None = None
    backend: ClassVar[str] = "scipy"
    adaptive: ClassVar[bool] = True

    def __post_init__(self):
        if self.method not in ORDERS:
            raise ValueError(f"unknown solve_ivp method '{self.method}'; choose one of {list(ORDERS)}")
        check_positive(rtol=self.rtol, atol=self.atol, max_step=self.max_step)

    @property
    def order(self) -> int | None:
        return ORDERS[self.method]

    @property
    def step(self) -> float | None:
        return self.max_step

    def meta(self) -> dict:
        return {**super().meta(), "order": self.order}

    def run(self, field, recorder, *, t_end, progress=False):
        if self.method == "LSODA":
            _check_dense_jacobian(field.size)
        # numpy's BLAS threads contend with torch's for the same cores (4.9x slower on 2 cores with both at 2
        # threads); solve_ivp's own work is vector arithmetic that gains nothing from them
        with threadpool_limits(limits=1, user_api="blas"):
            return _run_adaptive(field, recorder, method=self.method, t_end=t_end, dt=self.max_step,
                                 rtol=self.rtol, atol=self.atol, progress=progress)


def _run_adaptive(field, recorder, *, method, t_end, dt, rtol, atol, progress):
    levels = {n: d for n, d in field.levels.items()}
    breaks = [field.t_on] + list(field.gate.breakpoints(levels))
    grid = window_grid(0.0, t_end, breaks)
    y = field.pack(field.initial_state())
    extra = {"jac_sparsity": jacobian_sparsity(field)} if method in IMPLICIT else {}
    if dt is not None:
        extra["max_step"] = dt

    def fun(t, vec):
        d = field.pack(field(t, field.unpack(vec)))
        if not np.all(np.isfinite(d)):
            recorder.guard(t, field.unpack(d))
        return d

    sample = recorder.sample_times()
    if sample is None or sample[0] == 0.0:
        recorder.add(0.0, field.unpack(y))
    bar = tqdm(total=t_end, desc=f"pcsim {method}", disable=not progress, leave=False)
    try:
        for a, b in zip(grid[:-1], grid[1:], strict=True):
            wanted = None if sample is None else sample[(sample > a) & (sample <= b)]
            # the piece's end is always evaluated: the next piece starts from it
            t_eval = None if wanted is None else np.union1d(wanted, [b])
            # segments start just after a discontinuity: evaluate the field there from the right
            sol = solve_ivp(fun, (a, b), y, method=method, t_eval=t_eval, rtol=rtol, atol=atol, **extra)
            if sol.status < 0:
                raise SimulationError(f"solve_ivp ({method}) failed between t = {a:.6g} and {b:.6g}: "
                                      f"{sol.message}")
            times = sol.t if t_eval is not None else sol.t[1:]
            cols = sol.y if t_eval is not None else sol.y[:, 1:]
            for i, t in enumerate(times):
                state = field.unpack(cols[:, i])
                recorder.guard(t, state)
                if wanted is None or np.any(wanted == t):
                    recorder.add(t, state)
            y = sol.y[:, -1]
            bar.update(b - a)
    finally:
        bar.close()
    return field.unpack(y)


def physical_memory() -> int:
    """This machine's memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_dense_jacobian(n: int) -> None:
    """LSODA's stiff mode keeps a dense n x n Jacobian (scipy passes it no sparsity): refuse before allocating
    one that would take more than half the machine's memory."""
    need, have = 8 * n * n, physical_memory()
    if need > have / 2:
        gib = 2.0 ** 30
        raise ValueError(f"LSODA needs a dense {n:,} x {n:,} Jacobian ({need / gib:.1f} GiB) for this network's "
                         f"{n:,} state variables, more than half this machine's {have / gib:.1f} GiB; use BDF or "
                         "Radau (given the Jacobian's sparsity), RK45 or DOP853, or torch's Dopri5 or Tsit5")


def _adaptive(method):
    def make(*, dt=None, rtol=1e-8, atol=1e-10):
        return Scipy(method, rtol=rtol, atol=atol, max_step=dt)
    return make


for _name in ORDERS:
    SOLVERS.register("scipy", _name, _adaptive(_name), default=_name == "RK45")
# scipy's fixed-step methods: the vector field stepped on tensors (torch's Euler with fast=False)
SOLVERS.register("scipy", "euler", lambda *, dt=None, rtol=None, atol=None: Euler(check_step(dt, "euler"), fast=False))
SOLVERS.register("scipy", "rk4", lambda *, dt=None, rtol=None, atol=None: RK4(check_step(dt, "rk4")))
