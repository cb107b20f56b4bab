"""iPC: incremental predictive coding. The weights move at every inference step, alongside the values.

Salvatori et al. 2024 ("A Stable, Fast, and Fully Automatic Learning Algorithm for Predictive
Coding Networks", ICLR; PCX and the Bogacz group's library offer it): from the feed-forward state,
each of T steps computes every error from the same state, then moves the values by
`gamma (-eps + sum_c J^T eps_c)` and every parameter by `lr (d mu / d theta)^T eps`, a descent step
on the energy. There is no separate learning phase: the update is what the weights did meanwhile.

As the other rules do, `ipc` returns a gradient estimate in autograd's sign: the mean over the
steps of dF/dtheta, `(theta_0 - theta_T) / (lr T)`. An SGD step of `lr T` with it puts the weights
exactly where iPC's inference left them; as `lr` -> 0 it is the time average of IL's update.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from pcsim.algorithms.descent import climbed, energies, feedforward_energy, refuse_climb
from pcsim.algorithms.il import count
from pcsim.algorithms.problem import Problem, refuse_changed
from pcsim.algorithms.relaxation import Relaxation, check_finite
from pcsim.graph.argument import takes_graph
from pcsim.graph.ir import Graph
from pcsim.ops.local import records_autograd


@takes_graph
@records_autograd
def ipc(graph: Graph, inputs, target, loss="mse", *, gamma: float = 0.1, steps: int = 20, lr: float = 1e-3,
        params=None, progress: bool = False) -> dict[str, torch.Tensor]:
    """iPC's mean gradient estimate over `steps` inference steps, each moving values and weights.

    The module's parameters are not written: the weights move in copies (pass `params=` to start
    from others). `lr`: the weights' step per inference step on F, whose loss term is summed over the
    batch as every rule's is (so a large batch wants a small `lr`).
    """
    if count(steps, "steps") < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < lr < math.inf:  # inf: NaN weights after one step, reported as a divergence 'at gamma'
        raise ValueError(f"lr must be > 0 and finite, got {lr}")
    if params is None:
        refuse_changed(graph)
    theta = {n: p.detach() for n, p in (graph.params if params is None else params).items()}

    def relaxation() -> Relaxation:  # the weights move in copies: the relaxation's ops read the problem's tensors
        return Relaxation(Problem.build(graph, inputs, target, loss, {n: p.clone() for n, p in theta.items()}), gamma)

    def replay():  # built only if a replay is asked for: on failure
        yield from _inference(relaxation(), lr, steps)

    relax = relaxation()
    start = feedforward_energy(relax)
    for _ in tqdm(_inference(relax, lr, steps), total=steps, desc="iPC inference", disable=not progress, leave=False):
        pass
    weights = relax.problem.params
    update = {n: (theta[n] - weights[n]) / (lr * steps) for n in graph.params}
    blame = lambda: _weights_at_fault(relaxation(), start, lr, steps)  # noqa: E731
    update = check_finite(update, "iPC", relax.problem, gamma, replay(), blame)
    refuse_climb("iPC", relax, start, energies(relax, relax.errors()), steps, blame=blame)  # values, weights descend F
    return update


def _weights_at_fault(relax: Relaxation, start: float, lr: float, steps: int) -> tuple[str, str] | None:
    """Where iPC diverged: if its values alone (IL's inference, the weights held) descend F at the same gamma, the
    weights' rate is at fault, and a smaller gamma would never cure it (the message said to try one)."""
    relax.run(steps)
    alone = sum(energies(relax, relax.errors()).values())
    if not math.isfinite(alone) or climbed(relax, start, alone):
        return None  # the values climb on their own: gamma is at fault
    return (f"lr = {lr} (gamma = {relax.gamma})",
            f"With the weights held, the values alone descend it at gamma = {relax.gamma} (to {alone:.4g} after "
            f"{steps} steps): the weights' steps of lr times dF/dtheta overshoot (F sums the loss over the batch, so "
            "a larger batch wants a smaller lr): try a smaller lr")


def _inference(relax: Relaxation, lr: float, steps: int) -> Iterator[dict[str, torch.Tensor]]:
    """iPC's steps, yielding the errors each one starts from."""
    weights = relax.problem.params
    for _ in range(steps):
        eps = relax.errors()
        yield eps
        hebbian = relax.hebbian(eps)  # at the state the errors were taken at, before anything moves
        relax.advance(eps, relax.feedback(eps))
        for terms in hebbian.values():  # (d mu / d theta)^T eps = -dF/dtheta: descend F
            for p, h in terms.items():
                weights[p].add_(h, alpha=lr)
        relax.parameters_moved()
