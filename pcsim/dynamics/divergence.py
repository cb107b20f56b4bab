"""The end-of-run check for a run that diverged without overflowing (which the blow-up guard would catch): an
explicit step beyond its stability limit grows a population geometrically."""

from __future__ import annotations

import warnings

import torch

from pcsim.dynamics.field import State, VectorField
from pcsim.graph.provenance import user_stacklevel

# Beyond this multiple of the network's own scale a final state has diverged: PC's relaxation descends an energy no
# larger than the loss at the feed-forward state, so its values stay within a few of those scales.
GROWTH = 1e6
WHAT = {"u": "value", "e": "error"}


class DivergenceWarning(RuntimeWarning):
    """A run ended with populations far beyond the network's scale: most often an explicit step past its limit."""


def _largest(tensors) -> float:
    return max((float(t.detach().abs().max()) for t in tensors if t.numel()), default=0.0)


def scale(field: VectorField) -> float:
    """The network's own scale: its feed-forward values, clamped inputs and targets (at least 1)."""
    problem = field.problem
    targets = [t for t in problem.targets.values() if torch.is_tensor(t) and t.is_floating_point()]
    return max(1.0, _largest(field.base.values()), _largest(targets))


def warn_if_diverged(field: VectorField, final: State, dt: float | None) -> None:
    """Warn, naming the populations, when the final state lies GROWTH times beyond the network's scale, with the
    explicit-step limits it breaks where the run had a fixed step dt."""
    s = scale(field)
    big = sorted(((float(v.detach().abs().max()), kind, name) for (kind, name), v in final.items()
                  if kind in WHAT and v.numel()), reverse=True)
    big = [b for b in big if not b[0] <= GROWTH * s]  # NaN too, though the guard stops those first
    if not big:
        return
    named = ", ".join(f"the {WHAT[kind]} population '{name}' reached {m:.3g}" for m, kind, name in big[:3])
    more = f" (and {len(big) - 3} more)" if len(big) > 3 else ""
    if dt is None:
        hint = "the solver followed the equations: look at the time constants, the gates and the target"
    else:
        hint = (f"an explicit step of dt = {dt:g} is stable only below 2 tau_x / lambda (lambda >= 1, the "
                f"energy's curvature; here dt / tau_x = {dt / min(field.tau_x.values()):.3g} at the smallest tau_x)")
        leaky = [n for n in field.leaky if dt >= 2 * field.tau_e[n]]
        if leaky:
            hint += (f" and a leaky error only below dt = 2 tau_e ('{leaky[0]}' has dt / tau_e = "
                     f"{dt / field.tau_e[leaky[0]]:.3g})")
        hint += ": try a smaller dt, or an adaptive solver"
    warnings.warn(f"the run diverged: at t_end {named}{more}, more than {GROWTH:g} times the network's scale "
                  f"({s:.3g}: its feed-forward values and targets); {hint}", DivergenceWarning,
                  stacklevel=user_stacklevel())
