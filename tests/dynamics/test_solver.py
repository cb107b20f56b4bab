"""The solver protocol: solver objects, their registry, their order, and the default recording."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import pcsim
from pcsim.dynamics.recording import SNAPSHOTS
from pcsim.dynamics.solver import Registry
from tests.dynamics.models import deep_tanh_problem

T_END, TAU = 1.0, 0.5


@pytest.fixture(scope="module")
def net():
    model, inputs, target = deep_tanh_problem(depth=3)
    return pcsim.trace(model, *inputs), inputs, target


def _final(net, solver):
    graph, inputs, target = net
    tr = pcsim.simulate(graph, inputs, target, solver=solver, t_end=T_END, tau_x=TAU, tau_e=0.1,
                        record={"times": [T_END]})
    # values and errors: a shown output's value is its target, exact on every solver; its leaky error is the state
    return np.concatenate([r[n][-1].ravel() for r in (tr.values, tr.errors) for n in graph.latent])


@pytest.mark.parametrize("make", [pcsim.Euler, pcsim.RK4])
def test_each_fixed_step_solver_converges_at_its_stated_order(net, make):
    """log2 of the error ratio at dt and dt/2, against DOP853 at rtol 1e-12, is the solver's `order`
    (leaky errors: the field, not IL's step, so both solvers integrate the same ODE)."""
    exact = _final(net, pcsim.Scipy("DOP853", rtol=1e-12, atol=1e-14))
    # inside tau_e = 0.1, where each error is of its stated order (RK4 at dt = tau_e: 18-20x down on halving)
    dt = 0.01 if make is pcsim.Euler else 0.05
    coarse, fine = (np.abs(_final(net, make(h)) - exact).max() for h in (dt, dt / 2))
    assert math.log2(coarse / fine) == pytest.approx(make(dt).order, abs=0.3)


def test_a_solver_object_is_the_named_solver(net):
    graph, inputs, target = net
    kw = dict(t_end=T_END, tau_x=TAU, plasticity="always")
    named = pcsim.simulate(graph, inputs, target, backend="scipy", method="LSODA", rtol=1e-6, atol=1e-8, **kw)
    obj = pcsim.simulate(graph, inputs, target, solver=pcsim.Scipy("LSODA", rtol=1e-6, atol=1e-8), **kw)
    np.testing.assert_array_equal(named.t, obj.t)
    for p in named.updates:
        np.testing.assert_array_equal(named.updates[p], obj.updates[p])
    assert obj.meta["backend"] == "scipy" and obj.meta["method"] == "LSODA" and obj.meta["order"] is None
    with pytest.raises(ValueError, match="either solver= or"):
        pcsim.simulate(graph, inputs, target, solver=pcsim.Euler(0.1), method="rk4", **kw)


def test_solvers_validate_their_settings():
    with pytest.raises(ValueError, match="dt must be > 0"):
        pcsim.Euler(0.0)
    for make in (pcsim.Euler, pcsim.RK4, pcsim.Brian2):  # an infinite step took none and recorded t = [nan]
        with pytest.raises(ValueError, match="dt must be finite, got inf"):
            make(float("inf"))
    with pytest.raises(ValueError, match="unknown solve_ivp method 'RK99'"):
        pcsim.Scipy("RK99")
    with pytest.raises(ValueError, match="code-generation target 'gpu'"):
        pcsim.Brian2(0.1, target="gpu")
    assert (pcsim.Scipy("RK45").order, pcsim.Scipy("DOP853").order, pcsim.RK4(0.1).order) == (5, 8, 4)


def test_the_registry_lists_every_backend_and_refuses_duplicates():
    assert {"scipy", "torch", "brian2"} <= set(pcsim.SOLVERS.backends())
    assert pcsim.SOLVERS.default_method("scipy") == "RK45" and "LSODA" in pcsim.SOLVERS.methods("scipy")
    with pytest.raises(ValueError, match="unknown backend 'nest'"):
        pcsim.SOLVERS.make("nest")
    # methods() gave [] for an unknown backend, as for one without methods; default_method a bare StopIteration
    for ask in (pcsim.SOLVERS.methods, pcsim.SOLVERS.default_method, lambda b: pcsim.SOLVERS.make(b, "euler")):
        with pytest.raises(ValueError, match=r"unknown backend 'nest'; choose one of \['brian2', 'scipy', 'torch'\]"):
            ask("nest")
    registry = Registry()
    registry.register("mine", "euler", pcsim.Euler, default=True)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("mine", "euler", pcsim.Euler)
    assert registry.make("mine", dt=0.1) == pcsim.Euler(0.1)
    with pytest.raises(ValueError, match="'euler' of backend 'mine' takes no option rtol; its options: dt, fast"):
        registry.make("mine", dt=0.1, rtol=1e-3)
    with pytest.raises(ValueError, match="'rk4' of backend 'torch' takes no option compile"):
        pcsim.SOLVERS.make("torch", "rk4", dt=0.1, compile=True)
    assert pcsim.SOLVERS.make("torch", "tsit5", rtol=1e-3, atol=1e-3, compile=True) == pcsim.Tsit5(1e-3, 1e-3,
                                                                                                   compile=True)


@pytest.mark.parametrize("backend,method", [("torch", "euler"), ("scipy", "euler"), ("scipy", "RK45")])
def test_the_default_recording_is_a_few_snapshots_of_the_full_one(net, backend, method):
    """By default every population at SNAPSHOTS evenly spaced grid times, whatever the number of steps; each
    equals the every-step recording at that time (fixed steps) or the dense output there (adaptive)."""
    graph, inputs, target = net
    dt, steps = 0.01, 200
    kw = dict(backend=backend, method=method, dt=dt, t_end=steps * dt, tau_x=TAU)
    cheap = pcsim.simulate(graph, inputs, target, **kw)
    full = pcsim.simulate(graph, inputs, target, record=pcsim.Record(every_step=True), **kw)
    assert len(cheap.t) == SNAPSHOTS and cheap.t[0] == 0 and cheap.t[-1] == pytest.approx(steps * dt)
    assert len(full.t) > steps if method == "RK45" else len(full.t) == steps + 1
    for name in graph.latent:
        assert cheap.values[name].shape == (SNAPSHOTS, *full.values[name].shape[1:])
        for i, t in enumerate(cheap.t):
            j = int(np.argmin(np.abs(full.t - t)))
            if abs(full.t[j] - t) < 1e-12:
                np.testing.assert_allclose(cheap.values[name][i], full.values[name][j], rtol=1e-9, atol=1e-12)


def test_lsoda_is_refused_before_it_allocates_a_dense_jacobian(net, monkeypatch):
    """LSODA's dense n x n Jacobian may take at most half the machine's memory (made small here to test it)."""
    graph, inputs, target = net
    n = sum(math.prod(graph[v].shape) for v in graph.latent)  # one value neuron per latent element
    monkeypatch.setattr("pcsim.backends.scipy.physical_memory", lambda: 16 * n * n)  # the Jacobian takes half: allowed
    pcsim.simulate(graph, inputs, target, solver=pcsim.Scipy("LSODA"), t_end=0.1)
    monkeypatch.setattr("pcsim.backends.scipy.physical_memory", lambda: 16 * n * n - 1)
    with pytest.raises(ValueError, match=rf"LSODA needs a dense {n:,} x {n:,} Jacobian .* use BDF or Radau"):
        pcsim.simulate(graph, inputs, target, solver=pcsim.Scipy("LSODA"), t_end=0.1)


@pytest.mark.parametrize("solver", [pcsim.Euler(1.0), pcsim.SOLVERS.make("scipy", "euler", dt=1.0)],
                         ids=["torch-euler", "scipy-euler"])
def test_a_bfloat16_network_simulates_and_its_zil_updates_are_autograds(solver):
    """NumPy has no bfloat16: the recording and scipy's flat state used to stop with numpy's TypeError. The
    trajectory is kept as float32 (exact for bfloat16), and Euler at dt = tau_x under Z-IL's gates gives
    autograd's gradients of the bfloat16 module, to bfloat16's tolerance."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(torch.bfloat16)
    x, y = torch.randn(2, 4, dtype=torch.bfloat16), torch.randn(2, 3, dtype=torch.bfloat16)
    tr = pcsim.simulate(pcsim.trace(model, x), (x,), y, solver=solver, t_end=4.0, tau_x=1.0, plasticity="zil")
    assert tr.values["0"].dtype == np.float32 and np.isfinite(tr.values["0"]).all()
    loss = 0.5 * ((model(x).float() - y.float()) ** 2).sum()
    for name, p in model.named_parameters():
        ref = torch.autograd.grad(loss, p, retain_graph=True)[0].float()
        got = torch.as_tensor(tr.updates[name]).float()
        assert float((got - ref).norm() / ref.norm()) < pcsim.tolerance(torch.bfloat16), name


@pytest.mark.parametrize("solver", [pcsim.Euler(0.1), pcsim.RK4(0.1)], ids=lambda s: s.method)
def test_a_record_time_off_a_fixed_step_grid_is_refused(net, solver):
    """A fixed-step run has no state between grid points: a wanted time off the grid used to be dropped
    silently, leaving a trajectory with no time points."""
    graph, inputs, target = net
    with pytest.raises(ValueError, match=r"record times \[0\.25\] are not on the fixed-step grid .*dt = 0\.1"):
        pcsim.simulate(graph, inputs, target, solver=solver, t_end=T_END, record={"times": [0.2, 0.25]})


@pytest.mark.parametrize("solver", [pcsim.Euler(0.1), pcsim.Scipy("RK45"), pcsim.Tsit5()], ids=lambda s: s.method)
def test_record_times_are_kept_once_each_in_order(net, solver):
    """Every solver records the set of wanted times, sorted (Tsit5 used to record a repeated time twice)."""
    graph, inputs, target = net
    tr = pcsim.simulate(graph, inputs, target, solver=solver, t_end=T_END, record={"times": [0.5, 0.2, 0.5, 1.0]})
    np.testing.assert_allclose(tr.t, [0.2, 0.5, 1.0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("solver", [pcsim.Euler(0.5), pcsim.Scipy("RK45", max_step=0.5), pcsim.Tsit5(max_step=0.5)],
                         ids=lambda s: f"{s.backend}-{s.method}")
def test_no_record_times_keeps_the_updates_alone(solver):
    """Record(times=[]) records no time and keeps the updates; scipy's and torch's adaptive solves stopped with
    numpy's 'index 0 is out of bounds for axis 0 with size 0', and an empty record had shape (0,), not
    (0, *the vertex's shape). Euler's updates at dt = tau_x under Z-IL's gates are autograd's (an adaptive solve
    integrates the ODE itself, which is not Z-IL)."""
    model, (x,), y = deep_tanh_problem(depth=2)
    graph = pcsim.trace(model, x)
    tr = pcsim.simulate(graph, (x,), y, solver=solver, t_end=4.0, tau_x=0.5, plasticity="zil", record={"times": []})
    assert tr.t.shape == (0,)
    with torch.no_grad():
        assert tr.values[graph.outputs[0]].shape == (0, *model(x).shape)
    loss = 0.5 * ((model(x) - y) ** 2).sum()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    if solver.order != 1:
        return
    tol = 10 * pcsim.tolerance(torch.float64)
    for (name, _), ref in zip(model.named_parameters(), grads, strict=True):
        assert np.abs(tr.updates[name] - ref.numpy()).max() <= tol * ref.abs().max().item(), name


@pytest.mark.parametrize("solver", [pcsim.Euler(0.1), pcsim.Scipy("RK45")], ids=lambda s: s.method)
@pytest.mark.parametrize("record, says", [
    (pcsim.Record, r"Record's snapshots must be an integer, got 3\.5"),
    ({"snapshots": 3.5}, r"Record's snapshots must be an integer, got 3\.5"),
    ({"times": 0.5}, r"Record's times must be a list of numbers, got 0\.5"),
    # two ways of saying when: the second was ignored without a word (every step recorded, or the times alone)
    ({"every_step": True, "snapshots": 3}, r"Record takes one of times, every_step and snapshots, got every_step and "
                                           r"snapshots$"),
    ({"times": [0.5], "every_step": True}, r"got times and every_step$"),
    ({"times": [0.5], "snapshots": 3}, r"got times and snapshots$"),
], ids=["float-snapshots", "float-snapshots-dict", "scalar-times", "every-step-and-snapshots", "times-and-every-step",
        "times-and-snapshots"])
def test_a_record_that_cannot_be_taken_is_refused_by_name(net, solver, record, says):
    """A fractional snapshot count stopped in numpy's linspace (or was truncated, from a dict), and one time for a
    list in float(). (An empty `times` records no time, and keeps the updates: tested above.)"""
    graph, inputs, target = net
    with pytest.raises(ValueError, match=says):
        record = record(snapshots=3.5) if record is pcsim.Record else record
        pcsim.simulate(graph, inputs, target, solver=solver, t_end=T_END, record=record)


def test_a_record_takes_its_times_from_any_iterable_and_one_population_by_name(net):
    """A generator of times was read once; a population given as one string was taken letter by letter. The
    oracle: the same run recorded with the times and the name written out."""
    graph, inputs, target = net
    name = graph.latent[-1]
    kw = dict(solver=pcsim.Euler(0.1), t_end=T_END, tau_x=TAU)
    want = pcsim.simulate(graph, inputs, target, record=pcsim.Record(populations=(name,), times=(0.5, 1.0)), **kw)
    got = pcsim.simulate(graph, inputs, target, record=pcsim.Record(populations=name, times=(t for t in (0.5, 1.0))),
                         **kw)
    assert list(got.values) == [name]
    np.testing.assert_array_equal(got.t, want.t)
    np.testing.assert_array_equal(got.values[name], want.values[name])


@pytest.mark.parametrize("solver", [pcsim.Scipy("RK45"), pcsim.Tsit5()], ids=lambda s: s.method)
def test_an_adaptive_solve_shows_progress_inside_a_piece(net, solver, monkeypatch):
    """The progress bar used to move only at the end of a piece between switches: a solve of one long piece
    stuck in small steps showed 0% until it ended."""
    graph, inputs, target = net
    moves = []

    class Bar:
        def __init__(self, total, **_):
            self.n = 0.0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, by):
            self.n += by
            moves.append(self.n)

    monkeypatch.setattr("pcsim.dynamics.recording.tqdm", Bar)
    pcsim.simulate(graph, inputs, target, solver=solver, t_end=T_END, tau_x=TAU, progress=True)
    assert len(moves) > 3 and moves == sorted(moves) and moves[-1] == pytest.approx(T_END), moves


@pytest.mark.parametrize("make", [lambda: pcsim.Euler("0.1"), lambda: pcsim.Euler(True), lambda: pcsim.RK4([0.1]),
                                  lambda: pcsim.Dopri5(rtol="1e-6"), lambda: pcsim.Scipy("RK45", atol="0"),
                                  lambda: pcsim.discretise(tau_x="1", dt=1.0)],
                         ids=["str-dt", "bool-dt", "list-dt", "str-rtol", "str-atol", "str-tau"])
def test_a_setting_that_is_not_a_number_is_refused_by_name(make):
    """Euler('0.1') stopped in a comparison ("'>' not supported between instances of 'str' and 'int'") and
    Euler(True) integrated at dt = 1."""
    with pytest.raises(ValueError, match=r"(dt|rtol|atol|tau_x) must be a number, got "):
        make()


@pytest.mark.parametrize("setting", [{"t_end": "1.0"}, {"t_on": "0.5"}, {"t_on": True}, {"tau_e": "0.1"},
                                     {"tau_x": "1"}, {"tau_w": "1"}, {"tau_x": "per population"}],
                         ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_simulate_refuses_a_time_that_is_not_a_number_by_name(net, setting):
    """simulate(t_end='1.0'), t_on='0.5' and tau_e='0.1' (values read from a config file) stopped in a comparison
    inside simulate ("'<' not supported between instances of 'int' and 'str'"); tau_x='1' ran, read by float();
    t_on=True showed the target at t = 1."""
    graph, inputs, target = net
    if setting.get("tau_x") == "per population":
        setting = {"tau_x": {n: "1" for n in graph.latent}}
    name = next(iter(setting))
    with pytest.raises(ValueError, match=rf"^(simulate\(\): )?{name}(\['[^']+'\])? must be a number, got "):
        pcsim.simulate(graph, inputs, target, solver=pcsim.Euler(0.1), **{"t_end": 2.0, **setting})


def test_discretise_refuses_a_tau_e_that_is_not_a_number():
    with pytest.raises(ValueError, match=r"^discretise\(\): tau_e must be a number, got '1'"):
        pcsim.discretise(tau_x=1.0, dt=1.0, tau_e="1")


@pytest.mark.parametrize("solver", [pcsim.Euler(0.3), pcsim.RK4(0.3)], ids=lambda s: s.method)
def test_a_recorded_time_is_the_time_asked_for(net, solver):
    """3 * 0.3 is 0.8999999999999999 in floating point: the record at t = 0.9 said so, and `traj.t == 0.9` found
    nothing. The oracle: the numbers asked for."""
    graph, inputs, target = net
    tr = pcsim.simulate(graph, inputs, target, solver=solver, t_end=1.8, record={"times": [0.9, 1.8, 0.3]})
    assert tr.t.tolist() == [0.3, 0.9, 1.8]


@pytest.mark.parametrize("solver, settings, says", [
    (pcsim.Scipy("RK45"), dict(tau_e=1e-9), r"about 1e\+09 steps: the fastest time constant, 1e-09, bounds the steps "
                                            r"of an explicit method \(RK45\).*Scipy\('LSODA'\)"),
    (pcsim.Tsit5(), dict(tau_x={"*": 1e-9}), r"bounds the steps of an explicit method \(tsit5\)"),
    (pcsim.Euler(1e-300), {}, r"about 1e\+300 steps of at most 1e-300 to t_end = 1"),
    (pcsim.Scipy("RK45", max_step=0.5), dict(tau_e=1e-9), r"about 1e\+09 steps: the fastest time constant"),
    (pcsim.Scipy("LSODA", max_step=1e-9), {}, r"about 1e\+09 steps of at most 1e-09 to t_end = 1"),
], ids=["rk45-fast-error", "tsit5-fast-value", "euler-tiny-step", "rk45-capped-fast-error", "lsoda-tiny-cap"])
def test_a_run_of_hours_is_said_before_it_starts(net, solver, settings, says):
    # before: each ran on without a word (RK45 at tau_e = 1e-9 past 8 minutes); the warning is raised as an error
    # here, so the run never starts
    graph, inputs, target = net
    if "tau_x" in settings:
        settings = {"tau_x": {n: 1.0 for n in graph.latent} | {graph.latent[0]: 1e-9}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match=says):
            pcsim.simulate(graph, inputs, target, solver=solver, t_end=T_END, **settings)


def test_a_stiff_method_or_a_short_run_says_nothing(net):
    graph, inputs, target = net
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an implicit method steps past tau_e = 1e-9: nothing to say
        pcsim.simulate(graph, inputs, target, solver=pcsim.Scipy("LSODA"), t_end=T_END, tau_e=1e-9)
        pcsim.simulate(graph, inputs, target, solver=pcsim.Scipy("RK45"), t_end=T_END, tau_x=TAU)
        pcsim.simulate(graph, inputs, target, solver=pcsim.Euler(0.1), t_end=T_END, tau_x=TAU)


def test_a_misspelt_setting_is_named_with_the_one_meant():
    """simulate(t_edn=1.0) reached the solver as a backend option, which said only that it took no 't_edn'."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 2), nn.Tanh()).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    graph = pcsim.trace(module, x)
    with pytest.raises(ValueError, match=r"takes no option t_edn \(did you mean t_end\?\); its options: dt, "):
        pcsim.simulate(graph, (x,), None, backend="torch", dt=0.1, t_edn=1.0)
    with pytest.raises(ValueError, match=r"takes no option rtool \(did you mean rtol\?\)"):
        pcsim.SOLVERS.make("torch", "tsit5", rtool=1e-3)
    with pytest.raises(ValueError, match=r"takes no option zzz; its options"):  # nothing near: no guess
        pcsim.SOLVERS.make("torch", "euler", dt=0.1, zzz=1)
