"""The reference backend: scipy.integrate.solve_ivp, plus fixed-step Euler and RK4.

Adaptive solvers integrate piecewise between target onset and gate switching times, so no step
straddles a discontinuity. Implicit methods get the Jacobian's neuron-level sparsity
(dynamics/sparsity.py), which keeps finite-difference Jacobians tractable for networks with
thousands of neurons.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp
from tqdm.auto import tqdm

from pcsim.dynamics import fixed_step
from pcsim.dynamics.field import VectorField
from pcsim.dynamics.protocol import window_grid
from pcsim.dynamics.recording import Recorder, SimulationError
from pcsim.dynamics.sparsity import jacobian_sparsity

ADAPTIVE_METHODS = ("RK45", "RK23", "DOP853", "LSODA", "BDF", "Radau")
METHODS = ADAPTIVE_METHODS + fixed_step.FIXED_METHODS
IMPLICIT = ("BDF", "Radau")
DEFAULT_METHOD = "RK45"


def run(field: VectorField, recorder: Recorder, *, method: str, t_end: float, dt: float | None,
        rtol: float, atol: float, progress: bool):
    """Integrate from the feed-forward state at t = 0 to t_end; returns the final state."""
    if method in fixed_step.FIXED_METHODS:
        return _run_fixed(field, recorder, method=method, t_end=t_end, dt=dt, progress=progress)
    return _run_adaptive(field, recorder, method=method, t_end=t_end, dt=dt, rtol=rtol, atol=atol,
                         progress=progress)


def _run_fixed(field, recorder, *, method, t_end, dt, progress):
    bar = tqdm(total=int(np.ceil(t_end / dt)), desc=f"pcsim {method}", disable=not progress, leave=False)

    def on_step(k, t, state):
        recorder.guard(t, state)
        if recorder.wants(t, 1e-9 * dt):
            recorder.add(t, state)
        bar.update(1 if k else 0)

    try:
        return fixed_step.integrate(field, method, 0.0, t_end, dt, field.initial_state(), on_step)
    finally:
        bar.close()


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

    recorder.add(0.0, field.unpack(y)) if recorder.wants(0.0, 0.0) else None
    bar = tqdm(total=t_end, desc=f"pcsim {method}", disable=not progress, leave=False)
    try:
        for a, b in zip(grid[:-1], grid[1:], strict=True):
            t_eval = None
            if recorder.times is not None:
                t_eval = recorder.times[(recorder.times > a) & (recorder.times <= b)]
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
                recorder.add(t, state)
            y = sol.y[:, -1]
            bar.update(b - a)
    finally:
        bar.close()
    return field.unpack(y)
