"""Euler on torch as IL's step (pcsim/backends/torch.py) is the vector field's Euler, step for step.

Oracles: `il_path` (IL's errors at every step), `pcsim.zil` and autograd on the module (Z-IL gates),
and the field's own Euler evaluation (`fast=False`, the equations of `field.py` written out) for
what IL has no counterpart of: target onset, open-ended plasticity, a shorter last step, energies.
"""

import numpy as np
import pytest
import torch

import pcsim
from pcsim.algorithms.il import il_path
from pcsim.algorithms.schedule import Schedule
from pcsim.check import autograd_gradients
from pcsim.dynamics.recording import SimulationError
from pcsim.numerics import relative_difference, tolerance
from tests.equivalence.archs import ARCHS

TOL = tolerance(torch.float64)


def _graph(arch="mlp_tanh_bias", level=False):
    module, inputs, target = ARCHS[arch](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    return module, (graph.level() if level else graph), inputs, target


def _both(graph, inputs, target, **kw):
    kw.setdefault("record", pcsim.Record(every_step=True))
    fast = pcsim.simulate(graph, inputs, target, backend="torch", **kw)
    field = pcsim.simulate(graph, inputs, target, backend="torch", fast=False, **kw)
    return fast, field


def _assert_same(a, b, tol=TOL):
    np.testing.assert_array_equal(a.t, b.t)
    for name in b.errors:
        scale = max(1.0, float(np.abs(b.values[name]).max()))
        np.testing.assert_allclose(a.errors[name], b.errors[name], rtol=tol, atol=tol * scale, err_msg=name)
        np.testing.assert_allclose(a.values[name], b.values[name], rtol=tol, atol=tol * scale, err_msg=name)
        np.testing.assert_allclose(a.energy[name], b.energy[name], rtol=tol, atol=tol, err_msg=name)
    for p in b.updates:
        assert relative_difference(torch.as_tensor(a.updates[p]), torch.as_tensor(b.updates[p])) <= tol, p


@pytest.mark.parametrize("arch", ["mlp_tanh_bias", "residual_block", "rnn_manual"])
def test_errors_at_every_step_are_il_path(arch):
    _, graph, inputs, target = _graph(arch)
    gamma, tau, steps = 0.2, 0.5, 15
    tr = pcsim.simulate(graph, inputs, target, backend="torch", t_end=steps * gamma * tau, tau_x=tau,
                        dt=gamma * tau)
    path = il_path(graph, inputs, target, gamma=gamma, steps=steps)
    assert len(tr.t) == steps + 1
    for k, eps in enumerate(path):
        for name, e in eps.items():
            np.testing.assert_allclose(tr.errors[name][k], e.numpy(), rtol=TOL, atol=TOL * 10, err_msg=(k, name))


@pytest.mark.parametrize("arch", ["mlp_sigmoid_bias", "residual_block", "rnn_manual"])
def test_zil_gates_at_dt_tau_give_backprop(arch):
    module, graph, inputs, target = _graph(arch, level=True)
    dt = 0.25
    plan = pcsim.discretise(tau_x=dt, dt=dt, plasticity="zil")
    t_end = (plan.update_step(graph.depth) + 1) * dt
    tr = pcsim.simulate(graph, inputs, target, backend="torch", t_end=t_end, tau_x=dt, dt=dt, plasticity="zil",
                        record=[])
    reference = autograd_gradients(module, inputs, target)
    for name, ref in reference.items():
        assert relative_difference(torch.as_tensor(tr.updates[name]), ref) <= TOL, name


def test_a_late_gate_fails_the_same_check():
    """The mutation: every update taken one step late is no longer backprop's."""
    module, graph, inputs, target = _graph("mlp_sigmoid_bias", level=True)
    dt = 0.25
    on_time = Schedule.of(graph)
    late = pcsim.dynamics.Windows(on_time.shifted(dict.fromkeys(on_time.levels, 1)), t_on=0.0, width=dt)
    tr = pcsim.simulate(graph, inputs, target, backend="torch", t_end=(graph.depth + 3) * dt, tau_x=dt, dt=dt,
                        plasticity=late, record=[])
    reference = autograd_gradients(module, inputs, target)
    assert max(relative_difference(torch.as_tensor(tr.updates[n]), r) for n, r in reference.items()) > 1e-3


@pytest.mark.parametrize("plasticity", ["off", "always"])
def test_onset_plasticity_and_a_short_last_step_match_the_field(plasticity):
    _, graph, inputs, target = _graph("residual_block")
    fast, field = _both(graph, inputs, target, t_end=2.05, tau_x=0.7, dt=0.1, t_on=0.5, plasticity=plasticity)
    assert fast.t[-1] == pytest.approx(2.05) and len(fast.t) == 22  # 20 whole steps and a shorter one
    _assert_same(fast, field)
    if plasticity == "always":
        assert any(np.abs(u).max() > 0 for u in fast.updates.values())


def test_recording_a_subset_at_chosen_times_matches_the_field():
    _, graph, inputs, target = _graph("mlp_tanh_bias")
    record = {"populations": [graph.outputs[0], graph.latent[0]], "times": [0.0, 0.3, 1.0]}
    fast, field = _both(graph, inputs, target, t_end=1.0, tau_x=0.5, dt=0.05, record=record)
    assert list(fast.values) == record["populations"] and len(fast.t) == 3
    _assert_same(fast, field)


def test_leaky_errors_and_per_population_time_constants_run_the_field():
    """Where Euler is not IL's step, the fast path steps aside: the field runs, bit for bit."""
    _, graph, inputs, target = _graph("mlp_tanh_bias")
    per_pop = {n: 0.5 + 0.1 * i for i, n in enumerate(graph.latent)}
    for kw in ({"tau_e": 0.2, "tau_x": 0.5}, {"tau_x": per_pop}):
        fast, field = _both(graph, inputs, target, t_end=0.5, dt=0.05, **kw)
        for name in field.errors:
            np.testing.assert_array_equal(fast.errors[name], field.errors[name])


def test_a_blow_up_is_caught_and_named():
    _, graph, inputs, target = _graph("mlp_tanh_bias")
    with pytest.raises(SimulationError, match=r"blew up at t = .*population '"):
        pcsim.simulate(graph, inputs, target * 1e300, backend="torch", t_end=50.0, tau_x=0.1, dt=0.5)


@pytest.mark.slow  # compiles IL's steady step once per network (seconds)
@pytest.mark.parametrize("arch", ["mlp_tanh_bias", "residual_block"])
def test_compiled_euler_is_the_eager_euler(arch, monkeypatch):
    """Euler(compile=True): the runs of plain steps between recorded steps and switches go through IL's
    compiled steady step; onset at 0.3 and a gate opening at 1.2 split them. The trajectory, energies and
    updates are the eager loop's to float64 rounding, and the compiled runs took the plain steps."""
    from pcsim.algorithms import il_compiled

    _, graph, inputs, target = _graph(arch)
    kw = dict(t_end=2.0, tau_x=0.5, t_on=0.3, plasticity=pcsim.after(1.2), record=pcsim.Record(snapshots=5))
    compiled_steps = []
    run = il_compiled.run
    monkeypatch.setattr(il_compiled, "run", lambda relax, n, *a: compiled_steps.append(n) or run(relax, n, *a))
    got = pcsim.simulate(graph, inputs, target, solver=pcsim.Euler(0.01, compile=True), **kw)
    ref = pcsim.simulate(graph, inputs, target, solver=pcsim.Euler(0.01), **kw)
    _assert_same(got, ref, tol=100 * TOL)
    assert any(np.abs(u).max() > 1e-3 for u in ref.updates.values())  # the gate did open
    # dt 0.01: onset at step 30, snapshots at 50 and 100, the gate from 120; each event's step runs eagerly,
    # so steps 31-49, 51-99 and 101-119 are compiled
    assert compiled_steps == [19, 49, 19]


def test_compile_on_a_field_run_says_it_is_eager():
    _, graph, inputs, target = _graph()
    with pytest.warns(RuntimeWarning, match="evaluates the vector field eagerly"):
        pcsim.simulate(graph, inputs, target, solver=pcsim.Euler(0.1, compile=True), t_end=0.5, tau_e=0.2)


def test_rk4_stays_fourth_order_across_the_target_onset():
    """A step that ends at the onset reads the free regime at its last stage, so the error to the closed form
    (the feed-forward state until t_on, then the matrix exponential of the clamped linear network) falls as
    dt^4, not dt."""
    import scipy.linalg

    from tests.dynamics.models import LinearChain, linear_system

    torch.manual_seed(0)
    model = LinearChain().double()
    s, y = torch.randn(1, 3, dtype=torch.float64), torch.randn(1, 2, dtype=torch.float64)
    graph = pcsim.trace(model, s)
    tau, t_on, t_end = 0.7, 0.3, 1.0
    A, b = (m.numpy() for m in linear_system(model, s[0], y[0], tau))
    z_star = np.linalg.solve(A, -b)
    x1, x2 = graph.latent[0], graph.latent[1]
    errors = []
    for dt in (0.1, 0.05):
        tr = pcsim.simulate(graph, (s,), y, solver=pcsim.RK4(dt), t_end=t_end, tau_x=tau, t_on=t_on,
                            record={"times": [0.0, t_end]})
        z0, z1 = (np.concatenate([tr.values[x1][k, 0], tr.values[x2][k, 0]]) for k in (0, 1))
        errors.append(np.abs(z1 - (z_star + scipy.linalg.expm(A * (t_end - t_on)) @ (z0 - z_star))).max())
    assert errors[0] / errors[1] > 2 ** 4 * 0.75, errors
