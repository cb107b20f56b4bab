"""Fa-Z-IL: Z-IL without a global schedule, in two readings that both equal Z-IL.

wavefront: only the wave is computed; at step t only vertices at distance t are touched, each
    linearised once at its feed-forward state and pulled back once: the work of one backward
    pass, which autograd's engine runs over one graph of the vertices' ops. Untouched vertices
    are skipped because their errors are exactly zero.
autonomous: the full synchronous dynamics run with no clock; each vertex's plasticity gate
    opens at the first step its own error population is non-zero after the target appears and
    closes after that step. A gate whose pre-synaptic values have already moved can no longer
    open (the wave has passed: a vertex whose error was exactly zero then has BP gradient zero).
"""

from __future__ import annotations

import torch

from pcsim.algorithms.displacement import Drives, Values, advance, linear_form, vertex_delta
from pcsim.algorithms.problem import Problem
from pcsim.algorithms.sums import Sums
from pcsim.algorithms.wave import complete, local_vjp, pull_back, still
from pcsim.algorithms.wavefront import WavePlan, compiled_wavefront, wavefront
from pcsim.graph.ir import Graph

MODES = ("wavefront", "autonomous")


def fa_zil(graph: Graph, inputs, target, loss="mse", *, mode: str = "wavefront", gamma: float = 1.0,
           params=None, compile: bool = False) -> dict[str, torch.Tensor]:
    """Fa-Z-IL on the levelled graph; returns dL/dtheta per parameter (autograd's sign).

    `compile` (wavefront only): the forward pass and the wave as one inductor-compiled function
    (`compiled_wavefront`), compiled on the first call per graph and layout (seconds).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got '{mode}'")
    if compile and mode != "wavefront":
        raise ValueError("compile=True applies to mode='wavefront' only; the autonomous mode runs eagerly")
    g = graph.level().pruned()  # vertices that reach no output change no update (Graph.pruned)
    problem = Problem.build(g, inputs, target, loss, params)
    if mode == "wavefront":
        plan = g.derived(WavePlan, WavePlan.of)
        return compiled_wavefront(problem, gamma, plan) if compile else wavefront(problem, gamma, plan)
    return _autonomous(problem, gamma)


WAITING, FIRED, LOCKED = "waiting", "fired", "locked"


def _autonomous(problem: Problem, gamma: float) -> dict[str, torch.Tensor]:
    """The synchronous dynamics with a local gate per vertex, no clock.

    Vertices that are `still` are not recomputed (their error is exactly zero, so their gate
    stays shut); Hebbian terms are computed only where a gate can still open: a waiting vertex
    whose parents have not moved.
    """
    g = problem.graph
    base = problem.feedforward()  # the state when the target appears: all hidden errors zero
    neg_disp: dict[str, torch.Tensor] = {}  # -(x - x_ff), see displacement.advance
    reachable = [n for n in g.latent if n in g.min_distance]
    gate = dict.fromkeys(reachable, WAITING)
    latent_parents = {n: [p for p in g[n].parents if p in base] for n in g.latent}
    outputs = set(g.outputs)
    grads = Sums()
    # The wave reaches every vertex by step `depth`; a gate still waiting then never opens inside the
    # window (its error stayed exactly zero: a reset gate fed by W_hh applied to a zero state), and
    # running on past it would only integrate the unstable gamma = 1 dynamics above the wave.
    for _ in range(g.depth + 1):
        moved_now = {n for n, d in neg_disp.items() if bool((d != 0).any())}
        value = Values(base, neg_disp, problem.clamped)
        drives = Drives()  # as in Z-IL's synchronous step
        items, names, fires = [], [], []
        for name in g.latent:
            v = g[name]
            if name not in outputs and still(name, neg_disp, latent_parents[name], (), {}, {}):
                continue  # exactly zero error: the gate stays as it is
            waiting = gate.get(name) == WAITING
            parents_moved = any(p in moved_now for p in latent_parents[name])
            # as Z-IL, the closed forms at C3; never where a plastic vertex's gate could still open
            fast = gamma == 1.0 and not (waiting and not parents_moved and v.params)
            form = None if name in outputs else linear_form(v, neg_disp, problem.params, g.constants, base,
                                                            [g[p].shape for p in v.parents], fast)
            if form is not None:  # an identity, a chunk, a linear layer or a sum: no autograd, no value formed
                d = drives.form(name, form)
                if waiting:
                    gate[name] = LOCKED if parents_moved else FIRED if bool((d != 0).any()) else WAITING
                continue
            parents = [value(p) for p in v.parents]
            track = [p in base and x.is_floating_point() for p, x in zip(v.parents, parents, strict=True)]
            lin = local_vjp(v, parents, track, problem.params, g.constants, wrt_params=waiting and not parents_moved)
            if name in outputs:
                d, pred = problem.output_gradient(name, lin.mu), None
            elif not any(p in neg_disp for p in latent_parents[name]):
                d, pred = neg_disp[name], None  # mu is x_ff bit for bit (see `still`)
            else:
                d, pred = vertex_delta(lin.mu, base[name], neg_disp.get(name), gamma == 1.0)
            drives.own(name, d, pred)
            fire = waiting and not parents_moved and bool((d != 0).any())
            items.append((lin, d, fire, True))
            names.append(name)
            fires.append(fire)
            if waiting and parents_moved:
                gate[name] = LOCKED
        for name, fire, (parent_cots, own) in zip(names, fires, pull_back(items), strict=True):
            if fire:
                grads.add_all(own.items())
                gate[name] = FIRED
            drives.neg_feedback.add_all(zip(g[name].parents, parent_cots, strict=True))
        del items
        if all(s != WAITING for s in gate.values()):
            break
        neg_disp = advance(g.latent, outputs, neg_disp, drives.delta, drives.neg_feedback, gamma, drives.neg_pred)
    return complete(grads, problem)

