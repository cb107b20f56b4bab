"""The vector field of the PC populations: the only place the continuous-time equations live.

State components, per latent vertex i and parameter p (see equations.py):
  u_i  value displacement from the feed-forward state (x_i = x_i^ff + u_i; the change of
       variables keeps errors free of cancellation, as in the discrete algorithms),
  e_i  error population, only for leaky vertices (tau_e > 0); otherwise eps_i is algebraic,
  w_p  plasticity accumulator: tau_w dw_p/dt = sum over users i of gate_i(t) hebb_i.
Before the target is shown each output's value is free and follows its prediction; afterwards
its error is target_err = -dL/dmu (the output value clamped to the target, for MSE).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from pcsim.algorithms.problem import Problem
from pcsim.dynamics.protocol import Gate, Off
from pcsim.ops.local import Linearisation

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
        if not (v >= 0 if allow_zero else v > 0) or v != v or v == float("inf"):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{what} must be finite and {bound}; population '{n}' has {v}")
    return out


@dataclass(frozen=True)
class Observation:
    """What a population monitor reads at one time."""

    values: dict[str, torch.Tensor]
    errors: dict[str, torch.Tensor]
    energy: dict[str, float]


class VectorField:
    """d state / dt for a Problem, with time constants, target onset and plasticity gates."""

    def __init__(self, problem: Problem, *, tau_x, tau_e=0.0, tau_w: float | None = None,
                 t_on: float = 0.0, gate: Gate | None = None, target_shown: bool = True):
        graph = problem.graph
        self.problem = problem
        self.outputs = set(graph.outputs)
        self.latent = list(graph.latent)
        self.tau_x = _per_population(tau_x, self.latent, "tau_x", allow_zero=False)
        self.tau_e = _per_population(tau_e, self.latent, "tau_e", allow_zero=True)
        self.tau_w = float(min(self.tau_x.values()) if tau_w is None else tau_w)
        if not self.tau_w > 0:
            raise ValueError(f"tau_w must be > 0, got {tau_w}")
        self.leaky = [n for n in self.latent if self.tau_e[n] > 0]
        self.t_on = float(t_on)
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
        ref = next(iter(self.base.values()))
        self.dtype, self.device = ref.dtype, ref.device

    # -- state vectors ---------------------------------------------------------------------------
    def initial_state(self) -> State:
        """The feed-forward state: zero displacement, zero errors, nothing accumulated."""
        return {k: torch.zeros(self.shapes[k], dtype=self.dtype, device=self.device) for k in self.layout}

    def pack(self, state: State) -> np.ndarray:
        return np.concatenate([state[k].detach().reshape(-1).cpu().numpy() for k in self.layout])

    def unpack(self, vec: np.ndarray) -> State:
        out, i = {}, 0
        t = torch.as_tensor(np.ascontiguousarray(vec), dtype=self.dtype, device=self.device)
        for k in self.layout:
            out[k] = t[i:i + self.sizes[k]].reshape(self.shapes[k])
            i += self.sizes[k]
        return out

    def shown(self, t: float) -> bool:
        return self.target_shown and t >= self.t_on

    # -- the equations -----------------------------------------------------------------------------
    def _local(self, t: float, state: State):
        """Per vertex: value, prediction, error, and the pullbacks (feedback, Hebbian terms)."""
        problem, shown = self.problem, self.shown(t)
        values = {n: self.base[n] + state["u", n] for n in self.latent}
        err, drive_target, mu, fb, hebb = {}, {}, {}, {}, {}
        for n in self.latent:
            lin = Linearisation(problem.graph[n], problem.parent_values(n, values), problem.params,
                                problem.graph.constants)
            mu[n] = lin.mu
            if n in self.outputs and shown:
                drive_target[n] = problem.output_error(n, lin.mu)
            else:
                drive_target[n] = (self.base[n] - lin.mu) + state["u", n]  # x - mu
            err[n] = state["e", n] if n in self.tau_e and self.tau_e[n] > 0 else drive_target[n]
            cots, hebb[n] = lin.pullback(err[n])
            for p, c in zip(problem.graph[n].parents, cots, strict=True):
                if c is not None and p in values:
                    fb[p] = c if p not in fb else fb[p] + c
        return values, mu, err, drive_target, fb, hebb

    def __call__(self, t: float, state: State) -> State:
        values, mu, err, drive_target, fb, hebb = self._local(t, state)
        shown = self.shown(t)
        d: State = {}
        for n in self.latent:
            if n in self.outputs:
                # free output: its value relaxes to its prediction; once shown, it is clamped
                d["u", n] = torch.zeros_like(err[n]) if shown else -err[n] / self.tau_x[n]
            else:
                drive = -err[n] if n not in fb else fb[n] - err[n]
                d["u", n] = drive / self.tau_x[n]
        for n in self.leaky:
            d["e", n] = (drive_target[n] - err[n]) / self.tau_e[n]
        for k in self.layout:
            if k[0] == "w":
                d[k] = torch.zeros(self.shapes[k], dtype=self.dtype, device=self.device)
        for n in self.latent:
            g = self.gate(n, self.levels.get(n, -1), t) if n in self.levels else 0.0
            if g:
                for p, h in hebb[n].items():
                    d["w", p] = d["w", p] + (g / self.tau_w) * h
        return d

    def observe(self, t: float, state: State) -> Observation:
        values, mu, err, _, _, _ = self._local(t, state)
        if self.shown(t):  # a shown output's value is its prediction plus its error (MSE: the target)
            values = {n: mu[n] + err[n] if n in self.outputs else v for n, v in values.items()}
        energy = {n: float(e) for n, e in self.problem.energy(mu, err, shown=self.shown(t)).items()}
        return Observation(values, err, energy)

    def updates(self, state: State) -> dict[str, torch.Tensor]:
        """Accumulated plasticity in autograd's sign (dL/dtheta for Z-IL), for every parameter."""
        out = self.problem.zero_grads()
        for k in self.layout:
            if k[0] == "w":
                out[k[1]] = -state[k]
        return out
