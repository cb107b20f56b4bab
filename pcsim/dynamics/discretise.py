"""What the continuous-time system becomes under explicit Euler with step dt.

With instantaneous errors (tau_e = 0), one Euler step is one synchronous inference step with
gamma = dt / tau_x: IL. With dt = tau_x (gamma = 1) and plasticity gated at step d for the
vertices at distance d, it is Z-IL, whose accumulated update equals BP's gradient.

Leaky errors (tau_e > 0) add a state per error population. At dt = tau_e the Euler update of an
error is eps(k+1) = x(k) - mu(k): errors lag the values by one step, so the wave needs two
steps per level and reaches level d at step 2d + 1 (the output error itself appears at step
1). Z-IL stays exact if the gate of level d opens at step 2d + 1 instead of d; `simulate`'s
plasticity='zil' follows that shift (both read `Schedule.for_errors`). Other ratios dt / tau_e
mix old and new errors and have no exact discrete counterpart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pcsim.algorithms.schedule import Schedule
from pcsim.dynamics.protocol import Gate
from pcsim.dynamics.solver import check_positive
from pcsim.graph.argument import checked

PLASTICITY = ("off", "always", "zil")  # simulate's named gates


@dataclass(frozen=True)
class Discretisation:
    """The discrete algorithm an Euler run corresponds to, and the schedule its gates follow."""

    algorithm: str  # "il", "zil", "zil-scaled" (gamma != 1) or "none"
    gamma: float  # inference rate dt / tau_x
    schedule: Schedule  # the rule alone: `schedule.on(graph)` gives each vertex's step
    exact: bool  # updates equal BP's gradients
    note: str
    rate: float = 1.0  # dt / tau_w: what each gated step adds of the Hebbian term

    def scale(self, level: int) -> float:
        """Under the Z-IL schedule, a vertex's update at `level` over BP's gradient: rate gamma^level."""
        return self.rate * self.gamma ** level

    @property
    def first_step(self) -> int:  # the step at which level 0 (the output) is updated
        return self.schedule.first

    @property
    def steps_per_level(self) -> int:  # 1 with instantaneous errors, 2 with leaky errors at dt = tau_e
        return self.schedule.per_level

    def update_step(self, level: int) -> int:  # the Euler step whose window holds the update of a vertex at `level`
        return self.schedule.at_level(level)


@checked
def discretise(*, tau_x: float, dt: float, tau_e: float = 0.0, plasticity: str = "zil",
               tau_w: float | None = None) -> Discretisation:
    """Map (tau_x, tau_e, dt, gates) to the discrete algorithm that explicit Euler runs. tau_w: the plasticity
    time constant, tau_x by default as in `simulate`; each gated step adds dt / tau_w of the Hebbian term.
    plasticity: 'zil' (Z-IL's gates) or another of simulate's gates ('off', 'always', a Gate, a function),
    under which an Euler run is IL."""
    tau_w = tau_x if tau_w is None else tau_w
    check_positive(tau_x=tau_x, dt=dt, tau_w=tau_w)
    if not (isinstance(plasticity, str | Gate) or callable(plasticity)):  # None was mapped to IL, 'not exact'
        raise ValueError(f"plasticity must be one of {PLASTICITY}, a Gate or a function (vertex, t) -> bool (as "
                         f"simulate takes it), got {plasticity!r}")
    if isinstance(plasticity, str) and plasticity not in PLASTICITY:  # 'ZIL' was mapped to IL, 'not exact'
        raise ValueError(f"plasticity must be one of {PLASTICITY} (as simulate takes it), got {plasticity!r}")
    if not tau_e >= 0:
        raise ValueError(f"tau_e must be >= 0, got {tau_e}")
    gamma, rate = dt / tau_x, dt / tau_w
    if tau_e != 0 and not math.isclose(tau_e, dt, rel_tol=1e-12):
        return Discretisation("none", gamma, Schedule(), False,
                              f"leaky errors with dt / tau_e = {dt / tau_e:.3g} != 1 blend successive errors: "
                              "no exact discrete counterpart")
    rule = Schedule.for_errors(leaky=tau_e != 0)
    if plasticity != "zil":
        return Discretisation("il", gamma, rule, False,
                              f"IL with gamma = {gamma:.6g}" + (" and errors one step late" if tau_e else ""))
    if math.isclose(gamma, 1.0, rel_tol=1e-12) and math.isclose(rate, 1.0, rel_tol=1e-12):
        return Discretisation("zil", gamma, rule, True,
                              f"Z-IL: level d updated at step {rule.first} + {rule.per_level} d; equals BP", rate)
    if math.isclose(gamma, 1.0, rel_tol=1e-12):
        return Discretisation("zil-scaled", gamma, rule, False,
                              f"Z-IL with dt / tau_w = {rate:.6g}: every update is {rate:.6g} times BP's", rate)
    return Discretisation("zil-scaled", gamma, rule, False,
                          f"Z-IL schedule without C3: level d's update is (dt / tau_w) gamma^d = {rate:.6g} x "
                          f"{gamma:.6g}^d times BP's", rate)


def zil_mismatch(*, tau_x, tau_e, tau_w: float, dt: float) -> str | None:
    """Why Euler at dt under plasticity='zil' does not give BP's gradients (None: it does), for simulate's settings:
    tau_x and tau_e a number or a dict per population. Z-IL's windows follow one schedule for the whole graph."""
    spread = {what: sorted(set(v.values())) for what, v in (("tau_x", tau_x), ("tau_e", tau_e)) if isinstance(v, dict)}
    mixed = {what: vs for what, vs in spread.items() if len(vs) > 1}
    if mixed:
        what, vs = next(iter(mixed.items()))
        return (f"{what} differs between populations ({', '.join(f'{v:g}' for v in vs[:4])}): Z-IL's windows follow "
                "one schedule for the whole graph (one tau_x, and tau_e all 0 or all dt), so the updates are not BP's "
                "gradients, nor a scaling of them")
    one = {what: (vs[0] if vs else 0.0) for what, vs in spread.items()}
    mapped = discretise(tau_x=one.get("tau_x", tau_x), dt=dt, tau_e=one.get("tau_e", tau_e), tau_w=tau_w)
    return None if mapped.exact else mapped.note + " (pcsim.discretise)"
