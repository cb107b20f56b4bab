"""The error wave travels down the hierarchy; bad settings and blow-ups give clear errors."""

import numpy as np
import pytest
import torch

import pcsim
from tests.dynamics.models import deep_tanh_problem


def test_error_wave_reaches_deeper_levels_later():
    model, inputs, target = deep_tanh_problem(depth=5)
    graph = pcsim.trace(model, *inputs)
    times = np.linspace(0, 2.0, 401)
    tr = pcsim.simulate(graph, inputs, target, t_end=2.0, tau_x=0.2, method="RK45", rtol=1e-10, atol=1e-12,
                        record={"times": times})
    layers = [v.name for v in graph.vertices if v.op == "linear"]  # 5 levels of weights
    assert len(layers) == 5
    onset = []
    for name in layers:
        size = np.abs(tr.errors[name]).reshape(len(tr.t), -1).max(axis=1)
        onset.append(tr.t[np.argmax(size > 1e-3)])
    order = sorted(layers, key=graph.min_distance.get)  # output first
    crossing = [onset[layers.index(n)] for n in order]
    assert all(a < b for a, b in zip(crossing, crossing[1:], strict=False)), dict(zip(order, crossing, strict=True))


@pytest.fixture
def mlp():
    model, inputs, target = deep_tanh_problem(depth=3)
    return pcsim.trace(model, *inputs), inputs, target


@pytest.mark.parametrize("kw,match", [
    ({"tau_x": 0.0}, "tau_x must be finite and > 0"),
    ({"tau_x": -1.0}, "tau_x must be finite and > 0"),
    ({"tau_e": -0.1}, "tau_e must be finite and >= 0"),
    ({"tau_w": 0.0}, "tau_w must be > 0"),
    ({"t_on": 2.0, "t_end": 1.0}, "t_on < t_end"),
    ({"t_end": 0.0}, "t_on < t_end"),
    ({"t_end": float("inf"), "method": "euler", "dt": 0.1}, "t_end < inf"),  # was numpy's OverflowError
    ({"t_end": float("nan")}, "t_on < t_end"),
    ({"method": "leapfrog"}, "unknown method 'leapfrog'"),
    ({"method": "euler"}, "fixed step: pass dt="),
    ({"dt": -0.1, "method": "euler"}, "dt must be > 0"),
    ({"backend": "nest"}, "unknown backend 'nest'"),
    ({"plasticity": "sometimes"}, "plasticity must be"),
    ({"record": ["nope"]}, "not in the graph"),
    ({"tau_x": {"nope": 1.0}}, "unknown \\['nope'\\]"),
])
def test_bad_settings(mlp, kw, match):
    graph, inputs, target = mlp
    args = {"t_end": 1.0, **kw}
    with pytest.raises(ValueError, match=match):
        pcsim.simulate(graph, inputs, target, **args)


@pytest.mark.parametrize("method", [pcsim.Tsit5(), pcsim.Euler(0.1), pcsim.Tsit5])
def test_a_solver_object_given_as_method_is_sent_to_solver(mlp, method):
    """It was read as a name: 'unknown method 'Tsit5(rtol=1e-06, ...)' for backend 'scipy'' (the default)."""
    graph, inputs, target = mlp
    with pytest.raises(TypeError, match=r"method= takes a method's name .*goes to solver="):
        pcsim.simulate(graph, inputs, target, t_end=1.0, method=method)


@pytest.mark.parametrize("solver,match", [("RK45", "got 'RK45'"), (pcsim.Euler, "the class Euler: make one")])
def test_a_solver_that_is_no_solver_object_is_refused(mlp, solver, match):
    """A name or a class passed as solver= used to fail inside simulate with AttributeError or TypeError."""
    graph, inputs, target = mlp
    with pytest.raises(TypeError, match=f"solver= takes a solver object .*{match}"):
        pcsim.simulate(graph, inputs, target, solver=solver, t_end=1.0)


def test_mismatched_shapes(mlp):
    graph, inputs, target = mlp
    with pytest.raises(pcsim.InputError, match="target for output"):
        pcsim.simulate(graph, inputs, target[:, :1], t_end=1.0)
    with pytest.raises(pcsim.InputError, match="input 'x' has shape"):
        pcsim.simulate(graph, (torch.randn(5, 3),), target, t_end=1.0)


def test_blow_up_names_the_time_and_population(mlp):
    graph, inputs, target = mlp
    with pytest.raises(pcsim.SimulationError, match=r"blew up at t = [0-9.e+]+: the value population '\w+'"):
        pcsim.simulate(graph, inputs, target * 100, t_end=5000.0, tau_x=1.0, method="euler", dt=5.0, record=[])


def test_trajectory_round_trips_through_npz(mlp, tmp_path):
    graph, inputs, target = mlp
    tr = pcsim.simulate(graph, inputs, target, t_end=1.0, tau_x=0.5, method="rk4", dt=0.1, plasticity="always")
    path = tr.to_npz(tmp_path / "run.npz")
    back = pcsim.Trajectory.from_npz(path)
    assert np.array_equal(back.t, tr.t) and back.meta == tr.meta
    for group in ("values", "errors", "energy", "updates"):
        a, b = getattr(tr, group), getattr(back, group)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), group
    # NumPy and torch scalars as settings (json.dumps refused them: a raw TypeError after the whole run)
    scalars = pcsim.simulate(graph, inputs, target, t_end=np.float32(1.0), tau_x=torch.tensor(0.5),
                             tau_e={n: np.float64(0.0) for n in graph.latent}, method="rk4", dt=0.1, record=[])
    back = pcsim.Trajectory.from_npz(scalars.to_npz(tmp_path / "scalars.npz"))
    assert back.meta["t_end"] == 1.0 and back.meta["tau_x"] == 0.5 and set(back.meta["tau_e"].values()) == {0.0}
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(pcsim.PcsimError, match="junk.npz"):
        pcsim.Trajectory.from_npz(tmp_path / "junk.npz")


def test_energy_falls_after_onset_with_a_clamped_target(mlp):
    graph, inputs, target = mlp
    tr = pcsim.simulate(graph, inputs, target, t_end=3.0, tau_x=0.5, method="RK45")
    total = tr.total_energy
    assert np.all(np.diff(total) <= 1e-10) and total[-1] < total[0]


def test_total_energy_is_refused_for_a_run_that_recorded_some_populations_only(mlp, tmp_path):
    """It summed the recorded populations' energies only: part of F, under F's name."""
    graph, inputs, target = mlp
    first = graph.latent[0]
    full = pcsim.simulate(graph, inputs, target, t_end=1.0, tau_x=0.5, method="euler", dt=0.1)
    part = pcsim.simulate(graph, inputs, target, t_end=1.0, tau_x=0.5, method="euler", dt=0.1,
                          record=pcsim.Record(populations=[first]))
    assert np.array_equal(part.energy[first], full.energy[first])
    for traj in (part, pcsim.Trajectory.from_npz(part.to_npz(tmp_path / "part.npz"))):
        with pytest.raises(ValueError, match=r"recorded some only \(\d+ left out"):
            traj.total_energy  # noqa: B018 - the property raises
    assert np.array_equal(full.total_energy, np.sum([full.energy[n] for n in graph.latent], axis=0))
