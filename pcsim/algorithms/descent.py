"""IL's and iPC's inference descends the energy F (`Problem.energy`) from the feed-forward state, where F is the
loss. A run that ends above that energy has climbed it (a step gamma past 2 / the energy's curvature grows the
state geometrically): its update is finite but meaningless, so it is refused, as an overflow is
(`relaxation.check_finite`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch

from pcsim.algorithms.relaxation import Relaxation, named
from pcsim.errors import DivergenceError
from pcsim.numerics import tolerance

# Asked only once a run has diverged: (the setting at fault, as 'lr = 0.02', and its cure), or None for gamma.
Blame = Callable[[], "tuple[str, str] | None"]


def feedforward_energy(relax: Relaxation) -> float:
    """F at the feed-forward state: every hidden error is zero, so F is the outputs' loss (times the precision)."""
    mu = {o: relax.base[o] for o in relax.outputs}
    return float(sum(relax.problem.energy(mu, {}, precision=relax.precision, names=relax.outputs).values()))


def energies(relax: Relaxation, eps: Mapping[str, torch.Tensor], names: Iterable[str] | None = None
             ) -> dict[str, float]:
    """F's terms at the current state over `names` (default every latent vertex), from the errors `eps` just taken
    (`Relaxation.errors`). Over a subset their sum is a lower bound of F: every term is >= 0."""
    mu = {o: relax.prediction(o) for o in relax.outputs}
    names = relax.latent if names is None else [n for n in relax.latent if n in set(names)]
    return {n: float(e) for n, e in relax.problem.energy(mu, eps, precision=relax.precision, names=names).items()}


def refuse_climb(rule: str, relax: Relaxation, start: float, end: Mapping[str, float], steps: int,
                 partial: bool = False, blame: Blame | None = None) -> None:
    """A DivergenceError where the energy `end` (terms per vertex, `energies`) after `steps` steps exceeds `start`
    (`feedforward_energy`) by more than rounding; `partial`: `end` covers some vertices only (a lower bound).
    `blame`: called only then, it may name another setting at fault than gamma (`Blame`)."""
    total = sum(end.values())
    if not climbed(relax, start, total):  # NaN is not: check_finite has named it already where the update is NaN
        return
    worst = max(end, key=lambda n: end[n])
    at, cure = (blame() if blame else None) or (
        f"gamma = {relax.gamma}", "A step of gamma times the drive is stable only below 2 / the energy's curvature: "
        "try a smaller gamma")
    raise DivergenceError(
        f"{rule} diverged at {at}: its inference descends the energy, which rose from {start:.4g} "
        f"at the feed-forward state to {'at least ' if partial else ''}{total:.4g} after {steps} steps (the largest "
        f"term {end[worst]:.4g} at {named(relax.problem.graph[worst])}), so its update is meaningless, though "
        f"finite. {cure}")


def climbed(relax: Relaxation, start: float, total: float) -> bool:
    """Whether the energy `total` exceeds `start` by more than the dtype's rounding (NaN has not climbed)."""
    dtype = next(iter(relax.base.values())).dtype
    return total > start * (1 + tolerance(dtype if dtype.is_floating_point else torch.float64))
