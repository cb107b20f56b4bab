"""Z-IL: inference learning under conditions C1-C3, whose updates equal backprop's.

C1 feed-forward start (all hidden errors zero); C3 gamma = 1; C2 the parameters of vertex i
take their update at step t = d_i, its distance to the output. On a levelled graph the error of
vertex i at t = d_i is exactly BP's delta_i while its parents still hold their feed-forward
values, so the Hebbian term equals -dL/dtheta. Shared parameters sum one term per use, each
taken at that use's own step, and (by default) are applied only after inference.
The keyword arguments that break these conditions exist for the mutation tests and studies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from pcsim.algorithms.displacement import Drives, Values, advance_displacements, linear_form, vertex_delta
from pcsim.algorithms.problem import Problem, aligned
from pcsim.algorithms.schedule import Schedule
from pcsim.algorithms.sums import Sums
from pcsim.graph.ir import Graph
from pcsim.ops.local import Autograd, Placement, linearise, pull_back

UPDATE_TIMINGS = ("deferred", "immediate")
INITS = ("feedforward", "random")


def prepare_graph(graph: Graph, level: bool) -> Graph:
    """The graph Z-IL runs on: levelled unless the caller asks to study the unlevelled one."""
    return graph.level() if level else graph


def initial_state(problem: Problem, init: str, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(base, neg_disp): feed-forward values and the negated displacements from them (absent: zero)."""
    base = problem.feedforward()
    if init == "feedforward":
        return base, {}
    if init != "random":
        raise ValueError(f"init must be one of {INITS}, got '{init}'")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    outputs = set(problem.graph.outputs)
    neg_disp = {n: v - torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device)
                for n, v in base.items() if n not in outputs}
    return base, neg_disp


def zil(graph: Graph, inputs, target, loss="mse", *, gamma: float = 1.0, level: bool = True,
        schedule: Schedule | Mapping[str, int] | None = None, init: str = "feedforward",
        update_timing: str = "deferred", lr: float = 1.0, params=None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Synchronous Z-IL; returns dL/dtheta per parameter (autograd's sign, module's names).

    gamma: inference rate (C3 is gamma = 1; otherwise level d's update is scaled by gamma^d).
    level: level the graph first (identity vertices on skip edges); False runs it as traced.
    schedule: a `Schedule` on the levelled graph, or {vertex: step} overriding some vertices' steps
        (default: `Schedule.of`, each vertex at its distance to the output).
    init: 'feedforward' (C1) or 'random' hidden values.
    update_timing: 'deferred' applies parameter changes after inference; 'immediate' applies
        each at its step with learning rate `lr`, so later steps see the changed parameters.
    """
    if update_timing not in UPDATE_TIMINGS:
        raise ValueError(f"update_timing must be one of {UPDATE_TIMINGS}, got '{update_timing}'")
    g = prepare_graph(graph, level)
    on_time = not schedule  # C2 as is: no Schedule given, no step moved
    if init == "feedforward" and on_time:  # vertices that reach no output change no update (Graph.pruned)
        g = g.pruned()
    problem = Problem.build(g, inputs, target, loss, params)
    if not isinstance(schedule, Schedule):
        schedule = Schedule.of(g).moved_to(schedule or {})
    elif schedule.levels != g.min_distance:  # vertices missing from it would silently never update
        raise ValueError("schedule was built on another graph: build it on the one Z-IL runs on (graph.level())")
    clock = Clock(schedule)
    if init == "feedforward":  # C1; each vertex's local graph at that state is kept for its first use
        base, disp, cached = feedforward(problem)
    else:
        (base, disp), cached = initial_state(problem, init, seed), {}
    params = dict(problem.params)
    grads = Sums()
    # C1-C3 on a levelled graph: every value the closed-form update rounds differently is read by
    # no later due vertex (see `displacement.advance_displacements`), so the updates keep their bits; the study options
    # follow the literal update, which the reference rules reproduce bit for bit.
    closed = gamma == 1.0 and g.is_levelled and init == "feedforward" and update_timing == "deferred" and on_time
    for t in range(clock.last + 1):
        hebbian, disp = synchronous_step(problem, base, disp, params, clock.at(t), gamma, grads, cached,
                                         closed=closed)
        if update_timing == "immediate":  # theta += lr * h, with h = -dL/dtheta (exact negation)
            for name in g.latent:
                for p, d in hebbian.get(name, {}).items():
                    params[p] = params[p] - lr * d
    return problem.complete(grads)


def feedforward(problem: Problem) -> tuple[dict[str, torch.Tensor], dict, dict[str, Autograd | Placement]]:
    """The feed-forward state (as `Problem.feedforward`: same kernels, aligned storage), no
    displacements, and every vertex's local graph at that state."""
    g = problem.graph
    base: dict[str, torch.Tensor] = {}
    cached: dict[str, Autograd | Placement] = {}
    for name in g.latent:
        v = g[name]
        parents = [base[p] if p in base else problem.clamped[p] for p in v.parents]
        track = [p in base and x.is_floating_point() for p, x in zip(v.parents, parents, strict=True)]
        cached[name] = linearise(v, parents, problem.params, g.constants, track, wrt_params=True)
        base[name] = aligned(cached[name].mu)
    return base, {}, cached


class Clock:
    """Z-IL's schedule (C2), as `synchronous_step` asks it: vertex i's plasticity is due at step
    `schedule.step(i)` (its distance d_i by default).

    The step policy's questions, per vertex: skipped this step? may it take a displacement form
    (no pullback)? does it want its Hebbian terms, and are they taken? is the run over?"""

    def __init__(self, schedule: Schedule):
        self.schedule, self.last = schedule, schedule.last
        self.due: frozenset[str] = frozenset()
        self.final = False

    def at(self, t: int) -> Clock:
        self.due = self.schedule.due(t)
        self.final = t == self.last
        return self

    def begin(self, neg_disp: Mapping[str, torch.Tensor]) -> None:
        pass

    def skip(self, name: str) -> bool:
        return self.final and name not in self.due  # the state after the last step is never read

    def formable(self, name: str, params: Sequence[str], unchanged: bool, latent_parents: Sequence[str]) -> bool:
        return not (unchanged or self.final or name in self.due)  # literal sums for the study options

    def formed(self, name: str, delta: torch.Tensor, latent_parents: Sequence[str]) -> None:
        pass

    def wants(self, name: str, latent_parents: Sequence[str]) -> bool:
        return name in self.due

    def fires(self, name: str, delta: torch.Tensor, wants: bool, latent_parents: Sequence[str]) -> bool:
        return wants

    def fired(self, name: str) -> None:
        pass

    def done(self) -> bool:
        return self.final


def still(name: str, neg_disp: Mapping[str, torch.Tensor], latent_parents: Sequence[str],
          own_params: Sequence[str], params: Mapping[str, torch.Tensor], original: Mapping[str, torch.Tensor]) -> bool:
    """True when vertex `name` provably has error, feedback and Hebbian terms exactly zero: its own value and
    its latent parents' still hold their feed-forward tensors and its parameters are the original ones, so it
    recomputes its feed-forward prediction bit for bit (same kernels on the same storage, see
    `Problem.feedforward`). Nothing needs computing."""
    if name in neg_disp or any(p in neg_disp for p in latent_parents):
        return False
    return all(params[q] is original[q] for q in own_params)


def synchronous_step(problem: Problem, base: Mapping[str, torch.Tensor], neg_disp: dict[str, torch.Tensor],
                     params: Mapping[str, torch.Tensor], policy, gamma: float, grads: Sums,
                     cached: dict[str, Autograd | Placement], closed: bool = False
                     ) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """One inference step: every vertex's error and feedback from the same state, then
    x_i += gamma (-eps_i + sum_c J_ci^T eps_c) for every hidden vertex; the one step of Z-IL (the
    `Clock` policy) and of autonomous Fa-Z-IL (its local gates, `fa_zil.Gates`).

    The state is carried in autograd's sign (see `displacement.advance_displacements`): errors as delta = -eps and
    displacements negated, so each firing vertex's parameter pullback is dL/dtheta itself; it is
    added to `grads` and returned. Exact savings: vertices that are `still` are skipped (their
    error, feedback and Hebbian terms are exactly zero, and a zero drive leaves them where they
    are); a vertex whose parents and parameters have not changed is pulled back through its
    `cached` feed-forward graph (its prediction is bit for bit the feed-forward one); and on the
    policy's `final` step, whose resulting state is never read, only the due vertices' Hebbian
    terms are computed. `closed`: take `advance_displacements`'s closed form at gamma 1 (x <- mu + feedback), one
    pass less per vertex, and the displacement forms where the policy allows them. Returns
    (dL/dtheta terms per firing vertex, new negated displacements; unchanged once the policy is done).
    """
    g = problem.graph
    outputs = set(g.outputs)
    original = problem.params
    value = Values(base, neg_disp, problem.clamped)  # values that differ from the feed-forward ones, once per step
    closed = closed and gamma == 1.0
    final = policy.final
    policy.begin(neg_disp)
    drives = Drives()
    terms: dict[str, dict[str, torch.Tensor]] = {}
    items, names, fires = [], [], []
    for name in g.latent:
        if policy.skip(name):
            continue
        v = g[name]
        latent_parents = [p for p in v.parents if p in base]
        if name not in outputs and still(name, neg_disp, latent_parents, v.params, params, original):
            continue
        unchanged = not any(p in neg_disp for p in latent_parents) and all(params[q] is original[q] for q in v.params)
        fast = closed and policy.formable(name, v.params, unchanged, latent_parents)
        form = None if name in outputs else linear_form(v, neg_disp, params, g.constants, base,
                                                        [g[p].shape for p in v.parents], fast)
        if form is not None:  # an identity, a chunk, a linear layer or a sum: no autograd, no value formed
            cached.pop(name, None)
            policy.formed(name, drives.form(name, form), latent_parents)
            continue
        wants = policy.wants(name, latent_parents)
        lin = cached.pop(name, None)
        if lin is None or not unchanged:
            parents = [value(p) for p in v.parents]
            track = [not final and p in base and x.is_floating_point()
                     for p, x in zip(v.parents, parents, strict=True)]
            lin = linearise(v, parents, params, g.constants, track, wrt_params=wants)
        if name in outputs:
            d, pred = problem.output_gradient(name, lin.mu), None
        elif unchanged:  # mu is x_ff bit for bit (see `still`): delta is the displacement itself
            d, pred = neg_disp[name], None
        else:
            d, pred = vertex_delta(lin.mu, base[name], neg_disp.get(name), closed)
        drives.own(name, d, pred)
        fire = policy.fires(name, d, wants, latent_parents)
        items.append((lin, d, fire, not final))
        names.append(name)
        fires.append(fire)
    for name, fire, (parent_cots, own) in zip(names, fires, pull_back(items), strict=True):  # one autograd call
        if fire:
            terms[name] = own
            grads.add_all(own.items())
            policy.fired(name)
        drives.neg_feedback.add_all(zip(g[name].parents, parent_cots, strict=True))
    del items
    if policy.done():
        return terms, neg_disp
    return terms, advance_displacements(g.latent, outputs, neg_disp, drives.delta, drives.neg_feedback, gamma,
                          drives.neg_pred if closed else None)
