"""Z-IL's discretisation (Euler, dt = tau_x, the 'zil' gates) equals autograd on every graph, for any number
of steps: the populations hold once their windows close, so nothing above the error wave blows up.

Oracle: torch autograd on the module (pcsim.check, with its rounding floor for exactly-zero gradients).
"""

import pytest
import torch

import pcsim
from pcsim.check import autograd_gradients
from pcsim.numerics import relative_difference
from pcsim.zoo import SMALL_DIMS, load_model_file, zoo_names
from tests.equivalence.archs import ARCHS

TOL = pcsim.tolerance(torch.float64)


def _check(module, inputs, target, loss, **options):
    rep = pcsim.check(module, inputs, target, rule="zil-euler", loss=loss, dtype=torch.float64, **options)
    assert rep.passed and rep.max_rel_diff <= TOL, rep.table()


CE_ARCHS = ["mlp_relu_bias", "cnn_pools", "gru", "attention", "embedding_mlp", "multi_ops"]  # softmax outputs


@pytest.mark.parametrize("arch,loss", [(a, "mse") for a in ARCHS] + [(a, "ce") for a in CE_ARCHS])
def test_200_euler_steps_equal_autograd_on_every_architecture(arch, loss):
    _check(*ARCHS[arch](torch.float64, loss), loss)


@pytest.mark.parametrize("name", zoo_names())
def test_200_euler_steps_equal_autograd_on_every_zoo_model(name):
    spec = load_model_file(name)
    module, inputs, target = spec.build_model(seed=0, **SMALL_DIMS.get(name, {}))
    _check(module, inputs, target, spec.loss)


@pytest.mark.parametrize("arch", ["multi_ops", "attention", "lstm_manual", "resnet_conv_block", "gru"])
def test_the_field_backends_and_leaky_errors_are_exact_too(arch):
    """scipy's fixed-step Euler evaluates the vector field (not IL's step); leaky errors at tau_e = dt follow
    the 2d + 1 schedule."""
    settings = [dict(backend="scipy", leaky=False), dict(backend="torch", leaky=True),
                dict(backend="scipy", leaky=True)]
    reports = pcsim.check_rules(*ARCHS[arch](torch.float64, "mse"), [("zil-euler", s) for s in settings], loss="mse")
    for report, options in zip(reports, settings, strict=True):
        assert report.passed and report.max_rel_diff <= TOL, f"{options}\n{report.table()}"


def _updates(arch, gate, steps=200):
    module, inputs, target = ARCHS[arch](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs).level()
    tr = pcsim.simulate(graph, inputs, target, solver=pcsim.Euler(1.0), tau_x=1.0, t_end=float(steps),
                        plasticity=gate(graph), record=[])
    ref = autograd_gradients(module, inputs, target)
    return max(relative_difference(torch.as_tensor(tr.updates[n]), r) for n, r in ref.items())


class NeverHolds(pcsim.dynamics.Windows):
    def holds_from(self, vertex):
        return None


class HoldsAtItsWindow(pcsim.dynamics.Windows):
    """Holds one step early: from the window's opening, so the update's own step does not move the value."""

    def holds_from(self, vertex):
        start = super().holds_from(vertex)
        return None if start is None else start - self.width


def _windows(cls):
    return lambda graph: cls(pcsim.Schedule.of(graph), t_on=0.0, width=1.0)


def test_without_holding_the_deep_graph_blows_up():
    """The mutation: the same windows without the hold overflow above the wave (exp and sqrt of huge values)."""
    assert _updates("multi_ops", _windows(pcsim.dynamics.Windows)) <= TOL
    with pytest.raises(pcsim.SimulationError, match="blew up"):
        _updates("multi_ops", _windows(NeverHolds))


def test_holding_one_step_early_is_not_exact():
    """The hold time is tight: a population held from its own window's opening changes the updates."""
    assert _updates("mlp_tanh_bias", _windows(HoldsAtItsWindow), steps=20) > 1e-3


def test_the_guard_still_catches_a_real_blow_up():
    """IL at gamma = dt / tau_x = 10 is unstable, and the hold is only Z-IL's: this run still stops, naming it."""
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    with pytest.raises(pcsim.SimulationError, match=r"blew up at t = .* population '"):
        pcsim.simulate(graph, inputs, target, solver=pcsim.Euler(10.0), tau_x=1.0, t_end=4000.0, record=[])


def test_too_few_steps_are_refused():
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    with pytest.raises(ValueError, match="zil-euler needs at least"):
        pcsim.check(module, inputs, target, rule="zil-euler", steps=2)
