"""The vector field written out literally, the oracle of `VectorField` (which runs IL's step at the state).

Per latent vertex, autograd on its own call (`Autograd`): mu, the error (x - mu, the loss's output
error once the target is shown, or the leaky error population), the feedback sum_c J_c^T eps_c and the
Hebbian terms; then the equations of shared/DESIGN.md section 1. Nothing is skipped or cached.
"""

import torch

from pcsim.ops.local import Autograd


def literal_field(field, t: float, state):
    problem, shown, held = field.problem, field.shown(t), field.held(t)
    values = {n: field.base[n] + state["u", n] for n in field.latent}
    err, drive, fb, hebb = {}, {}, {}, {}
    for n in field.latent:
        lin = Autograd(problem.graph[n], problem.parent_values(n, values), problem.params, problem.graph.constants)
        drive[n] = problem.output_error(n, lin.mu) if n in field.outputs and shown else values[n] - lin.mu
        # a held population's error is silent (zero), leaky or instantaneous
        err[n] = torch.zeros_like(drive[n]) if n in held else state["e", n] if ("e", n) in state else drive[n]
        cots, hebb[n] = lin.pullback(err[n])
        for p, c in zip(problem.graph[n].parents, cots, strict=True):
            if c is not None and p in values:
                fb[p] = c if p not in fb else fb[p] + c
    d = {}
    for n in field.latent:
        if n in held:
            d["u", n] = torch.zeros_like(err[n])
        elif n in field.outputs:  # free before the target, clamped after
            d["u", n] = torch.zeros_like(err[n]) if shown else -err[n] / field.tau_x[n]
        else:
            d["u", n] = (fb.get(n, 0) - err[n]) / field.tau_x[n]
    for n in field.leaky:
        d["e", n] = torch.zeros_like(err[n]) if n in held else (drive[n] - err[n]) / field.tau_e[n]
    for k in field.layout:
        if k[0] == "w":
            d[k] = torch.zeros(field.shapes[k], dtype=field.dtype)
    for n in field.latent:
        g = field.gate(n, field.levels[n], t) if n in field.levels else 0.0
        for p, h in hebb[n].items() if g else ():
            d["w", p] = d["w", p] + (g / field.tau_w) * h
    return d
