"""Z-IL: inference learning under conditions C1-C3, whose updates equal backprop's.

C1 feed-forward start (all hidden errors zero); C3 gamma = 1; C2 the parameters of vertex i
take their update at step t = d_i, its distance to the output. On a levelled graph the error of
vertex i at t = d_i is exactly BP's delta_i while its parents still hold their feed-forward
values, so the Hebbian term equals -dL/dtheta. Shared parameters sum one term per use, each
taken at that use's own step, and (by default) are applied only after inference.
The keyword arguments that break these conditions exist for the mutation tests and studies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from pcsim.algorithms.displacement import Values, advance_displacements, linear_form, vertex_delta
from pcsim.algorithms.problem import Problem, aligned, traced_shape
from pcsim.algorithms.schedule import Schedule
from pcsim.algorithms.sums import Sums
from pcsim.graph.argument import takes_graph
from pcsim.graph.ir import Graph
from pcsim.ops.local import Autograd, Placement, linearise, pull_back, records_autograd

UPDATE_TIMINGS = ("deferred", "immediate")
INITS = ("feedforward", "random")


def inference_rate(gamma: float) -> None:
    """Z-IL's and Fa-Z-IL's gamma: > 0 and finite. NaN or inf gave NaN updates below the output level with no word
    (gamma^d scales level d), and a rate <= 0 is no inference (IL refuses it too)."""
    if not 0 < gamma < math.inf:
        raise ValueError(f"gamma (the inference rate) must be > 0 and finite, got {gamma}; gamma = 1 is Z-IL's C3")


@takes_graph
@records_autograd
def zil(graph: Graph, inputs, target, loss="mse", *, gamma: float = 1.0, level: bool = True,
        schedule: Schedule | Mapping[str, int] | None = None, init: str = "feedforward",
        update_timing: str = "deferred", lr: float = 1.0, params=None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Synchronous Z-IL; returns dL/dtheta per parameter (autograd's sign, module's names).

    gamma: inference rate (C3 is gamma = 1; otherwise level d's update is scaled by gamma^d).
    level: level the graph first (identity vertices on skip edges); False runs it as traced.
    schedule: a `Schedule` on the levelled graph, or {vertex: step} overriding some vertices' steps
        (default: `Schedule.of`, each vertex at its distance to the output).
    init: 'feedforward' (C1) or 'random' hidden values, drawn from `seed`.
    update_timing: 'deferred' applies parameter changes after inference; 'immediate' applies
        each at its step with learning rate `lr`, so later steps see the changed parameters.
    """
    if update_timing not in UPDATE_TIMINGS:
        raise ValueError(f"update_timing must be one of {UPDATE_TIMINGS}, got '{update_timing}'")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got '{init}'")
    inference_rate(gamma)
    if not isinstance(schedule, Schedule | Mapping | None):  # a list stopped with "has no attribute 'items'"
        raise ValueError(f"schedule must be a pcsim Schedule or a dict {{vertex: step}}, got {schedule!r}")
    if update_timing == "immediate" and not 0 < lr < math.inf:  # NaN moved every parameter to NaN
        raise ValueError(f"lr must be > 0 and finite, got {lr}")
    # each is read by one variant alone: given to another, it changed nothing, silently
    if update_timing == "deferred" and lr != 1.0:
        raise ValueError(f"lr = {lr} moves the parameters during inference, with update_timing='immediate' only; "
                         "deferred updates are dL/dtheta whatever the learning rate")
    if init == "feedforward" and seed != 0:
        raise ValueError(f"seed = {seed} draws the hidden values of init='random' only; the feed-forward start has "
                         "no draw")
    g = graph.level() if level else graph
    on_time = not schedule  # C2 as is: no Schedule given, no step moved
    if init == "feedforward" and on_time:  # vertices that reach no output change no update (Graph.pruned)
        g = g.pruned()
    problem = Problem.build(g, inputs, target, loss, params)
    if not schedule:  # C2 on this graph: worked out once per graph (the schedule is immutable), not per call
        schedule = g.derived(Schedule, Schedule.of)
    elif not isinstance(schedule, Schedule):
        schedule = Schedule.of(g).moved_to(schedule)
    elif schedule.levels != g.min_distance:  # vertices missing from it would silently never update
        raise ValueError("schedule was built on another graph: build it on the one Z-IL runs on (graph.level())")
    if init == "feedforward":  # C1; each vertex's local graph at that state is kept for its first use
        (base, cached), disp = feedforward(problem), {}
    else:  # random hidden values, carried as negated displacements from the feed-forward ones
        base, cached = problem.feedforward(), {}
        gen = torch.Generator(device="cpu").manual_seed(seed)
        disp = {n: v - torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device)
                for n, v in base.items() if n not in g.outputs}
    params = dict(problem.params) if update_timing == "immediate" else problem.params  # only 'immediate' moves them
    grads = Sums()
    # C1-C3 on a levelled graph: every value the closed-form update rounds differently is read by
    # no later due vertex (see `displacement.advance_displacements`), so the updates keep their bits; the study options
    # follow the literal update, which the reference rules reproduce bit for bit.
    closed = gamma == 1.0 and g.is_levelled and init == "feedforward" and update_timing == "deferred" and on_time
    clock = Clock(schedule, hold=closed)
    for t in range(clock.last + 1):
        hebbian, disp = synchronous_step(problem, base, disp, params, clock.at(t), gamma, grads, cached,
                                         closed=closed)
        if update_timing == "immediate":  # theta += lr * h, with h = -dL/dtheta (exact negation)
            for name in g.latent:
                for p, d in hebbian.get(name, {}).items():
                    params[p] = params[p] - lr * d
    return problem.complete(grads)


def feedforward(problem: Problem) -> tuple[dict[str, torch.Tensor], dict[str, Autograd | Placement]]:
    """The feed-forward state (as `Problem.feedforward`: same kernels, aligned storage) and every
    vertex's local graph at that state."""
    g = problem.graph
    base: dict[str, torch.Tensor] = {}
    cached: dict[str, Autograd | Placement] = {}
    for name in g.latent:
        v = g[name]
        parents = [base[p] if p in base else problem.clamped[p] for p in v.parents]
        track = [p in base and x.is_floating_point() for p, x in zip(v.parents, parents, strict=True)]
        cached[name] = linearise(v, parents, problem.params, g.constants, track, wrt_params=True)
        base[name] = aligned(traced_shape(v, cached[name].mu))
    return base, cached


class Clock:
    """Z-IL's schedule (C2) as `synchronous_step`'s policy: vertex i's plasticity is due at step
    `schedule.steps[i]` (its distance d_i by default). Autonomous Fa-Z-IL's policy is `fa_zil.Gates`."""

    def __init__(self, schedule: Schedule, hold: bool = False):
        self.schedule, self.last, self.hold = schedule, schedule.last, hold
        self.due: frozenset[str] = frozenset()
        self.final = False
        self.t = 0

    def at(self, t: int) -> Clock:
        self.due = self.schedule.due(t)
        self.final, self.t = t == self.last, t
        return self

    def skip(self, name: str) -> bool:
        if self.final:  # the state after the last step is never read
            return name not in self.due
        # `hold` (C1-C3 on a levelled graph, as `zil` runs them by default): a vertex past its step holds, as
        # autonomous Fa-Z-IL's fired gates do. Its parents, a level further, take their terms from the step
        # before, so no later update reads it; run on, it made Z-IL's work grow with depth squared.
        return self.hold and self.schedule.steps[name] < self.t

    def formable(self, name: str, params: Sequence[str], unchanged: bool, latent_parents: Sequence[str]) -> bool:
        return not (unchanged or self.final or name in self.due)  # literal sums for the study options

    def wants(self, name: str, latent_parents: Sequence[str]) -> bool:
        """Whether the vertex's Hebbian terms are to be computed this step."""
        return name in self.due

    def gate(self, name: str, delta: torch.Tensor, latent_parents: Sequence[str]) -> bool:
        """Whether the vertex's Hebbian terms are taken this step, given its error `delta`."""
        return name in self.due

    def done(self) -> bool:
        return self.final


def synchronous_step(problem: Problem, base: Mapping[str, torch.Tensor], neg_disp: dict[str, torch.Tensor],
                     params: Mapping[str, torch.Tensor], policy, gamma: float, grads: Sums,
                     cached: dict[str, Autograd | Placement], closed: bool = False
                     ) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """One inference step of Z-IL (the `Clock` policy) and autonomous Fa-Z-IL (`fa_zil.Gates`): every vertex's
    error and feedback from the same state, then x_i += gamma (-eps_i + sum_c J_ci^T eps_c) for every hidden one.

    In autograd's sign (`displacement`): each firing vertex's parameter pullback is dL/dtheta, added to `grads`.
    Exact savings: a vertex whose value, latent parents and parameters have not moved would recompute its
    feed-forward prediction bit for bit, so it is skipped; one whose parents and parameters have not moved is
    pulled back through its `cached` feed-forward graph; on the `final` step only the due vertices' terms are
    computed. `closed`: the closed-form update at gamma 1, and the displacement forms where the policy allows.
    Returns (dL/dtheta terms per firing vertex, new negated displacements; unchanged once the policy is done).
    """
    g = problem.graph
    outputs = set(g.outputs)
    value = Values(base, neg_disp, problem.clamped)  # values that differ from the feed-forward ones, once per step
    closed = closed and gamma == 1.0
    final = policy.final
    delta: dict[str, torch.Tensor] = {}
    neg_pred: dict[str, torch.Tensor] = {}  # x_ff - mu, where the closed form wants it
    neg_feedback = Sums()
    terms: dict[str, dict[str, torch.Tensor]] = {}
    items, names = [], []
    for name in _stirring(g, neg_disp) if params is problem.params else g.latent:
        if policy.skip(name):
            continue
        v = g[name]
        latent_parents = [p for p in v.parents if p in base]
        unchanged = (not any(p in neg_disp for p in latent_parents)
                     and all(params[q] is problem.params[q] for q in v.params))
        if name not in outputs and unchanged and name not in neg_disp:
            continue
        fast = closed and policy.formable(name, v.params, unchanged, latent_parents)
        form = None if name in outputs else linear_form(v, neg_disp, params, g.constants, base,
                                                        [g[p].shape for p in v.parents], fast)
        if form is not None:  # an identity, a chunk, a linear layer or a sum: no autograd, no value formed
            cached.pop(name, None)
            d, pred, feedback = form
            policy.gate(name, d, latent_parents)
        else:
            wants = policy.wants(name, latent_parents)
            lin = cached.pop(name, None)
            if lin is None or not unchanged:
                parents = [value(p) for p in v.parents]
                track = [not final and p in base and x.is_floating_point()
                         for p, x in zip(v.parents, parents, strict=True)]
                lin = linearise(v, parents, params, g.constants, track, wrt_params=wants)
            if name in outputs:
                d, pred = problem.output_gradient(name, lin.mu), None
            elif unchanged:  # mu is x_ff bit for bit: delta is the displacement itself
                d, pred = neg_disp[name], None
            else:
                d, pred = vertex_delta(lin.mu, base[name], neg_disp.get(name), closed)
            items.append((lin, d, policy.gate(name, d, latent_parents), not final))
            names.append(name)
            feedback = ()
        delta[name] = d
        if pred is not None:
            neg_pred[name] = pred
        neg_feedback.add_all(feedback)
    for name, (_, _, fire, _), (parent_cots, own) in zip(names, items, pull_back(items), strict=True):
        if fire:  # one autograd call above for every vertex
            terms[name] = own
            grads.add_all(own.items())
        neg_feedback.add_all(zip(g[name].parents, parent_cots, strict=True))
    del items
    if policy.done():
        return terms, neg_disp
    position = _positions(g)
    driven = sorted((n for n in delta.keys() | neg_feedback.keys() if n in position), key=position.__getitem__)
    return terms, advance_displacements(driven, outputs, neg_disp, delta, neg_feedback, gamma,
                                        neg_pred if closed else None)


def _positions(g: Graph) -> dict[str, int]:
    return g.derived("latent positions", lambda g: {n: i for i, n in enumerate(g.latent)})


def _stirring(g: Graph, neg_disp: Mapping[str, torch.Tensor]) -> list[str]:
    """The hidden vertices a step may touch while the parameters stay put, in `g.latent`'s order: the outputs,
    the moved vertices and their children. Every other one is still, its prediction unchanged, and the step
    skips it; walking them all made each step cost the whole graph, and a run on a deep graph depth squared."""
    moved = neg_disp.keys()
    stirred = {*g.outputs, *moved, *(c for n in moved for c in g.children[n])}
    position = _positions(g)
    return sorted((n for n in stirred if n in position), key=position.__getitem__)
