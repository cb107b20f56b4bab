"""Questions about the learning rule, answered with library calls.

- `locality_audit`: is each parameter's update a function of its post-synaptic error and its
  pre-synaptic activity alone? Checked by perturbation, not by reading code.
- `timing_sensitivity`: how far from BP is the update of each level when taken k steps late or early?
- `il_convergence`: IL's relative error and angle to BP over gamma, T, output precision, fixed prediction.
- `energy_trace`: energy per population over discrete inference steps.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch

from pcsim.algorithms import bp as backprop
from pcsim.algorithms import il, zil
from pcsim.algorithms.il import count, relaxation
from pcsim.algorithms.problem import Problem
from pcsim.algorithms.schedule import Schedule
from pcsim.dynamics.divergence import DivergenceWarning
from pcsim.errors import DivergenceError, first_line
from pcsim.graph.argument import takes_graph
from pcsim.graph.ir import Graph
from pcsim.graph.provenance import user_stacklevel
from pcsim.numerics import deviation_and_angle, relative_difference, tolerance
from pcsim.ops.il_ops import local_op
from pcsim.ops.local import linearise, records_autograd
from pcsim.ops.table import entry


@dataclass(frozen=True)
class LocalityReport:
    parameter: str
    vertex: str  # the post-synaptic population
    pre: tuple[str, ...]  # the pre-synaptic populations (the vertex's parents)
    local: bool  # unchanged (bit for bit) when every other population is perturbed
    depends_on_post: bool  # changes when the post-synaptic error changes
    depends_on_pre: bool  # changes when pre-synaptic activity changes (False for biases)
    form: str
    # zero whatever the errors and activities: the parameter reaches this vertex only through a zero
    # (an RNN's W_hh applied to the zero initial state), so there is no term to be local or not
    silent: bool = False


# A plasticity rule as the audit sees it: (problem, values of every population, errors of every latent
# population, the post-synaptic vertex) -> the update of each of that vertex's parameters.
UpdateRule = Callable[[Problem, Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], str], dict]


def _wave_hebbian(problem: Problem, values, errors, vertex: str) -> dict[str, torch.Tensor]:
    """The Hebbian term as Z-IL's synchronous step and autonomous Fa-Z-IL compute it: the vertex's
    `pcsim.ops.local.linearise` (autograd on its one call, or a placed selection).
    (The wavefront runs the same calls under one autograd pass over the whole forward.)"""
    g = problem.graph
    v = g[vertex]
    parents = problem.parent_values(vertex, values)
    track = [p in g.latent and x.is_floating_point() for p, x in zip(v.parents, parents, strict=True)]
    lin = linearise(v, parents, problem.params, g.constants, track, wrt_params=True)
    return lin.pullback(errors[vertex], hebbian=True, feedback=False)[1]


def _fast_il_hebbian(problem: Problem, values, errors, vertex: str) -> dict[str, torch.Tensor]:
    """The Hebbian term as IL's inference loop computes it (`pcsim.ops.il_ops.local_op`)."""
    g = problem.graph
    v = g[vertex]
    op = local_op(v, problem.params, g.constants, [p in g.latent for p in v.parents], [g[p].shape for p in v.parents])
    op.at(problem.parent_values(vertex, values))
    return op.hebbian(errors[vertex])


AUDITED_RULES = {"zil": _wave_hebbian, "fa-zil": _wave_hebbian, "il": _fast_il_hebbian}


@takes_graph
@records_autograd
def locality_audit(graph: Graph, inputs, target, loss="mse", seed: int = 0,
                   rule: str | UpdateRule = "zil") -> list[LocalityReport]:
    """Perturb everything but a vertex's own error, its parents' values and its own parameters; its update
    must not move. "Everything" is every other population's value and error, and what the rule could read
    from `problem`: the other parameters (weight transport), the target (a global error broadcast, as in
    direct feedback alignment) and the clamped values that are not its parents.

    `rule`: 'zil' / 'fa-zil' (run on the levelled graph) or 'il' audit the code each algorithm uses for
    its plasticity; a callable `(problem, values, errors, vertex) -> {parameter: update}` audits any
    other rule. It sees every population's value and error; a local rule reads only its own.
    """
    if not (callable(rule) or (isinstance(rule, str) and rule in AUDITED_RULES)):
        raise ValueError(f"rule must be one of {tuple(AUDITED_RULES)} or a callable (problem, values, errors, vertex), "
                         f"got {rule!r}")
    update = rule if callable(rule) else AUDITED_RULES[rule]
    if rule in ("zil", "fa-zil"):
        graph = graph.level()
    problem = Problem.build(graph, inputs, target, loss)
    gen = torch.Generator().manual_seed(seed)

    def noise(x, scale=1.0):
        return x + scale * torch.randn(x.shape, generator=gen, dtype=x.dtype) if x.is_floating_point() else x

    def other_target(y):  # class indices: another valid class for each sample (not when all are one class)
        return noise(y) if y.is_floating_point() else y.flatten().roll(1).reshape(y.shape)

    def elsewhere(v) -> Problem:  # the problem as the rule sees it, all but the vertex's own parameters moved
        return replace(problem, params={n: p if n in v.params else noise(p) for n, p in problem.params.items()},
                       targets={n: other_target(y) for n, y in problem.targets.items()},
                       clamped={n: c if n in v.parents else noise(c) for n, c in problem.clamped.items()})

    base = problem.feedforward()
    values = {n: noise(v, 0.1) for n, v in base.items()}
    values.update(problem.clamped)  # inputs are pre-synaptic activity too
    errors = {n: noise(torch.zeros_like(v)) for n, v in base.items()}
    reports = []
    for v in graph.vertices:
        if not v.params or v.name not in graph.latent:
            continue
        ref = update(problem, values, errors, v.name)
        other_values = {n: x if n in v.parents else noise(x) for n, x in values.items()}
        other_errors = {n: e if n == v.name else noise(e) for n, e in errors.items()}
        moved_others = update(elsewhere(v), other_values, other_errors, v.name)
        moved_post = update(problem, values, {**errors, v.name: 2.0 * errors[v.name] + 1.0}, v.name)
        pre = [p for p in v.parents if values[p].is_floating_point()]
        moved_pre = (update(problem, {n: x + 1.0 if n in pre else x for n, x in values.items()}, errors, v.name)
                     if pre else ref)
        for p in v.params:
            missing = [u for u in (ref, moved_others, moved_post, moved_pre) if not torch.is_tensor(u.get(p))]
            if missing:
                raise ValueError(f"the rule gave no update (a tensor) for parameter {p!r} of vertex {v.name!r}: "
                                 f"it must return {{parameter: update}} for each of the vertex's parameters "
                                 f"{list(v.params)}")
            reports.append(LocalityReport(
                parameter=p, vertex=v.name, pre=tuple(v.parents),
                local=bool(torch.equal(moved_others[p], ref[p])),
                depends_on_post=not torch.equal(moved_post[p], ref[p]),
                depends_on_pre=not torch.equal(moved_pre[p], ref[p]),
                form=entry(v.op).locality or f"(d mu / d theta)^T post error of op '{v.op}'",
                silent=not any(bool(u[p].any()) for u in (ref, moved_others, moved_post, moved_pre))))
    return reports


@takes_graph
@records_autograd
def timing_sensitivity(graph: Graph, inputs, target, loss="mse", offsets: Iterable[int] = range(-1, 3)
                       ) -> tuple[list[int], list[int], np.ndarray]:
    """Divergence from BP (relative, over each level's parameters) when level d updates at step d + k.

    Returns (levels, offsets, matrix[level, offset]); the k = 0 column is Z-IL (rounding only).
    A parameter counts for level d when every vertex reading it is at level d (a layer applied to two
    inputs at one depth moves as a whole); one shared across levels is left out (its update mixes steps).
    NaN marks what is not measured: a level with no parameter of its own, or a step d + k before the run.
    inf marks an update that overflowed (or NaN'd) or one where BP's is zero; a DivergenceWarning says which.
    """
    if not isinstance(offsets, Iterable):
        raise ValueError(f"offsets must be an iterable of whole numbers of steps (range(-1, 3)), got {offsets!r}")
    offsets = [count(k, "each offset") for k in offsets]  # 0.5 matched no step: a zero update, read as 1.0
    g = graph.level()
    bp = backprop(g, inputs, target, loss)
    levels = sorted({g.min_distance[v.name] for v in g.vertices if v.params and v.name in g.min_distance})
    level_of = {p: {g.min_distance.get(u) for u in users} for p, users in g.users.items()}
    on_time = Schedule.of(g)
    out = np.full((len(levels), len(offsets)), np.nan)
    infinite: dict[tuple[int, int], str] = {}
    shared: dict[int, list[str]] = {}
    for i, d in enumerate(levels):
        at_level = [v.name for v in g.vertices if v.params and g.min_distance.get(v.name) == d]
        params = [p for p, at in level_of.items() if at == {d}]
        if not params:
            shared[d] = sorted({p for v in at_level for p in g[v].params})
            continue
        for j, k in enumerate(offsets):
            if d + k < 0:
                continue
            got = zil(g, inputs, target, loss, schedule=on_time.shifted(dict.fromkeys(at_level, k)))
            ref = torch.cat([bp[p].reshape(-1) for p in params])
            update = torch.cat([got[p].reshape(-1) for p in params])
            out[i, j] = relative_difference(update, ref)
            if out[i, j] == np.inf:
                infinite[(d, k)] = "BP's update is zero" if not bool(ref.any()) else f"overflowed {update.dtype}"
    if infinite:  # a table of inf with no word reads as a fault of the tool: say which cells and why
        cells = ", ".join(f"level {d} at offset {k} ({why})" for (d, k), why in infinite.items())
        warnings.warn(
            f"timing_sensitivity: {len(infinite)} cell(s) are inf: {cells}. An update taken late reads Z-IL's state "
            f"after the level's step, where inference at gamma = 1 is unstable and grows about geometrically with "
            f"the delay, here past the dtype's range (the relative difference is then as large as it gets); where "
            f"BP's update is zero, any other update is infinitely far from it in relative terms.",
            DivergenceWarning, stacklevel=user_stacklevel())
    if shared:  # rows of NaN (every row, for a recurrent net) with no word read as a fault of the tool too
        rows = "; ".join(f"level {d}: {', '.join(ps[:3])}{' ...' if len(ps) > 3 else ''}" for d, ps in shared.items())
        scope = "every row" if len(shared) == len(levels) else f"{len(shared)} of {len(levels)} rows"
        warnings.warn(f"timing_sensitivity: {scope} are NaN: their parameters are shared with other levels (a "
                      f"recurrent weight read at every time step, a layer applied at two depths), so moving one "
                      f"level's step moves only part of their update, which has no one level to measure ({rows})",
                      stacklevel=user_stacklevel())
    return levels, offsets, out


@takes_graph
@records_autograd
def il_convergence(graph: Graph, inputs, target, loss="mse", *, gammas=(0.1,), steps=(1, 10, 100),
                   precisions=(1.0,), fixed_prediction=(False, True)) -> list[dict]:
    """IL's relative error and angle to BP for every combination asked for (Rosenbaum-style panels)."""
    settings = {"gammas": gammas, "steps": steps, "precisions": precisions, "fixed_prediction": fixed_prediction}
    for name, values in settings.items():  # one row per combination: an empty or scalar setting gave no rows
        if isinstance(values, str) or not isinstance(values, Iterable):
            raise ValueError(f"{name} must be a sequence of settings (one row per combination), got {values!r}")
        settings[name] = tuple(values)
        if not settings[name]:
            raise ValueError(f"{name} is empty: no combination to run (one row per combination)")
    gammas, steps, precisions, fixed_prediction = settings.values()
    bp = backprop(graph, inputs, target, loss)
    rows, diverged = [], []
    for fixed, gamma, precision, t in itertools.product(fixed_prediction, gammas, precisions, steps):
        try:
            got = il(graph, inputs, target, loss, gamma=gamma, steps=t, fixed_prediction=fixed,
                     output_precision=precision)
            rel, angle = deviation_and_angle(got, bp)
        except (DivergenceError, ValueError) as e:  # one setting past the stable rate: its row says so, the sweep
            if isinstance(e, ValueError) and not (fixed and gamma >= 2):  # goes on (fixed prediction refuses
                raise  # gamma >= 2, where it never settles); any other bad setting is the caller's to mend
            rel, angle = math.inf, math.nan
            diverged.append(f"gamma {gamma}, {t} steps{', fixed prediction' if fixed else ''} ({first_line(e)})")
        rows.append({"fixed_prediction": fixed, "gamma": gamma, "output_precision": precision,
                     "steps": t, "relative_error": rel, "angle_deg": angle})
    if diverged:
        warnings.warn(f"il_convergence: {len(diverged)} setting(s) diverged, their relative error is inf and their "
                      f"angle NaN: {'; '.join(diverged[:3])}{' ...' if len(diverged) > 3 else ''}",
                      DivergenceWarning, stacklevel=user_stacklevel())
    return rows


@takes_graph
@records_autograd
def energy_trace(graph: Graph, inputs, target, loss="mse", *, gamma: float = 0.1, steps: int = 50,
                 fixed_prediction: bool = False, output_precision: float = 1.0, params=None
                 ) -> dict[str, np.ndarray]:
    """Energy of each population at IL inference steps 0..steps (outputs: the loss times the output precision),
    for the relaxation `pcsim.il` runs with the same settings."""
    relax = relaxation(graph, inputs, target, loss, params, steps, gamma, output_precision, fixed_prediction)
    trace: dict[str, list[float]] = {n: [] for n in graph.latent}
    for t in range(steps + 1):
        eps = relax.errors()
        mu = {o: relax.prediction(o) for o in graph.outputs}  # the energy reads predictions at outputs only
        for n, e in relax.problem.energy(mu, eps, precision=output_precision).items():
            trace[n].append(float(e))
        if t < steps:
            relax.advance(eps, relax.feedback(eps))
    out = {n: np.array(v) for n, v in trace.items()}
    _warn_if_not_finite(out, gamma, descends=not fixed_prediction)
    return out


def _warn_if_not_finite(trace: dict[str, np.ndarray], gamma: float, descends: bool) -> None:
    """A relaxation past its stable rate overflows; il raises then, a trace shows it but must say so. With fixed
    predictions the errors move towards BP's, not down the energy (`descends` False): only overflow tells."""
    first = {n: int(np.argmax(~np.isfinite(e))) for n, e in trace.items() if not np.isfinite(e).all()}
    total = sum(trace.values())
    if descends and not first and total[-1] > total[0] * (1 + tolerance(torch.float64)):  # climbed, no overflow yet
        warnings.warn(f"energy_trace: the relaxation diverged at gamma = {gamma}: the energy, which IL's inference "
                      f"descends, rose from {total[0]:.4g} to {total[-1]:.4g} over {len(total) - 1} steps; a smaller "
                      "gamma keeps the inference stable", DivergenceWarning, stacklevel=user_stacklevel())
    if first:
        where = ", ".join(f"{n} from step {t}" for n, t in sorted(first.items(), key=lambda kv: kv[1]))
        warnings.warn(f"energy_trace: the relaxation diverged at gamma = {gamma}: energies are inf or NaN ({where}); "
                      f"a smaller gamma keeps the inference stable", DivergenceWarning, stacklevel=user_stacklevel())
