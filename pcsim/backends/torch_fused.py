"""An adaptive Runge-Kutta step fused with the vector field and compiled: `Tsit5(compile=True)`.

On a piece of plain inference (target shown, instantaneous errors, gates shut, nothing held) the field is IL's
steady step (`il_compiled.SteadyStep.local`), not a second copy of the equations. One step of torchode's tableau
(stage sums, field evaluations, error estimate) is recorded as one ATen graph and compiled by inductor
(`pcsim.algorithms.compiled`); torchode keeps the coefficients, the controller and the dense output. The compiled
step is kept per graph and layout (`Graph.derived`); where compiling fails the step runs eagerly, with a warning.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pcsim.algorithms.compiled import Parts, compile_function, layout_key, unflatten
from pcsim.algorithms.il_compiled import Signature, SteadyStep
from pcsim.algorithms.relaxation import value_drive


def _why_not(field, a: float, b: float) -> str | None:
    mid = 0.5 * (a + b)
    if field.gates(mid) or not field.gate.switches_known:  # a gate of unknown switches may open inside
        return "plasticity is on"
    if field.leaky:
        return "some errors are leaky (tau_e > 0)"
    if not field.shown(mid):
        return "the target is not shown"
    if field.held(mid):
        return "some populations hold"
    graph = field.problem.graph
    if any(c in field.relaxation.base for o in field.outputs for c in graph.children[o]):
        return "an output population feeds another population"
    return None


def fused_step(field, step, y: torch.Tensor, method: str, t0: float, t1: float) -> tuple[Callable | None, str | None]:
    """`stepper(y, k0, dt) -> (y1, error estimate, stages)` for torchode's Runge-Kutta `step` on `field`, compiled,
    for the piece of the solve from `t0` to `t1` (no switch inside), whose flat (1, n) state `y` is; or None
    and why not (the piece is not plain inference, or compiling failed, warned)."""
    why = _why_not(field, t0, t1)
    if why:
        return None, why
    relax = field.relaxation
    views = field.views(y[0])
    relax.load({n: views["u", n] for n in field.latent})  # fixes the step's signature: what moves, what is stale
    steady = SteadyStep(relax, Signature.of(relax))
    moved = len(steady.moved)
    fixed, names = steady.tensors[moved:], steady.names[moved:]
    tableau = step.tableau
    a, b, b_err = tableau.a.tolist(), tableau.b.tolist(), tableau.b_err.tolist()
    stages, ssal = len(b), bool(tableau.ssal)
    parts = [(k, field.shapes[k], offset, field.sizes[k]) for k, offset in field.offsets.items()]
    tau = field.tau_x

    def derivative(flat: torch.Tensor, t: Parts) -> torch.Tensor:
        component = {k: flat.narrow(0, offset, size).view(shape) for k, shape, offset, size in parts}
        t = {**t, "disp": {n: component["u", n] for n in steady.moved}}
        _, eps, fb = steady.local(t)
        out = []
        for k, _, _, size in parts:  # the plasticity accumulators stand still: every gate is shut
            n = k[1]
            still = n in field.outputs or k[0] != "u"
            d = None if still else value_drive(eps.get(n), fb.get(n))
            out.append(flat.new_zeros(size) if d is None else (d if tau[n] == 1.0 else d / tau[n]).reshape(-1))
        return torch.cat(out)

    def combine(y0: torch.Tensor, h: torch.Tensor, weights: list[float], k: list[torch.Tensor]) -> torch.Tensor:
        terms = [w * kj for w, kj in zip(weights, k, strict=False) if w]  # summed in stage order
        return y0 + h * sum(terms[1:], terms[0]) if terms else y0

    def rk_step(y0: torch.Tensor, k0: torch.Tensor, dt: torch.Tensor, *tensors: torch.Tensor):
        t = unflatten(names, tensors, steady.parts)
        h, k = dt[0], [k0[0]]
        yi = y0[0]
        for i in range(1, stages):
            yi = combine(y0[0], h, a[i][:i], k)
            k.append(derivative(yi, t))
        y1 = yi if ssal else combine(y0[0], h, b, k)
        error = combine(torch.zeros_like(y1), h, b_err, k)
        return y1[None], error[None], torch.stack(k)[:, None]

    dt = torch.ones(1, dtype=y.dtype, device=y.device)
    example = (y, y.clone(), dt, *fixed)
    key = ("rk-fused", method, tuple(sorted(tau.items())), steady.key(steady.tensors), layout_key(example[:3]))
    compiled = field.problem.graph.derived(key, lambda _: compile_function(
        rk_step, example, f"the fused {method} step"))
    if compiled is None:
        return None, "compiling failed"
    return (lambda y0, k0, h: compiled(y0, k0, h, *fixed)), None
