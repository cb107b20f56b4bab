"""The torch backend: fixed-step Euler and RK4 on tensors, on the data's device, with no NumPy round trip.

With instantaneous errors and one tau_x, an Euler step of the vector field is IL's synchronous step at
gamma = dt / tau_x, so `Euler` runs `Relaxation` (the loop `pcsim.il` runs, with its fast kernels) and adds
target onset, plasticity gates and the recording; `compile=True` compiles it between recorded steps and switches.
`fast=False`, and the cases where Euler is not IL's step, evaluate the vector field: the same dynamics.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from pcsim.algorithms import il_compiled
from pcsim.algorithms.relaxation import Relaxation
from pcsim.dynamics.field import State, VectorField, observation
from pcsim.dynamics.recording import Recorder, guard, n_steps
from pcsim.dynamics.solver import SOLVERS, Solver, check_step
from pcsim.graph.argument import check_fields
from pcsim.graph.provenance import user_stacklevel

# errors are checked for NaN and inf every this many steps (and at the last): a non-finite value stays so, and its
# error too, so a blow-up is still caught, and raised before a snapshot holding it is returned
GUARD_EVERY = 16


@dataclass(frozen=True)
class _FixedStep(Solver):
    dt: float
    backend: ClassVar[str] = "torch"

    def __post_init__(self):
        check_fields(self)
        check_step(self.dt, self.method)

    def run(self, field, recorder, *, t_end, progress=False) -> State:
        """The vector field stepped from 0 to t_end (the last step shorter if needed) at grid times k dt, multiplied,
        not accumulated, so gate windows at multiples of dt are hit exactly; every state guarded."""
        dt = self.dt
        n = n_steps(t_end, dt)
        wanted = set(recorder.plan_grid(n, dt))
        switches = field.switches(t_end)
        state = field.initial_state()
        recorder.see(0.0, state, 0 in wanted)
        with torch.no_grad(), tqdm(total=n, desc=f"pcsim {self.method}", disable=not progress, leave=False) as bar:
            for i in range(n):
                t, t_next = i * dt, min((i + 1) * dt, t_end)
                state = self.advance(field, state, t, t_next, switches)
                recorder.see(t_next, state, i + 1 in wanted)
                bar.update(1)
        return state

    def advance(self, field, state: State, t: float, t_next: float, switches: list[float]) -> State:
        raise NotImplementedError  # one step of the method from t to t_next


@dataclass(frozen=True)
class Euler(_FixedStep):
    """Explicit Euler with step dt: IL at dt / tau_x = gamma, Z-IL at dt = tau_x (see `discretise`)."""

    fast: bool = True  # IL's step where it applies (see module docstring); False: the vector field
    compile: bool = False  # IL's steady step compiled between events, where IL's step applies
    method: ClassVar[str] = "euler"
    order: ClassVar[int] = 1

    def run(self, field, recorder, *, t_end, progress=False):
        if self.fast and not field.leaky and len(set(field.tau_x.values())) == 1:
            return _relaxed(field, recorder, t_end, self.dt, progress, self.compile)
        if self.compile:
            warnings.warn("pcsim: Euler(compile=True) compiles IL's step, which needs instantaneous errors, one tau_x "
                          "and fast=True: this run evaluates the vector field eagerly", RuntimeWarning,
                          stacklevel=user_stacklevel())
        return super().run(field, recorder, t_end=t_end, progress=progress)

    def advance(self, field, state, t, t_next, switches):
        """Euler reads the field at the step's start alone: the discretisation's regime, whatever switches inside."""
        return _axpy(state, field(t, state), t_next - t)


@dataclass(frozen=True)
class RK4(_FixedStep):
    """Classic fourth-order Runge-Kutta with step dt."""

    method: ClassVar[str] = "rk4"
    order: ClassVar[int] = 4

    def advance(self, field, state, t, t_next, switches):
        """A step with a switch inside is taken in parts that end at it, each reading the regime inside it: a stage
        seeing the next regime early is an error of O(dt) that makes RK4 first order."""
        edges = [t, *(s for s in switches if t < s < t_next), t_next]
        for a, b in zip(edges[:-1], edges[1:], strict=False):
            h, inside = b - a, 0.5 * (a + b)
            k1 = field(a, state, regime=inside)
            k2 = field(a + h / 2, _axpy(state, k1, h / 2), regime=inside)
            k3 = field(a + h / 2, _axpy(state, k2, h / 2), regime=inside)
            k4 = field(b, _axpy(state, k3, h), regime=inside)
            state = {k: state[k] + (h / 6) * (k1[k] + 2 * k2[k] + 2 * k3[k] + k4[k]) for k in state}
        return state


def _axpy(state: State, d: State, h: float) -> State:
    return {k: state[k] + h * d[k] for k in state}


def _relaxed(field: VectorField, recorder: Recorder, t_end: float, dt: float, progress: bool,
             compile: bool) -> State:
    """Euler from the feed-forward state at t = 0 to t_end (the last step shorter if needed) as IL's step; with
    `compile`, runs of plain steps (`_plain_steps`) go through `il_compiled.run`, errors checked after each."""
    tau = next(iter(field.tau_x.values()))
    relax = Relaxation(field.problem, gamma=dt / tau, base=field.base)
    plastic = {k[1]: torch.zeros(field.shapes[k], dtype=field.dtype, device=field.device)
               for k in field.layout if k[0] == "w"}
    steps = n_steps(t_end, dt)
    times = [min(k * dt, t_end) for k in range(steps + 1)]
    wanted = set(recorder.plan_grid(steps, dt))
    checked = 0.0  # the last time every error was seen finite
    k, plain_run = 0, False
    with tqdm(total=steps, desc="pcsim euler", disable=not progress, leave=False) as bar:
        while k <= steps:
            t = times[k]
            shown, held = field.shown(t), field.held(t)
            # a held population's (instantaneous) error falls silent: absent, as an exact zero is
            eps = relax.errors(only=[n for n in field.latent if n not in held] if held else None) if shown else {}
            if k % GUARD_EVERY == 0 or k == steps or plain_run:
                guard(t, {("e", n): e for n, e in eps.items()}, finite_at=checked)
                checked = t
            if k in wanted:
                recorder.add_observation(t, observation(relax, eps, shown, recorder.populations))
            if k == steps or not shown:  # before the target, every error is zero: nothing moves
                bar.update(1 if k < steps else 0)
                k += 1
                continue
            h = min(dt, t_end - t)
            if plastic:
                field.plasticity(relax, eps, t, plastic, h)
            relax.gamma = h / tau
            relax.advance(eps, relax.feedback(eps), held)
            bar.update(1)
            k += 1
            plain = _plain_steps(field, times, k, steps, wanted) if compile and h == dt else 0
            plain_run = plain > 0
            if plain_run:  # gamma is dt / tau already
                il_compiled.run(relax, plain)
                bar.update(plain)
                k += plain
    return {**{("u", n): relax.displacement(n) for n in field.latent}, **{("w", p): w for p, w in plastic.items()}}


def _plain_steps(field: VectorField, times: list[float], k: int, steps: int, wanted: set[int]) -> int:
    """How many steps from k on are IL's plain step: the target shown, no gate open, nothing held, nothing
    recorded, and a full dt (the last step, which may be shorter, stays with the loop)."""
    j = k
    while (j < steps - 1 and j not in wanted and field.shown(times[j]) and not field.held(times[j])
           and not field.gates(times[j])):
        j += 1
    return j - k


SOLVERS.register("torch", "euler", lambda *, dt=None, rtol=None, atol=None, fast=True, compile=False:
                 Euler(check_step(dt, "euler"), fast=fast, compile=compile), default=True)
SOLVERS.register("torch", "rk4", lambda *, dt=None, rtol=None, atol=None: RK4(check_step(dt, "rk4")))
