"""The reference backend: scipy.integrate.solve_ivp (`Scipy(method, rtol=, atol=)`), plus fixed-step Euler and RK4.
Implicit methods get the Jacobian's sparsity (dynamics/sparsity.py): finite differences for thousands of neurons.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from threadpoolctl import threadpool_limits

from pcsim.backends.torch import RK4, Euler
from pcsim.dynamics.recording import SimulationError, guard
from pcsim.dynamics.solver import SOLVERS, Solver, check_positive, check_step

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

    def __post_init__(self):
        if self.method not in ORDERS:
            raise ValueError(f"unknown solve_ivp method '{self.method}'; choose one of {list(ORDERS)}")
        check_positive(rtol=self.rtol, atol=self.atol, max_step=self.max_step)

    @property
    def order(self) -> int | None:
        return ORDERS[self.method]

    @property
    def stiff(self) -> bool:  # type: ignore[override]
        return self.method in (*IMPLICIT, "LSODA")

    def run(self, field, recorder, *, t_end, progress=False):
        # imported here: scipy.integrate (and scipy.sparse) took more of `import pcsim` than pcsim itself
        from scipy.integrate import solve_ivp

        from pcsim.dynamics.sparsity import jacobian_sparsity

        if self.method == "LSODA":
            _check_dense_jacobian(field.size)
        inside = [0.0]  # a time inside the piece being solved: its regime holds up to the stage at its end

        def fun(t, vec):
            recorder.reached(t)
            d = field.pack(field(t, field.unpack(vec), regime=inside[0], piece=True))
            if not np.all(np.isfinite(d)):
                guard(t, field.unpack(d))
            return d

        # numpy's BLAS threads contend with torch's for the same cores; solve_ivp's vector arithmetic gains nothing
        with threadpool_limits(limits=1, user_api="blas"):
            extra = {"jac_sparsity": jacobian_sparsity(field)} if self.method in IMPLICIT else {}
            if self.max_step is not None:
                extra["max_step"] = self.max_step
            y = field.pack(field.initial_state())
            for a, b, wanted in recorder.pieces(self.method, progress):
                inside[0] = 0.5 * (a + b)
                t_eval = None if wanted is None else np.union1d(wanted, [b])  # b: the next piece starts from it
                sol = solve_ivp(fun, (a, b), y, method=self.method, t_eval=t_eval, rtol=self.rtol, atol=self.atol,
                                **extra)
                if sol.status < 0:
                    raise SimulationError(f"solve_ivp ({self.method}) failed between t = {a:.6g} and {b:.6g}: "
                                          f"{sol.message}")
                first = 0 if t_eval is not None else 1  # without t_eval, sol.t starts at a, recorded already
                for t, col in zip(sol.t[first:], sol.y.T[first:], strict=True):
                    recorder.see(t, field.unpack(col), wanted is None or np.any(wanted == t))
                y = sol.y[:, -1]
        return field.unpack(y)


def physical_memory() -> int:  # in bytes
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


for _name in ORDERS:
    SOLVERS.register("scipy", _name, lambda *, dt=None, rtol=1e-8, atol=1e-10, _method=_name:
                     Scipy(_method, rtol=rtol, atol=atol, max_step=dt), default=_name == "RK45")
# scipy's fixed-step methods: the vector field stepped on tensors (torch's Euler with fast=False)
SOLVERS.register("scipy", "euler", lambda *, dt=None, rtol=None, atol=None: Euler(check_step(dt, "euler"), fast=False))
SOLVERS.register("scipy", "rk4", lambda *, dt=None, rtol=None, atol=None: RK4(check_step(dt, "rk4")))
