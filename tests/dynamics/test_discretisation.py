"""Explicit Euler of the continuous system is IL, and with dt = tau_x and Z-IL gates it is Z-IL.

Oracles: pcsim.il's errors step by step, pcsim.zil, and torch autograd on the module.
"""

import warnings

import numpy as np
import pytest
import torch

import pcsim
from pcsim.algorithms.il import il_path
from pcsim.algorithms.schedule import Schedule
from pcsim.check import autograd_gradients
from pcsim.numerics import relative_difference, tolerance
from tests.equivalence.archs import ARCHS

TOL = tolerance(torch.float64)


@pytest.mark.parametrize("gamma", [0.1, 0.5])
def test_euler_with_dt_over_tau_gamma_is_il_step_by_step(gamma):
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    tau, steps = 0.3, 12
    tr = pcsim.simulate(graph, inputs, target, t_end=steps * gamma * tau, tau_x=tau, method="euler",
                        dt=gamma * tau)
    path = il_path(graph, inputs, target, gamma=gamma, steps=steps)
    assert len(tr.t) == steps + 1
    for k, eps in enumerate(path):
        for name, e in eps.items():
            np.testing.assert_allclose(tr.errors[name][k], e.numpy(), rtol=TOL, atol=TOL * 10, err_msg=name)


@pytest.mark.parametrize("tau_e", [0.0, 0.25], ids=["instant", "leaky"])
@pytest.mark.parametrize("arch", ["mlp_sigmoid_bias", "residual_block", "rnn_manual"])
def test_euler_at_dt_tau_with_zil_gates_is_zil(arch, tau_e):
    """Accumulated plasticity = pcsim.zil = autograd, with leaky errors under the 2d + 1 mapping."""
    module, inputs, target = ARCHS[arch](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs).level()
    dt = 0.25
    plan = pcsim.discretise(tau_x=dt, tau_e=tau_e, dt=dt, plasticity="zil")
    assert plan.algorithm == "zil" and plan.exact
    t_end = (plan.update_step(graph.depth) + 1) * dt
    tr = pcsim.simulate(graph, inputs, target, t_end=t_end, tau_x=dt, tau_e=tau_e, method="euler", dt=dt,
                        plasticity="zil", record=[])
    reference = autograd_gradients(module, inputs, target)
    zil = pcsim.zil(graph, inputs, target)
    for name, ref in reference.items():
        got = torch.as_tensor(tr.updates[name])
        assert relative_difference(got, ref) <= TOL, name
        assert relative_difference(got, zil[name]) <= TOL, name


@pytest.mark.parametrize("backend", ["torch", "scipy"])
def test_a_loss_object_runs_and_is_recorded_by_name(backend):
    """simulate takes a pcsim Loss, or a tuple of them, as every rule does: the run stopped at its end with
    "TypeError: 'CrossEntropy' object is not iterable" while writing the loss into its record."""
    from pcsim.algorithms.losses import MSE, CrossEntropy

    torch.manual_seed(3)
    module = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 0, 2])
    graph = pcsim.trace(module, x)
    ce = torch.nn.functional.cross_entropy(module(x), y, reduction="sum")
    want = dict(zip([n for n, _ in module.named_parameters()], torch.autograd.grad(ce, list(module.parameters())),
                    strict=True))
    for loss, recorded in ((CrossEntropy(), "ce"), ((CrossEntropy(),), ["ce"])):
        tr = pcsim.simulate(graph, (x,), y, loss=loss, backend=backend, t_end=4.0, tau_x=1.0, dt=1.0,
                            method="euler", plasticity="zil", record=[])
        assert tr.meta["loss"] == recorded
        assert max(relative_difference(torch.as_tensor(tr.updates[n]), w) for n, w in want.items()) <= TOL
    with pytest.raises(pcsim.InputError, match="has shape"):  # MSE() on class indices: refused by the target check
        pcsim.simulate(graph, (x,), y.double(), loss=MSE(), backend=backend, t_end=4.0, tau_x=1.0, dt=1.0)


class _Heads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 2)

    def forward(self, x):
        return {"logits": self.a(torch.tanh(x)), "reg": self.b(torch.tanh(x))}


def test_a_dict_of_losses_is_recorded_in_the_outputs_order():
    """The record took `list(loss)`: a dict's keys, which get_loss refused as unknown losses after the whole run."""
    torch.manual_seed(4)
    module = _Heads().double()
    x, yl, yr = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 0, 2]), torch.randn(6, 2)
    out = module(x)
    total = torch.nn.functional.cross_entropy(out["logits"], yl, reduction="sum") + 0.5 * ((out["reg"] - yr) ** 2).sum()
    want = dict(zip([n for n, _ in module.named_parameters()], torch.autograd.grad(total, list(module.parameters())),
                    strict=True))
    tr = pcsim.simulate(pcsim.trace(module, x), (x,), {"reg": yr, "logits": yl}, loss={"reg": "mse", "logits": "ce"},
                        backend="torch", t_end=4.0, tau_x=1.0, dt=1.0, method="euler", plasticity="zil", record=[])
    assert tr.meta["loss"] == ["ce", "mse"]
    assert max(relative_difference(torch.as_tensor(tr.updates[n]), w) for n, w in want.items()) <= TOL


def test_leaky_errors_with_the_instant_schedule_are_not_exact():
    """The shift matters: gates at step d (not 2d + 1) miss the leaky errors."""
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    dt = 0.25
    gate = pcsim.dynamics.Windows(Schedule.of(graph), t_on=0.0, width=dt)  # the instantaneous-error schedule
    tr = pcsim.simulate(graph, inputs, target, t_end=12 * dt, tau_x=dt, tau_e=dt, method="euler", dt=dt,
                        plasticity=gate, record=[])
    reference = autograd_gradients(module, inputs, target)
    worst = max(relative_difference(torch.as_tensor(tr.updates[n]), r) for n, r in reference.items())
    assert worst > 1e-3


def test_discretise_names_what_each_setting_becomes():
    assert pcsim.discretise(tau_x=1.0, dt=0.1, plasticity="off").algorithm == "il"
    assert pcsim.discretise(tau_x=1.0, dt=0.1).algorithm == "zil-scaled"
    assert pcsim.discretise(tau_x=1.0, dt=1.0).update_step(3) == 3
    assert pcsim.discretise(tau_x=1.0, dt=1.0, tau_e=1.0).update_step(3) == 7
    none = pcsim.discretise(tau_x=1.0, dt=1.0, tau_e=0.3)
    assert none.algorithm == "none" and not none.exact
    with pytest.raises(ValueError, match="tau_x"):
        pcsim.discretise(tau_x=0.0, dt=1.0)


@pytest.mark.parametrize("typo", ["ZIL", "z-il", "Z-IL", "on"])
def test_discretise_refuses_a_gate_simulate_does_not_know(typo):
    """A misspelt 'zil' was taken as a gate other than Z-IL's: dt = tau_x was mapped to IL, not exact, with no
    word (simulate itself refuses the name). The closed form: dt = tau_x under Z-IL's gates is Z-IL, exact."""
    with pytest.raises(ValueError, match=f"plasticity must be one of .*got '{typo}'"):
        pcsim.discretise(tau_x=1.0, dt=1.0, plasticity=typo)
    assert pcsim.discretise(tau_x=1.0, dt=1.0, plasticity="zil").exact
    for gate in ("always", pcsim.after(0.5), lambda vertex, t: True):  # simulate's other gates: IL
        assert pcsim.discretise(tau_x=1.0, dt=0.1, plasticity=gate).algorithm == "il"


@pytest.mark.parametrize("dt,tau_x,tau_w", [(0.5, 1.0, None), (0.5, 1.0, 0.5), (1.0, 1.0, 2.0), (0.25, 0.5, 0.1)])
def test_discretise_scales_each_level_as_the_euler_run_does(dt, tau_x, tau_w):
    """Off gamma = 1, or with tau_w != dt, Z-IL's gates give BP's gradient scaled per level: (dt / tau_w) gamma^d.
    discretise said gamma^d, which is the run's only at tau_w = dt, not at simulate's default tau_w = tau_x (there
    the run's level-4 update was 0.03125 of BP's, gamma^4 = 0.0625); and 'equals BP' at gamma = 1 whatever tau_w."""
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    mapping = pcsim.discretise(tau_x=tau_x, dt=dt, tau_w=tau_w)
    tr = pcsim.simulate(graph, inputs, target, solver=pcsim.Euler(dt), tau_x=tau_x, tau_w=tau_w,
                        t_end=dt * (graph.depth + 2), plasticity="zil", record=[])
    reference = autograd_gradients(module, inputs, target)
    users = {p: v for v in graph.latent for p in graph[v].params}
    for p, ref in reference.items():
        expected = mapping.scale(graph.min_distance[users[p]]) * ref
        assert relative_difference(torch.as_tensor(tr.updates[p]), expected) <= 10 * pcsim.tolerance(torch.float64), p
    assert mapping.exact == (dt == tau_x == (tau_w or tau_x))


def _mixed(graph, value, other):
    return {n: value if i % 2 else other for i, n in enumerate(graph.latent)}


@pytest.mark.parametrize("case", ["tau_e mixed", "tau_e spread", "tau_x spread", "dt = 2 tau_e"])
def test_zil_windows_on_settings_with_no_exact_counterpart_say_so(case):
    """Z-IL's windows follow one schedule for the whole graph: leaky errors in some layers only (1000x off BP on
    this MLP), per-population time constants, or dt != tau_e gave updates far from BP's without a word."""
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    settings = {"tau_e mixed": dict(tau_e=_mixed(graph, 1.0, 0.0)), "tau_e spread": dict(tau_e=_mixed(graph, 1.0, 2.0)),
                "tau_x spread": dict(tau_x=_mixed(graph, 1.0, 2.0)), "dt = 2 tau_e": dict(tau_e=0.5)}[case]
    options = {"tau_x": 1.0, **settings}
    with pytest.warns(UserWarning, match=r"plasticity='zil' at dt = 1: .*(differs between populations|no exact)"):
        tr = pcsim.simulate(graph, inputs, target, backend="torch", dt=1.0, t_end=40.0, plasticity="zil", record=[],
                            **options)
    ref = autograd_gradients(module, inputs, target)
    assert max(relative_difference(torch.as_tensor(tr.updates[n]), r) for n, r in ref.items()) > 0.1


@pytest.mark.parametrize("tau_e", [0.0, 1.0, {"net.0": 1.0, "net.1": 1.0, "net.2": 1.0, "net.3": 1.0, "net.4": 1.0}])
def test_zil_windows_on_exact_settings_are_quiet(tau_e):
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tr = pcsim.simulate(graph, inputs, target, backend="torch", dt=1.0, tau_x=1.0, tau_e=tau_e, t_end=40.0,
                            plasticity="zil", record=[])
    ref = autograd_gradients(module, inputs, target)
    assert max(relative_difference(torch.as_tensor(tr.updates[n]), r) for n, r in ref.items()) <= 10 * TOL


@pytest.mark.parametrize("solver", [pcsim.RK4(1.0), pcsim.Scipy("RK45")], ids=lambda s: s.method)
def test_zil_windows_under_another_solver_than_euler_say_so(solver):
    """Z-IL's gates under RK4 or an adaptive solver integrate the ODE itself, whose updates are not BP's (1.88x off on
    RK45, 0.84x on RK4, as measured when this was silent). The oracle: autograd on the module."""
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    with pytest.warns(UserWarning, match=rf"plasticity='zil' with .*\({solver.method}\): .*not BP's gradients"):
        tr = pcsim.simulate(graph, inputs, target, solver=solver, tau_x=1.0, t_end=40.0, plasticity="zil", record=[])
    ref = autograd_gradients(module, inputs, target)
    assert max(relative_difference(torch.as_tensor(tr.updates[n]), r) for n, r in ref.items()) > 0.1
