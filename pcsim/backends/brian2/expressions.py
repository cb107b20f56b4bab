"""The equation strings of the Brian2 rendering: splitting and renaming them, and the time-dependent parts
(the plasticity gate, the quiet phases before the error wave and after the hold). Data only."""

from __future__ import annotations

import re

import numpy as np

from pcsim.dynamics.field import VectorField
from pcsim.dynamics.protocol import After, Always, Gate, Off, Windows


def split(eq: str) -> tuple[str, str, str]:
    """'dx/dt = rhs : 1' -> ('dx/dt', 'rhs', '1')."""
    lhs, rest = eq.split("=", 1)
    rhs, unit = rest.rsplit(":", 1)
    return lhs.strip(), rhs.strip(), unit.strip()


def rename(eq: str, **names: str) -> str:
    """Rename whole identifiers in an equation ('w' -> 'w_b', but not inside 'weight')."""
    for old, new in names.items():
        eq = re.sub(rf"\bd{re.escape(old)}/dt\b", f"d{new}/dt", eq)
        eq = re.sub(rf"\b{re.escape(old)}\b", new, eq)
    return eq


def switch(eq: str, after: str) -> str:
    """`eq` until the target is shown, and its left-hand side = `after` from then on."""
    lhs, before, _ = split(eq)
    if after == "0":  # (a dimensionless 0 beside a rate would not pass Brian2's unit check)
        return f"{lhs} = (1 - shown) * ({before}) : 1"
    return f"{lhs} = shown * ({after}) + (1 - shown) * ({before}) : 1"


def gate_equation(gate: Gate, vertex: str, level: int | None, n_steps: int, dt: float, nudge: float = 0.0):
    """('gate = ... : 1', times, tables), or None when the gate never opens for this vertex. The gate is read
    `nudge` after each grid time, as the field reads it (`VectorField.nudge`): its switching times move back."""
    if level is None or isinstance(gate, Off):
        return None
    # Every gate closes at t_stop = (n - 1/2) dt: the network runs one step past t_end only to
    # observe the state there, and Euler's last update is at step n - 1.
    stop = {"t_stop": (n_steps - 0.5) * dt}
    if isinstance(gate, Always):
        return "gate = int(t < t_stop) : 1", stop, {}
    if isinstance(gate, After):
        return "gate = int(t >= gate_start) * int(t < t_stop) : 1", {"gate_start": gate.start - nudge, **stop}, {}
    if isinstance(gate, Windows):
        start, close = gate.window(vertex)
        return ("gate = int(t >= gate_open) * int(t < gate_close) * int(t < t_stop) : 1",
                {"gate_open": start - nudge, "gate_close": close - nudge, **stop}, {})
    # any other gate (not `Gate.nudged`): sampled where Euler evaluates it, at t = k dt
    table = np.array([float(gate(vertex, level, k * dt)) for k in range(n_steps)] + [0.0])
    if not table.any():
        return None
    return "gate = gate_table(t) : 1", {}, {"gate_table": table}


def quiet_times(field: VectorField, name: str, dt: float) -> dict[str, float]:
    """When the population is quiet: before the error wave reaches it (`Gate.wave_arrives`) and from its hold
    (`Gate.holds_from`; from before the first step for one that holds throughout)."""
    times = {}
    if name in field.holds_from:
        times["hold_from"] = max(field.holds_from[name] - field.nudge, -dt)
    wave = field.gate.wave_arrives(name)
    if wave is not None and wave > 0:
        times["wave_from"] = wave
    return times


def quiet(pop, times: dict[str, float]) -> None:
    """While quiet a population holds its value and its error is zero: before the wave (exact zeros in pcsim too:
    this keeps out the rounding residues of Brian2's sums) and from its hold, which ends the protocol for it."""
    if not times:
        return
    flags = [v for v in ("hold", "wave") if f"{v}_from" in times]
    factor = " * ".join("(1 - hold)" if v == "hold" else v for v in flags)
    for k, eq in enumerate(pop.equations):
        if "=" in eq and (parts := split(eq))[0] in ("dx/dt", "derr/dt", "err"):
            pop.equations[k] = f"{parts[0]} = {factor} * ({parts[1]}) : {parts[2]}"
    pop.equations += [f"{v} = int(t >= {v}_from) : 1" for v in flags]
    pop.times.update(times)
    if pop.leaky and "hold" in flags:  # a held leaky error falls silent too, before any sum reads it this step
        pop.code.append(("err = err * int(t < hold_from)", -1))
