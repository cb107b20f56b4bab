"""The check every model gets on Brian2's numpy target, with its two oracles.

Z-IL's discretisation (explicit Euler at dt = tau_x, instantaneous errors, the 'zil' gates) runs once on
Brian2 and once on pcsim's own Euler path (the scipy backend, which evaluates the vector field): the
two agree at every step to rounding (1e-12), and Brian2's synaptic accumulators are autograd's
gradients on the module (1e-10).
"""

import numpy as np
import pytest
import torch

import pcsim
from pcsim.check import autograd_gradients
from pcsim.numerics import relative_difference, rounding_floor

PATH_TOL, GRAD_TOL = 1e-12, 1e-10  # the bars, in float64

# Brian2's equation parser uses pyparsing's old camelCase names
quiet_pyparsing = pytest.mark.filterwarnings("ignore:.*(parseString|parseAll|scanString|parse_all).*")


def path_distance(got, ref) -> float:
    """Largest difference over values, errors, energy and updates, relative to max(1, |reference|)."""
    assert np.array_equal(got.t, ref.t)
    worst = 0.0
    for group in ("values", "errors", "energy", "updates"):
        a, b = getattr(got, group), getattr(ref, group)
        assert set(a) == set(b), group
        for name in b:
            scale = max(1.0, float(np.abs(b[name]).max(initial=0.0)))
            worst = max(worst, float(np.abs(a[name] - b[name]).max(initial=0.0)) / scale)
    return worst


def assert_same_path(got, ref, tol: float = PATH_TOL) -> None:
    distance = path_distance(got, ref)
    assert distance <= tol, distance


def check_zil_on_brian2(module, inputs, target, loss: str, dt: float = 0.25) -> None:
    graph = pcsim.trace(module, *inputs).level()
    plan = pcsim.discretise(tau_x=dt, tau_e=0.0, dt=dt, plasticity="zil")
    assert plan.exact
    kw = dict(t_end=(plan.update_step(graph.depth) + 1) * dt, tau_x=dt, method="euler", dt=dt, plasticity="zil",
              loss=loss, record=pcsim.Record(every_step=True))
    got = pcsim.simulate(graph, inputs, target, backend="brian2", **kw)
    ref = pcsim.simulate(graph, inputs, target, backend="scipy", **kw)
    assert got.meta["backend"] == "brian2"
    assert_same_path(got, ref)
    grads = autograd_gradients(module, inputs, target, loss=loss)
    # (a gradient that is zero in exact arithmetic, a key bias under softmax, is measured against the floor)
    floor = rounding_floor(max(float(g.norm()) for g in grads.values()), torch.float64)
    for name, grad in grads.items():
        diff = relative_difference(torch.as_tensor(got.updates[name]), grad, scale=floor)
        assert diff <= GRAD_TOL, (name, diff)
