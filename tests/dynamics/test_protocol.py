"""Presentation protocol and plasticity gates: onset, losses, per-population time constants."""

import warnings

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

import pcsim
from pcsim.check import autograd_gradients
from pcsim.numerics import relative_difference
from tests.equivalence.archs import ARCHS


def _mlp(loss="mse"):
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, loss)
    return module, pcsim.trace(module, *inputs), inputs, target


def test_errors_stay_zero_until_the_target_is_shown():
    _, graph, inputs, target = _mlp()
    tr = pcsim.simulate(graph, inputs, target, t_end=3.0, t_on=1.0, tau_x=0.5, method="rk4", dt=0.05)
    before, after = tr.t < 1.0 - 1e-9, tr.t > 1.0 + 1e-9
    for name in graph.latent:
        assert np.abs(tr.errors[name][before]).max() == 0.0, name
        assert np.abs(tr.errors[name][after]).max() > 1e-6, name


def test_cross_entropy_target_is_injected_as_an_output_error():
    module, graph, inputs, target = _mlp("ce")
    dt = 0.5
    tr = pcsim.simulate(graph, inputs, target, loss="ce", t_end=(graph.depth + 2) * dt, tau_x=dt, method="euler",
                        dt=dt, plasticity="zil", record=[])
    reference = autograd_gradients(module, inputs, target, "ce")
    assert max(relative_difference(torch.as_tensor(tr.updates[n]), r) for n, r in reference.items()) < 1e-12


def test_zil_windows_after_a_late_onset_still_give_bp():
    module, graph, inputs, target = _mlp()
    dt, t_on = 0.25, 1.0
    tr = pcsim.simulate(graph, inputs, target, t_end=t_on + (graph.depth + 2) * dt, t_on=t_on, tau_x=dt,
                        method="euler", dt=dt, plasticity="zil", record=[])
    reference = autograd_gradients(module, inputs, target)
    assert max(relative_difference(torch.as_tensor(tr.updates[n]), r) for n, r in reference.items()) < 1e-12


def test_user_gate_function_equals_the_built_in_windows():
    _, graph, inputs, target = _mlp()
    dt = 0.25
    levels = graph.min_distance

    def gate(vertex, t):  # open during the Euler step that starts at level * dt
        return abs(t - levels[vertex] * dt) < dt / 2

    kw = dict(t_end=(graph.depth + 2) * dt, tau_x=dt, method="euler", dt=dt, record=[])
    built_in = pcsim.simulate(graph, inputs, target, plasticity="zil", **kw)
    user = pcsim.simulate(graph, inputs, target, plasticity=gate, **kw)
    for name in built_in.updates:
        np.testing.assert_array_equal(user.updates[name], built_in.updates[name])


def test_after_gate_integrates_the_hebbian_term_from_its_start():
    """Closed form for Euler: the accumulated update is dt / tau_w times the sum of Hebbian terms."""
    _, graph, inputs, target = _mlp()
    dt, tau = 0.1, 0.5
    always = pcsim.simulate(graph, inputs, target, t_end=1.0, tau_x=tau, method="euler", dt=dt,
                            plasticity="always", record=[])
    late = pcsim.simulate(graph, inputs, target, t_end=1.0, tau_x=tau, method="euler", dt=dt,
                          plasticity=pcsim.after(0.5), record=[])
    early = pcsim.simulate(graph, inputs, target, t_end=0.5, tau_x=tau, method="euler", dt=dt,
                           plasticity="always", record=[])
    for name in always.updates:  # [0, 1) = [0, 0.5) + [0.5, 1)
        np.testing.assert_allclose(always.updates[name], early.updates[name] + late.updates[name],
                                   rtol=1e-10, atol=1e-14)


def test_per_population_time_constants():
    _, graph, inputs, target = _mlp()
    slow = {n: 0.5 for n in graph.latent}
    first = graph.latent[0]
    slow[first] = 50.0  # a population 100x slower barely moves
    fast = pcsim.simulate(graph, inputs, target, t_end=1.0, tau_x=0.5, method="rk4", dt=0.05)
    mixed = pcsim.simulate(graph, inputs, target, t_end=1.0, tau_x=slow, method="rk4", dt=0.05)
    move_fast = np.abs(fast.values[first][-1] - fast.values[first][0]).max()
    move_slow = np.abs(mixed.values[first][-1] - mixed.values[first][0]).max()
    assert 0 < move_slow < move_fast / 20


def test_zil_windows_split_an_adaptive_solve():
    """The windows' edges and holds are the adaptive solvers' breakpoints (an output, which never holds, adds
    none); two scipy methods then agree on the gated updates."""
    _, graph, inputs, target = _mlp()
    gate = pcsim.dynamics.Windows(pcsim.Schedule.of(graph), t_on=0.0, width=0.1)
    assert all(isinstance(b, float) for b in gate.breakpoints(graph.min_distance))
    kw = dict(t_end=(graph.depth + 2) * 0.1, tau_x=0.1, plasticity="zil", record=[], rtol=1e-10, atol=1e-12, dt=0.1)
    rk45, dop853 = (pcsim.simulate(graph, inputs, target, method=m, **kw) for m in ("RK45", "DOP853"))
    assert any(np.abs(u).max() > 1e-3 for u in rk45.updates.values())
    for p, u in rk45.updates.items():
        np.testing.assert_allclose(u, dop853.updates[p], rtol=1e-6, atol=1e-9)


def _gated_linear_updates(model, s, y, tau, t_open, t_end):
    """Closed form of the accumulated updates of Linear -> Linear (instantaneous errors, output clamped from t = 0,
    the gate open on [t_open, t_end)): the hidden value follows the matrix exponential of its linear ODE and the
    Hebbian terms are integrated by quadrature, in autograd's sign (tau_w = tau_x)."""
    (w1, b1), (w2, b2) = ((m.weight.detach().numpy(), m.bias.detach().numpy()) for m in model)
    out = {"0.weight": 0.0, "0.bias": 0.0, "1.weight": 0.0, "1.bias": 0.0}
    for si, yi in zip(s.numpy(), y.numpy(), strict=True):
        mu = w1 @ si + b1
        a = (-np.eye(len(mu)) - w2.T @ w2) / tau
        star = np.linalg.solve(a, -(mu + w2.T @ (yi - b2)) / tau)

        def hebb(t, si=si, yi=yi, mu=mu, a=a, star=star):
            h = star + scipy.linalg.expm(a * t) @ (mu - star)
            eh, eo = h - mu, yi - w2 @ h - b2
            return np.concatenate([np.outer(eh, si).ravel(), eh, np.outer(eo, h).ravel(), eo])

        total = scipy.integrate.quad_vec(hebb, t_open, t_end, epsabs=1e-14, epsrel=1e-13)[0] / -tau
        for name, part in zip(out, np.split(total, np.cumsum([w1.size, b1.size, w2.size])), strict=True):
            out[name] = out[name] + part.reshape(dict(model.named_parameters())[name].shape)
    return out


@pytest.mark.parametrize("solver", [pcsim.Scipy("RK45", rtol=1e-10, atol=1e-12), pcsim.Tsit5(rtol=1e-10, atol=1e-12)],
                         ids=["scipy", "torch"])
def test_an_adaptive_solve_reads_a_gate_function_at_each_time(solver):
    """A gate function does not say when it switches: an adaptive solve must read it at each stage's time. It read it
    once per piece between known switches (here the whole run, read at its middle, t = 1.5), so the gate opening at
    1.3 counted as open from t = 0 and the updates were 87% off, silently."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    s, y = torch.randn(2, 3), torch.randn(2, 2)
    graph = pcsim.trace(model, s)
    expected = _gated_linear_updates(model, s, y, 0.5, 1.3, 3.0)
    tr = pcsim.simulate(graph, (s,), y, solver=solver, t_end=3.0, tau_x=0.5, plasticity=lambda v, t: t >= 1.3,
                        record=[])
    for name, want in expected.items():
        np.testing.assert_allclose(tr.updates[name], want, rtol=1e3 * solver.rtol, atol=1e3 * solver.atol)


def test_a_gate_function_that_cannot_gate_is_refused_naming_it():
    """A gate function of the wrong arity failed inside the field with Python's bare 'takes 1 positional argument',
    and one returning None with float()'s TypeError; a NaN or negative gate ran silently."""
    _, graph, inputs, target = _mlp()
    kw = dict(t_end=0.5, tau_x=0.5, method="euler", dt=0.1, record=[])
    with pytest.raises(TypeError, match=r"function \(vertex, t\).*test_protocol.py:\d+"):
        pcsim.simulate(graph, inputs, target, plasticity=lambda vertex: True, **kw)
    for bad, shown in ((None, "None"), (float("nan"), "nan"), (-1.0, "-1.0")):
        with pytest.raises(ValueError, match=rf"test_protocol.py:\d+\) returned {shown} for vertex '[\w.]+' at t = 0"):
            pcsim.simulate(graph, inputs, target, plasticity=lambda vertex, t, bad=bad: bad, **kw)


@pytest.mark.parametrize("leaky", [False, True])
def test_a_run_ending_before_the_last_zil_window_says_its_updates_are_partial(leaky):
    """The first layer (level L) updates at step L (leaky errors at tau_e = dt: 2L + 1): its window closes one
    step later. A run ending a step earlier integrated none of it (autograd's gradient, not zero, is the oracle)
    and warns naming the layer and the t_end needed; one ending there equals autograd, quietly."""
    module, graph, inputs, target = _mlp()
    first = graph.latent[0]
    depth = graph.min_distance[first]
    close = ((2 * depth + 2) if leaky else (depth + 1)) * 0.1
    ref = autograd_gradients(module, inputs, target)
    options = dict(backend="torch", dt=0.1, tau_x=0.1, tau_e=0.1 if leaky else 0.0, plasticity="zil", record=[])
    with pytest.warns(UserWarning, match=rf"'{first}', at t = {close:g}\).*partial.*t_end >= {close:g}"):
        early = pcsim.simulate(graph, inputs, target, t_end=close - 0.1, **options)
    for p in graph[first].params:
        assert not early.updates[p].any() and ref[p].abs().max() > 0, p
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        done = pcsim.simulate(graph, inputs, target, t_end=close, **options)
    worst = max(relative_difference(torch.as_tensor(done.updates[n]), r) for n, r in ref.items())
    assert worst <= 10 * pcsim.tolerance(torch.float64)
