"""Fa-Z-IL: Z-IL without a global schedule, in two readings that both equal Z-IL.

wavefront: only the wave is computed, each vertex at distance t linearised and pulled back once, at
    step t: the work of one backward pass (`fa_zil_wavefront`).
autonomous: the full synchronous dynamics with no clock, each vertex's plasticity gated by its own
    error (`Gates`).
"""

from __future__ import annotations

import torch

from pcsim.algorithms.fa_zil_wavefront import WavePlan, compiled_wavefront, wavefront
from pcsim.algorithms.problem import Problem
from pcsim.algorithms.sums import Sums
from pcsim.algorithms.zil import feedforward, inference_rate, synchronous_step
from pcsim.graph.argument import takes_graph
from pcsim.graph.ir import Graph
from pcsim.ops.local import records_autograd

MODES = ("wavefront", "autonomous")


@takes_graph
@records_autograd
def fa_zil(graph: Graph, inputs, target, loss="mse", *, mode: str = "wavefront", gamma: float = 1.0,
           params=None, compile: bool = False) -> dict[str, torch.Tensor]:
    """Fa-Z-IL on the levelled graph; returns dL/dtheta per parameter (autograd's sign).

    `mode`: 'wavefront' (the vertices at distance t touched at step t) or 'autonomous' (no clock: each
    vertex's gate opens at the first step its error is non-zero). `gamma`: the inference rate; at 1 (C3) the
    updates are BP's, otherwise level d's is scaled by gamma^d, as in `zil`.
    `compile` (wavefront only): the forward pass and the wave as one inductor-compiled function
    (`compiled_wavefront`), compiled on the first call per graph and layout (seconds).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got '{mode}'")
    inference_rate(gamma)
    if compile and mode != "wavefront":
        raise ValueError("compile=True applies to mode='wavefront' only; the autonomous mode runs eagerly")
    g = graph.level().pruned()  # vertices that reach no output change no update (Graph.pruned)
    problem = Problem.build(g, inputs, target, loss, params)
    if mode == "wavefront":
        plan = g.derived(WavePlan, WavePlan.of)
        return compiled_wavefront(problem, gamma, plan) if compile else wavefront(problem, gamma, plan)
    return _autonomous(problem, gamma)


class Gates:
    """Autonomous Fa-Z-IL's local plasticity gates, as `zil.synchronous_step` asks its policy.

    Each reachable vertex's gate waits until its own error is non-zero while its latent parents have
    not moved, then fires (its Hebbian term is taken) and shuts; a gate whose parents moved first
    locks (the wave passed with its error exactly zero: BP's gradient there is zero too). No clock.
    """

    final = False

    def __init__(self, reachable):
        self.waiting = set(reachable)
        self.shut: set[str] = set()  # fired or locked
        self.moved: set[str] = set()
        self._seen: dict[str, tuple[torch.Tensor, bool]] = {}  # vertex -> (its displacement, whether non-zero)

    def begin(self, neg_disp) -> None:
        # a displacement the last step left as it was (the held vertices') is not looked at again: once per step,
        # that made the run's reductions grow with depth squared
        seen = {n: d_nz if (d_nz := self._seen.get(n)) is not None and d_nz[0] is d else (d, bool((d != 0).any()))
                for n, d in neg_disp.items()}
        self._seen = seen
        self.moved = {n for n, (_, nonzero) in seen.items() if nonzero}

    def skip(self, name: str) -> bool:
        # After its gate shut a vertex holds: on the levelled graph no later update reads it (its parents, a level
        # further, took their terms from the step before). Run on, it integrated the unstable gamma = 1 dynamics
        # above the wave, whose overflow (inf, then NaN through an exactly zero Jacobian such as a one-key
        # softmax's) fired gates still waiting with NaN terms (Hugging Face's LeViT).
        return name in self.shut

    def formable(self, name: str, params, unchanged: bool, latent_parents) -> bool:
        # the displacement forms never where a plastic vertex's gate could still open
        return not (params and self.wants(name, latent_parents))

    def wants(self, name: str, latent_parents) -> bool:
        return name in self.waiting and not any(p in self.moved for p in latent_parents)

    def gate(self, name: str, delta: torch.Tensor, latent_parents) -> bool:
        if name not in self.waiting:
            return False
        locked = any(p in self.moved for p in latent_parents)
        if not locked and not bool((delta != 0).any()):
            return False
        self.waiting.remove(name)
        self.shut.add(name)
        return not locked

    def done(self) -> bool:
        return not self.waiting


def _autonomous(problem: Problem, gamma: float) -> dict[str, torch.Tensor]:
    """The synchronous dynamics (Z-IL's step) with a local gate per vertex, no clock."""
    g = problem.graph
    (base, cached), neg_disp = feedforward(problem), {}  # the state when the target appears: hidden errors zero
    gates = Gates(n for n in g.latent if n in g.min_distance)
    grads = Sums()
    # The wave reaches every vertex by step `depth`; a gate still waiting then never opens inside the
    # window (its error stayed exactly zero: a reset gate fed by W_hh applied to a zero state), and
    # running on past it would only integrate the unstable gamma = 1 dynamics above the wave.
    for _ in range(g.depth + 1):
        gates.begin(neg_disp)
        _, neg_disp = synchronous_step(problem, base, neg_disp, problem.params, gates, gamma, grads, cached,
                                       closed=True)
        if gates.done():
            break
    return problem.complete(grads)
