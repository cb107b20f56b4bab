"""Euler on the ODEs as IL's own inference step: the right-hand side without a second implementation.

With instantaneous errors (tau_e = 0) and one value time constant tau_x, an Euler step of the
vector field (`field.py`) is IL's synchronous step at gamma = dt / tau_x: every error from the
same state, then x_i += dt / tau_x (-e_i + sum_c J_ci^T e_c), outputs clamped once the target is
shown. So the torch backend runs `algorithms.relaxation.Relaxation`, the loop `pcsim.il` runs,
with its fast kernels and its skipping of what has not moved, and adds what the ODEs have beyond
IL: target onset (before it every error is zero, so nothing moves), plasticity gates (the Hebbian
term of each vertex whose gate is open, integrated with the step) and the recording.
`tests/dynamics/test_relaxed.py` holds it to the field's own Euler steps.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from pcsim.algorithms import il_compiled
from pcsim.algorithms.relaxation import Relaxation
from pcsim.dynamics.field import Observation, State, VectorField
from pcsim.dynamics.fixed_step import n_steps
from pcsim.dynamics.recording import Recorder, SimulationError

# Errors are checked for NaN and inf every this many steps (and at recorded and last steps): a value that
# overflows stays non-finite, and so does its error, so a blow-up is still caught, for 1/16 of the checks.
GUARD_EVERY = 16


def applies(field: VectorField, method: str) -> bool:
    """Whether Euler on `field` is IL's step: instantaneous errors and one value time constant."""
    return method == "euler" and not field.leaky and len(set(field.tau_x.values())) == 1


def run(field: VectorField, recorder: Recorder, *, t_end: float, dt: float, progress: bool = False,
        compile: bool = False) -> State:
    """Euler from the feed-forward state at t = 0 to t_end (the last step shorter if needed); returns
    the final state as `fixed_step.integrate` does (displacements and plasticity accumulators).

    compile: the runs of plain steps (target shown, no gate open, nothing held, nothing recorded, a full
    dt) go through `il_compiled.run`, IL's steady step compiled; the errors are checked after each run."""
    tau = next(iter(field.tau_x.values()))
    relax = Relaxation(field.problem, gamma=dt / tau, base=field.base)
    plastic = {k[1]: torch.zeros(field.shapes[k], dtype=field.dtype, device=field.device)
               for k in field.layout if k[0] == "w"}
    steps = n_steps(0.0, t_end, dt)
    times = [min(k * dt, t_end) for k in range(steps + 1)]
    wanted = set(recorder.steps_on_grid(steps, dt))
    recorder.reserve(len(wanted))  # observations are views: copied once
    bar = tqdm(total=steps, desc="pcsim euler", disable=not progress, leave=False)
    checked = 0.0  # the last time every error was seen finite
    k, plain_run = 0, False
    try:
        while k <= steps:
            t = times[k]
            shown, held = field.shown(t), field.held(t)
            # a held population's (instantaneous) error falls silent: absent, as an exact zero is
            eps = relax.errors(only=[n for n in field.latent if n not in held] if held else None) if shown else {}
            if k % GUARD_EVERY == 0 or k == steps or k in wanted or plain_run:
                _guard(eps, checked, t)
                checked = t
            if k in wanted:
                recorder.add_observation(t, _observe(field, relax, eps, shown, recorder.populations))
            if k == steps or not shown:  # before the target, every error is zero: nothing moves
                bar.update(1 if k < steps else 0)
                k += 1
                continue
            h = min(dt, t_end - t)
            if plastic:
                _hebbian(field, relax, eps, t, h, plastic)
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
    finally:
        bar.close()
    return {**{("u", n): relax.displacement(n) for n in field.latent}, **{("w", p): w for p, w in plastic.items()}}


def _plain_steps(field: VectorField, times: list[float], k: int, steps: int, wanted: set[int]) -> int:
    """How many steps from k on are IL's plain step: the target shown, no gate open, nothing held, nothing
    recorded, and a full dt (the last step, which may be shorter, stays with the loop)."""
    j = k
    while (j < steps - 1 and j not in wanted and field.shown(times[j]) and not field.held(times[j])
           and not field.gates(times[j])):
        j += 1
    return j - k


def _hebbian(field: VectorField, relax: Relaxation, eps, t: float, h: float, plastic: dict) -> None:
    """tau_w dw/dt = sum of gate x Hebbian term, one Euler step of it (the field's plasticity)."""
    gates = field.gates(t)
    open_ = {n: e for n, e in eps.items() if n in gates}
    if not open_:
        return
    for n, terms in relax.hebbian(open_).items():
        for p, term in terms.items():
            plastic[p].add_(term, alpha=h * gates[n] / field.tau_w)


def _guard(eps: dict[str, torch.Tensor], finite_at: float, t: float) -> None:
    """A non-finite error is a blow-up. NaN and inf survive a sum, so one sum of all errors and one
    synchronisation find it; only then is each population looked at, to name the ones at fault."""
    if not eps or math.isfinite(torch.stack([e.sum() for e in eps.values()]).sum().item()):
        return
    bad = {n: "NaN" if bool(torch.isnan(e).any()) else "inf"
           for n, e in eps.items() if not bool(torch.isfinite(e).all())}
    if not bad:  # the sum overflowed; every error is finite
        return
    which = ", ".join(f"'{n}' ({what})" for n, what in bad.items())
    raise SimulationError(f"the simulation blew up at t = {t:.6g} (finite at t = {finite_at:.6g}): the error "
                          f"population {which} became non-finite; try a smaller dt or larger time constants")


def _observe(field: VectorField, relax: Relaxation, eps, shown: bool, names) -> Observation:
    """What the recorder keeps of the populations `names`, as `VectorField.observe` gives it."""
    values, errors = {}, {}
    for n in names:  # views of the loop's storage: the reserved recorder copies them
        e = eps.get(n)
        errors[n] = torch.zeros_like(relax.base[n]) if e is None else e
        if n in field.outputs and shown:  # a shown output is its prediction plus its error (MSE: the target)
            values[n] = relax.prediction(n) + errors[n]
        else:
            values[n] = relax.value(n)
    mu = {n: relax.prediction(n) for n in names if n in field.outputs}
    terms = relax.problem.energy(mu, eps, shown=shown, names=names)
    totals = torch.stack(list(terms.values())).tolist() if terms else []  # one synchronisation
    return Observation(values, errors, dict(zip(names, totals, strict=True)))
