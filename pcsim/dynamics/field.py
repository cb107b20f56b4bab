"""The vector field of the PC populations (equations.py) on IL's own step: errors, feedback and Hebbian terms are
`Relaxation`'s at the loaded state; this module adds time constants, leaky errors, target onset and gates.

State components, per latent vertex i and parameter p:
  u_i  value displacement from the feed-forward state (x_i = x_i^ff + u_i: errors free of cancellation),
  e_i  error population, only for leaky vertices (tau_e > 0); otherwise eps_i is algebraic,
  w_p  plasticity accumulator: tau_w dw_p/dt = sum over users i of gate_i(t) hebb_i.
An output is free (following its prediction) until the target is shown, then its error is -dL/dmu.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from pcsim.algorithms.problem import Problem
from pcsim.algorithms.relaxation import Relaxation, value_drive
from pcsim.algorithms.schedule import SLACK
from pcsim.dynamics.protocol import Gate, Off
from pcsim.dynamics.solver import check_number, check_positive
from pcsim.numerics import to_numpy

State = dict[tuple[str, str], torch.Tensor]  # (kind, name) -> tensor; kinds "u", "e", "w"


def _per_population(value, names, what: str, allow_zero: bool) -> dict[str, float]:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(names))
        missing = sorted(set(names) - set(value))
        if unknown or missing:
            raise ValueError(f"{what} per population: unknown {unknown}, missing {missing}")
        out = {n: float(value[n]) for n in names}
    else:
        out = dict.fromkeys(names, float(value))
    for n, v in out.items():
        if not (v >= 0 if allow_zero else v > 0) or v == float("inf"):  # NaN fails either bound
            raise ValueError(f"{what} must be finite and {'>= 0' if allow_zero else '> 0'}; population '{n}' has {v}")
    return out


@dataclass(frozen=True)
class Observation:
    """What a population monitor reads at one time."""

    values: dict[str, torch.Tensor]
    errors: dict[str, torch.Tensor]
    energy: dict[str, float]


def observation(relax: Relaxation, eps: dict[str, torch.Tensor], shown: bool, names) -> Observation:
    """What monitors of the populations `names` read of IL's step `relax` (or any reader with its `problem`, `base`,
    `outputs`, `value` and `prediction`: Brian2's monitors) with errors `eps` (absent: zero); may hold views."""
    errors = {n: eps[n] if n in eps else torch.zeros_like(relax.base[n]) for n in names}
    problem = relax.problem
    # a shown output's value is mu - dL/dmu (MSE: the target), not mu + its error population, which lags when leaky
    values = {n: relax.prediction(n) + problem.losses[n].error(relax.prediction(n), problem.target(n))
              if shown and n in relax.outputs else relax.value(n) for n in names}
    mu = {n: relax.prediction(n) for n in names if n in relax.outputs}
    terms = relax.problem.energy(mu, eps, shown=shown, names=names)
    totals = torch.stack(list(terms.values())).tolist() if terms else []  # one synchronisation
    return Observation(values, errors, dict(zip(names, totals, strict=True)))


class VectorField:
    """d state / dt for a Problem, with time constants, target onset and plasticity gates."""

    def __init__(self, problem: Problem, *, tau_x, tau_e=0.0, tau_w: float | None = None,
                 t_on: float = 0.0, gate: Gate | None = None, target_shown: bool = True, grid: float | None = None):
        check_number(tau_x=tau_x, tau_e=tau_e, t_on=t_on)  # float('1') would take a string
        graph = problem.graph
        self.problem = problem
        self.outputs = set(graph.outputs)
        self.latent = list(graph.latent)
        self.tau_x = _per_population(tau_x, self.latent, "tau_x", allow_zero=False)
        self.tau_e = _per_population(tau_e, self.latent, "tau_e", allow_zero=True)
        self.tau_w = float(min(self.tau_x.values()) if tau_w is None else tau_w)
        check_positive(tau_w=self.tau_w)
        self.leaky = [n for n in self.latent if self.tau_e[n] > 0]
        self.t_on = float(t_on)
        # a fixed-step grid time k dt may round just below a switch (3 * 0.3 < 0.9): switches are read SLACK of a
        # step later, so a grid point within rounding of a switch reads the regime that starts there
        self.nudge = 0.0 if grid is None else SLACK * float(grid)
        self.gate = Off() if gate is None else gate
        self.target_shown = target_shown
        self.levels = dict(graph.min_distance)
        self.base = problem.feedforward()
        # plasticity accumulators only when some gate can open: they hold one number per weight
        plastic = [] if isinstance(self.gate, Off) else sorted(
            {p for n in self.latent for p in graph[n].params}, key=list(graph.param_names).index)
        self.layout: list[tuple[str, str]] = ([("u", n) for n in self.latent] + [("e", n) for n in self.leaky]
                                              + [("w", p) for p in plastic])
        self.shapes = {k: tuple(self.base[k[1]].shape) if k[0] != "w" else tuple(problem.params[k[1]].shape)
                       for k in self.layout}
        self.sizes = {k: int(np.prod(s, dtype=np.int64)) for k, s in self.shapes.items()}
        self.size = sum(self.sizes.values())
        self.offsets = {k: int(o) for k, o in zip(self.layout, np.cumsum([0, *self.sizes.values()]), strict=False)}
        self._strided = [(k, self.shapes[k], torch.empty(self.shapes[k], device="meta").stride(), self.offsets[k])
                         for k in self.layout]
        # the state holds every population in the widest dtype among them; each is loaded back in its own, as the
        # module computes it (else a float32 RMSNorm fed float64 moves off its feed-forward values)
        self.dtype = functools.reduce(torch.promote_types, (self.base[n].dtype for n in self.latent))
        self.device = next(iter(self.base.values())).device
        self.narrow = {n: self.base[n].dtype for n in self.latent if self.base[n].dtype != self.dtype}
        self.relaxation = Relaxation(problem, gamma=1.0, base=self.base)  # `load` a state, read errors and feedback
        self.holds_from = {n: h for n in self.latent if (h := self.gate.holds_from(n)) is not None}

    def held(self, t: float) -> set[str]:
        """The populations that hold at t (their protocol has ended: `Gate.holds_from`)."""
        return {n for n, h in self.holds_from.items() if t + self.nudge >= h}

    def initial_state(self) -> State:
        """The feed-forward state: zero displacement, zero errors, nothing accumulated."""
        return {k: torch.zeros(self.shapes[k], dtype=self.dtype, device=self.device) for k in self.layout}

    def pack(self, state: State) -> np.ndarray:
        return np.concatenate([to_numpy(state[k].reshape(-1)) for k in self.layout])

    def unpack(self, vec: np.ndarray) -> State:
        return self.views(torch.as_tensor(np.ascontiguousarray(vec), dtype=self.dtype, device=self.device))

    def shown(self, t: float) -> bool:
        return self.target_shown and t + self.nudge >= self.t_on

    def views(self, flat: torch.Tensor) -> State:
        """The components of a flat state vector (`size` numbers, in `layout` order) as views of it."""
        if flat.dim() != 1 or flat.shape[0] != self.size or not flat.is_contiguous():
            raise ValueError(f"a flat state is one contiguous vector of {self.size} numbers, got {tuple(flat.shape)}")
        base = flat.storage_offset()  # one strided view per component: the cheapest way to n views
        return {k: flat.as_strided(shape, stride, base + offset) for k, shape, stride, offset in self._strided}

    def switches(self, t_end: float) -> list[float]:
        """The times in (0, t_end) at which the field switches (target onset, gates opening or closing, populations
        starting to hold): a solver's step must not straddle one."""
        times = {self.t_on} if self.target_shown else set()
        times |= {*self.gate.breakpoints(self.levels), *self.holds_from.values()}
        return sorted(s for s in times if 0.0 < s < t_end)

    def _local(self, t: float, state: State):
        """Per vertex: error (absent: exactly zero), the drive x - mu of a leaky error, and the step at the
        state, whose prediction and feedback are then current; the switches read at time t."""
        step, shown, held = self.relaxation, self.shown(t), self.held(t)
        step.load({n: state["u", n] if n not in self.narrow else state["u", n].to(self.narrow[n]) for n in self.latent})
        drive = step.errors(only=[n for n in self.latent if n not in held])
        if not shown:  # a free output's error is x - mu, not the loss's
            drive.update({n: (self.base[n] - step.prediction(n)) + state["u", n]
                          for n in self.outputs if n not in held})
        # a held population's error falls silent (zero), leaky or instantaneous: no update reads it, and a held
        # leaky error fed through its parents' moving Jacobian (exp, products) grows without bound at gamma = 1
        err = {n: state["e", n] if ("e", n) in state else drive[n] for n in self.latent
               if n not in held and (("e", n) in state or n in drive)}
        return err, drive

    def gates(self, t: float) -> dict[str, float]:
        """The open plasticity gates at t, of the vertices with parameters: name -> gate value."""
        if isinstance(self.gate, Off):
            return {}
        t = t + self.nudge if self.gate.nudged else t
        gates = {n: self.gate(n, self.levels[n], t) for n in self.latent if n in self.levels}
        return {n: g for n, g in gates.items() if g and self.problem.graph[n].params}

    def plasticity(self, step: Relaxation, err: dict[str, torch.Tensor], t: float, into: dict[str, torch.Tensor],
                   h: float = 1.0) -> None:
        """Add h dw/dt, from tau_w dw/dt = sum over open gates of gate x Hebbian term at the errors `err` of IL's
        step `step`, into `into` (parameter -> accumulator)."""
        gates = self.gates(t)
        open_ = {n: e for n, e in err.items() if n in gates}
        if open_:
            for n, terms in step.hebbian(open_).items():
                for p, term in terms.items():
                    into[p].add_(term, alpha=h * gates[n] / self.tau_w)

    def __call__(self, t: float, state: State, out: State | None = None, *, regime: float | None = None,
                 piece: bool = False) -> State:
        """d state / dt at (t, state), into `out` (tensors of the layout's shapes) or views of a fresh flat vector;
        each component is written once, the feedback products accumulated into it.

        regime: the time at which the switches are read (default t): they are right-continuous, so a solver stepping
        between switches passes a time inside its step. piece: the regime is a whole piece's (an adaptive solve):
        a gate of unknown switches is then read at t, and the step control finds them."""
        if out is None:
            out = self.views(torch.empty(self.size, dtype=self.dtype, device=self.device))
        gate_t = t if regime is None or (piece and not self.gate.switches_known) else regime
        t = t if regime is None else regime
        err, drive_target = self._local(t, state)
        step, shown, held = self.relaxation, self.shown(t), self.held(t)
        fb = step.feedback(err)
        for n in self.latent:
            o, e, tau = out["u", n], err.get(n), self.tau_x[n]
            f = None if n in held or n in self.outputs else fb.get(n)
            if n in held or (n in self.outputs and shown) or (e is None and f is None):
                o.zero_()  # held, or a shown output (clamped), or no drive at all
            else:  # (feedback - eps) / tau, the products `cot @ W` accumulated in place
                if n in self.narrow:  # computed in the population's dtype, stored in the state's
                    o.copy_(value_drive(e, f))
                else:
                    value_drive(e, f, out=o)
                if tau != 1.0:
                    o.div_(tau)
        for n in self.leaky:
            o, dr = out["e", n], drive_target.get(n)
            if n in held:
                o.zero_()
            elif dr is None:
                torch.div(err[n], -self.tau_e[n], out=o)
            else:
                torch.sub(dr, err[n], out=o).div_(self.tau_e[n])
        self.plasticity(step, err, gate_t, {p: out[kind, p].zero_() for kind, p in self.layout if kind == "w"})
        return out

    def observe(self, t: float, state: State, names) -> Observation:
        err, _ = self._local(t, state)
        return observation(self.relaxation, err, self.shown(t), names)

    def updates(self, state: State) -> dict[str, torch.Tensor]:
        """Accumulated plasticity in autograd's sign (dL/dtheta for Z-IL), for every parameter."""
        return self.problem.complete({name: -state[kind, name] for kind, name in self.layout if kind == "w"})
