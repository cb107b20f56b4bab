"""Fixed-step integrators on tensors: explicit Euler (the discretisation that gives IL and Z-IL)
and classic RK4. Both evaluate the field at grid times t0 + k * dt computed by multiplication,
not accumulation, so gate windows at multiples of dt are hit exactly."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pcsim.dynamics.field import State, VectorField

FIXED_METHODS = ("euler", "rk4")


def _axpy(state: State, d: State, h: float) -> State:
    return {k: state[k] + h * d[k] for k in state}


def step(field: VectorField, method: str, t: float, dt: float, state: State) -> State:
    if method == "euler":
        return _axpy(state, field(t, state), dt)
    k1 = field(t, state)
    k2 = field(t + dt / 2, _axpy(state, k1, dt / 2))
    k3 = field(t + dt / 2, _axpy(state, k2, dt / 2))
    k4 = field(t + dt, _axpy(state, k3, dt))
    return {k: state[k] + (dt / 6) * (k1[k] + 2 * k2[k] + 2 * k3[k] + k4[k]) for k in state}


def n_steps(t0: float, t1: float, dt: float) -> int:
    """Steps of dt from t0 to t1, the last one shorter if dt does not divide the interval."""
    n = int(round((t1 - t0) / dt))
    return n + 1 if t0 + n * dt < t1 - 1e-9 * dt else n


def integrate(field: VectorField, method: str, t0: float, t1: float, dt: float, state: State,
              on_step: Callable[[int, float, State], None]) -> State:
    """Integrate from t0 to t1 in steps of dt (the last one shorter if needed), calling
    on_step(k, t_k, state_k) at every grid point including both ends."""
    if method not in FIXED_METHODS:
        raise ValueError(f"unknown fixed-step method '{method}'; choose one of {FIXED_METHODS}")
    n = n_steps(t0, t1, dt)
    on_step(0, t0, state)
    with torch.no_grad():
        for k in range(n):
            t = t0 + k * dt
            h = min(dt, t1 - t)
            state = step(field, method, t, h, state)
            on_step(k + 1, min(t0 + (k + 1) * dt, t1), state)
    return state
