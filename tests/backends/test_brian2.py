"""The Brian2 backend: real NeuronGroups and Synapses that integrate the same system as pcsim's Euler.

Oracles: pcsim's own explicit Euler (scipy backend, method='euler', same dt) step by step; scipy's
DOP853 at tight tolerance with Euler's O(dt) error estimated from two step sizes; torch autograd
on the module for Z-IL. Compiled targets (cython, cpp_standalone) are marked slow: each code object
compiles for seconds, so they run on the smallest network that shows the point.
"""

import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import pcsim
from pcsim.check import autograd_gradients
from pcsim.numerics import relative_difference
from tests.backends.brian2_oracle import assert_same_path
from tests.equivalence.archs import ARCHS

brian2 = pytest.importorskip("brian2")

from pcsim.backends.brian2 import describe  # noqa: E402
from pcsim.backends.brian2.runner import Brian2Unavailable, CythonFallbackWarning  # noqa: E402

# Brian2's equation parser uses pyparsing's old camelCase names
pytestmark = pytest.mark.filterwarnings("ignore:.*(parseString|parseAll|scanString|parse_all).*")



class SmallCNN(nn.Module):
    """(B,2,6,6): Conv2d(pad 1) -> tanh -> AvgPool2d(2) -> Conv2d(stride 1) -> sigmoid -> flatten -> Linear."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
                                 nn.Conv2d(3, 2, 2), nn.Sigmoid(), nn.Flatten(), nn.Linear(2 * 2 * 2, 3))

    def forward(self, x):
        return self.net(x)


def small_cnn():
    g = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    module = SmallCNN().double()
    return module, (torch.randn(2, 2, 6, 6, generator=g),), torch.randn(2, 3, generator=g)


def tiny_mlp(seed=0):
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    g = torch.Generator().manual_seed(seed + 1)
    return module, (torch.randn(2, 3, generator=g),), torch.randn(2, 2, generator=g)


def problem(name):
    if name == "small_cnn":
        return small_cnn()
    return ARCHS[name](torch.float64, "mse")


# -- numpy target: the same Euler path as pcsim -----------------------------------------------------------
def late_hidden_gate(vertex, t):
    """A user's gate function: plasticity on every vertex but the output, from t = 0.4 on."""
    return vertex != "fc3" and t >= 0.4


CASES = {  # arch -> settings that exercise a different part of the rendering each
    "mlp_tanh_bias": {"t_on": 0.3},  # free output first, then clamped; plasticity from after(0.1)
    "mlp_relu_bias": {"tau_e": 0.2, "plasticity": "always"},  # leaky error populations
    "mlp_sigmoid_nobias": {"plasticity": "zil"},  # Z-IL windows at dt < tau_x
    "residual_block": {"tau_e": 0.1, "t_on": 0.2},  # levelled: identity vertices and an add of two parents
    "small_cnn": {"tau_x": {"net_0": 0.4, "net_1": 0.3}},  # conv2d kernels shared across positions and
    # batch, avg_pool2d, flatten; per-population time constants
    "mlp_tanh_nobias": {"plasticity": late_hidden_gate},  # a user gate function, sampled on the step grid
}


@pytest.mark.parametrize("arch", list(CASES))
def test_numpy_target_is_pcsims_euler_path(arch):
    module, inputs, target = problem(arch)
    graph = pcsim.trace(module, *inputs).level()
    settings = {"plasticity": pcsim.after(0.1), "tau_x": 0.5, **CASES[arch]}
    if isinstance(settings["tau_x"], dict):
        settings["tau_x"] = {n: settings["tau_x"].get(n, 0.5) for n in graph.latent}
    kw = dict(t_end=1.5, dt=0.05, method="euler", record=pcsim.Record(every_step=True), **settings)
    ref = pcsim.simulate(graph, inputs, target, backend="scipy", **kw)
    got = pcsim.simulate(graph, inputs, target, backend="brian2", **kw)
    assert got.meta["backend"] == "brian2" and len(got.t) == 31
    assert any(np.abs(u).max() > 0 for u in ref.updates.values())  # plasticity did act
    assert_same_path(got, ref)


@pytest.mark.parametrize("arch", ["mlp_tanh_bias", "small_cnn"])
def test_distance_to_dop853_is_eulers_first_order_error(arch):
    """|Brian2(dt) - DOP853| halves with dt, and is the size Richardson's estimate from two pcsim
    Euler runs predicts for a first-order method: 2 |E(dt) - E(dt/2)|."""
    module, inputs, target = problem(arch)
    graph = pcsim.trace(module, *inputs)
    T, dt = 1.0, 0.05

    def final(backend, **kw):
        tr = pcsim.simulate(graph, inputs, target, backend=backend, t_end=T, tau_x=0.5, record={"times": [T]}, **kw)
        return np.concatenate([tr.values[n][-1].ravel() for n in graph.latent]
                              + [tr.errors[n][-1].ravel() for n in graph.latent])

    reference = final("scipy", method="DOP853", rtol=1e-9, atol=1e-12)  # Euler's error here is ~1e-3
    e1 = np.abs(final("brian2", method="euler", dt=dt) - reference).max()
    e2 = np.abs(final("brian2", method="euler", dt=dt / 2) - reference).max()
    richardson = 2 * np.abs(final("scipy", method="euler", dt=dt) - final("scipy", method="euler", dt=dt / 2)).max()
    print(f"{arch}: |E(dt) - ref| = {e1:.3e}, |E(dt/2) - ref| = {e2:.3e}, Richardson {richardson:.3e}")
    assert 1.7 < e1 / e2 < 2.3, (e1, e2)
    assert 0.5 * richardson < e1 < 1.5 * richardson, (e1, richardson)


# -- Z-IL on Brian2: the synapses' accumulators are autograd's gradients -----------------------------------
# (instantaneous errors on every zoo model and architecture: test_brian2_zoo.py, test_brian2_archs.py)
@pytest.mark.parametrize("arch,tau_e", [("residual_block", 0.25), ("small_cnn", 0.0)])
def test_zil_on_brian2_gives_autograd_gradients(arch, tau_e):
    module, inputs, target = problem(arch)
    graph = pcsim.trace(module, *inputs).level()
    dt = 0.25
    plan = pcsim.discretise(tau_x=dt, tau_e=tau_e, dt=dt, plasticity="zil")
    assert plan.exact
    tr = pcsim.simulate(graph, inputs, target, backend="brian2", t_end=(plan.update_step(graph.depth) + 1) * dt,
                        tau_x=dt, tau_e=tau_e, method="euler", dt=dt, plasticity="zil", record=[])
    reference = autograd_gradients(module, inputs, target)
    for name, ref in reference.items():
        assert relative_difference(torch.as_tensor(tr.updates[name]), ref) <= 1e-10, name


def test_rendering_is_brian2_equations_with_one_summed_variable_per_projection():
    module, inputs, target = problem("residual_block")
    graph = pcsim.trace(module, *inputs).level()
    problem_ = pcsim.algorithms.problem.Problem.build(graph, inputs, target)
    field = pcsim.dynamics.VectorField(problem_, tau_x=1.0, gate=pcsim.dynamics.Always())
    text = describe(field, dt=0.1, t_end=1.0)
    eqs = pcsim.dynamics.EQUATIONS
    assert eqs.value in text and eqs.error_instant in text and eqs.output_error_instant in text
    assert "mu = mu_0 + mu_1 : 1" in text  # the add vertex: one summed variable per incoming projection
    assert "mu_0_post = weight * x_pre : 1 (summed)" in text and "fb_0_pre = weight * err_post : 1 (summed)" in text
    assert "dw/dt = gate_syn * hebb / tau_w : 1 (clock-driven)" in text  # plasticity as synaptic state
    assert "dw_b/dt = gate * hebb_b / tau_w : 1" in text  # biases: per-neuron accumulators
    assert text.count("NeuronGroup") == len(graph.latent) + 1  # + the clamped input


def test_brian2_state_does_not_leak_between_runs():
    module, inputs, target = tiny_mlp()
    graph = pcsim.trace(module, *inputs)
    target_before = brian2.prefs["codegen.target"]
    device_before = brian2.get_device()
    a = pcsim.simulate(graph, inputs, target, backend="brian2", t_end=0.5, tau_x=0.25, dt=0.05)
    b = pcsim.simulate(graph, inputs, target, backend="brian2", t_end=0.5, tau_x=0.25, dt=0.05)
    assert_same_path(a, b, tol=0.0)
    assert brian2.prefs["codegen.target"] == target_before and brian2.get_device() is device_before


def test_on_build_hands_over_the_brian2_objects_and_what_it_adds_runs_with_them():
    """Brian2(on_build=f): f sees pcsim's NeuronGroups and Synapses in their Network before the run; a monitor
    it adds records the same errors pcsim reads back, a noise operation it adds moves them, and without
    additions the run is the plain one to the bit."""
    module, inputs, target = tiny_mlp()
    graph = pcsim.trace(module, *inputs)
    seen = {}

    def hook(built):
        seen["groups"], seen["synapses"] = dict(built.groups), [s for _, s in built.synapses]
        assert all(isinstance(g, brian2.NeuronGroup) for g in built.groups.values())
        assert all(isinstance(s, brian2.Synapses) for s in seen["synapses"])
        assert all(g in built.network.objects for g in built.groups.values())
        seen["mon"] = brian2.StateMonitor(built.groups[graph.outputs[0]], "err", record=True, clock=built.clock,
                                          when="before_groups", order=3)
        built.network.add(seen["mon"])

    every = {"every_step": True}
    plain = pcsim.simulate(graph, inputs, target, backend="brian2", t_end=0.5, tau_x=0.25, dt=0.05, record=every)
    hooked = pcsim.simulate(graph, inputs, target, solver=pcsim.Brian2(0.05, on_build=hook), t_end=0.5, tau_x=0.25,
                            record=every)
    assert set(seen["groups"]) >= set(graph.latent) and seen["synapses"]
    assert_same_path(plain, hooked, tol=0.0)
    out = graph.outputs[0]
    mine = np.asarray(seen["mon"].err).T  # (steps, neurons)
    np.testing.assert_allclose(mine, hooked.errors[out].reshape(len(hooked.t), -1)[:len(mine)], rtol=0, atol=1e-15)

    def noise(built):
        for vertex, group in built.groups.items():
            if vertex in graph.latent and vertex not in graph.outputs:
                built.network.add(group.run_regularly("x += 0.01 * randn()", dt=0.05 * brian2.second))

    brian2.seed(0)
    noisy = pcsim.simulate(graph, inputs, target, solver=pcsim.Brian2(0.05, on_build=noise), t_end=0.5, tau_x=0.25,
                           record=every)
    gap = np.abs(noisy.errors[out] - plain.errors[out]).max()
    assert 1e-4 < gap < 0.1


def test_importing_pcsim_and_the_backend_does_not_import_brian2():
    import subprocess

    code = ("import sys, pcsim, pcsim.backends.brian2, pcsim.backends.brian2.render, pcsim.backends.brian2.ops; "
            "print('brian2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.slow
def test_an_error_the_script_leaves_uncaught_after_a_brian2_run_is_not_blamed_on_brian2(tmp_path):
    """Brian2's import set sys.excepthook: a script's own error after a brian2 run printed 'Brian 2 encountered an
    unexpected error ... report this issue ... to the issue tracker' above the traceback."""
    import subprocess

    script = tmp_path / "mine.py"
    script.write_text("import torch, pcsim\n"
                      "net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh()).double()\n"
                      "x = torch.ones(2, 3, dtype=torch.float64)\n"
                      "pcsim.simulate(pcsim.trace(net, x), (x,), None, backend='brian2', t_end=0.2, dt=0.1)\n"
                      "raise ValueError('my own mistake')\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.rstrip().endswith("ValueError: my own mistake"), done.stderr[-2000:]
    assert "Brian 2 encountered" not in done.stderr


# -- clear messages ------------------------------------------------------------------------------------
def test_missing_brian2_says_how_to_install(monkeypatch):
    module, inputs, target = tiny_mlp()
    graph = pcsim.trace(module, *inputs)
    monkeypatch.setitem(sys.modules, "brian2", None)  # `import brian2` now fails
    with pytest.raises(Brian2Unavailable, match=r"pip install 'brian2"):
        pcsim.simulate(graph, inputs, target, backend="brian2", t_end=0.5, dt=0.1)


def test_cython_without_a_compiler_falls_back_to_numpy_with_one_warning(monkeypatch):
    from brian2.codegen.runtime.cython_rt import CythonCodeObject

    module, inputs, target = tiny_mlp()
    graph = pcsim.trace(module, *inputs)
    kw = dict(t_end=0.5, tau_x=0.25, dt=0.05, plasticity="always")
    reference = pcsim.simulate(graph, inputs, target, backend="brian2", **kw)
    monkeypatch.setattr(CythonCodeObject, "is_available", classmethod(lambda cls: False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = pcsim.simulate(graph, inputs, target, backend="brian2", codegen_target="cython", **kw)
    ours = [w for w in caught if issubclass(w.category, CythonFallbackWarning)]
    assert len(ours) == 1 and "'numpy' target instead" in str(ours[0].message)
    assert_same_path(got, reference, tol=0.0)


class WithHardswish(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(nn.functional.hardswish(self.fc(x)))


def test_unsupported_op_names_the_vertex_and_why():
    module = WithHardswish().double()
    x, y = torch.randn(2, 3), torch.randn(2, 2)
    graph = pcsim.trace(module, x)
    with pytest.raises(pcsim.UnsupportedOpError) as info:
        pcsim.simulate(graph, (x,), y, backend="brian2", t_end=0.5, dt=0.1)
    msg = str(info.value)
    assert "vertex 'hardswish'" in msg and "no synaptic form" in msg and "Brian2 equations" in msg
    assert "The brian2 backend renders:" in msg and "_softmax" in msg  # the list names what does render


def test_a_subclass_of_a_rendered_loss_is_refused_not_rendered_as_its_parent():
    """Brian2 renders MSE's and cross-entropy's output errors in equations of its own, chosen by the loss's name; a
    subclass keeps its parent's name unless it sets one, so a label-smoothed CrossEntropy ran as plain CE (Z-IL's
    updates 0.12 relative off the smoothed loss's gradient on this MLP), silently."""
    from dataclasses import dataclass

    from pcsim.algorithms.losses import MSE, CrossEntropy

    @dataclass(frozen=True)
    class Smoothed(CrossEntropy):
        def value(self, mu, target):
            return torch.nn.functional.cross_entropy(mu, target, reduction="sum", label_smoothing=0.1)

    @dataclass(frozen=True)
    class Halved(MSE):
        def value(self, mu, target):
            return 0.25 * ((mu - target) ** 2).sum()

    module, (x,), _ = tiny_mlp()
    graph = pcsim.trace(module, x)
    for loss, y in ((Smoothed(), torch.tensor([0, 1])), (Halved(), torch.randn(2, 2))):
        with pytest.raises(NotImplementedError, match=rf"output '.*' has loss {type(loss).__name__} "
                                                      rf"\('{loss.name}'\). Use backend='scipy' or 'torch'"):
            pcsim.simulate(graph, (x,), y, loss=loss, backend="brian2", t_end=0.5, dt=0.1)


def test_a_cross_entropy_target_leaving_entries_out_is_refused():
    """Brian2's cross-entropy circuit counts every entry; a -100 entry (left out, as in F.cross_entropy) is refused."""
    module, (x,), _ = tiny_mlp()
    with pytest.raises(NotImplementedError, match=r"target for output '.*' leaves entries out \(class index -100\)"):
        pcsim.simulate(pcsim.trace(module, x), (x,), torch.tensor([1, -100]), loss="ce", backend="brian2",
                       t_end=0.5, dt=0.1)


def test_other_refusals_are_explained():
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    with pytest.raises(ValueError, match="whole number of steps"):
        pcsim.simulate(graph, inputs, None, backend="brian2", t_end=0.55, dt=0.1)
    with pytest.raises(ValueError, match="unknown method 'RK45'"):
        pcsim.simulate(graph, inputs, None, backend="brian2", t_end=0.5, dt=0.1, method="RK45")


def test_a_blow_up_on_brian2_names_the_time_and_population():
    """The shared guard: a non-finite final state is a SimulationError naming the time and the populations."""
    module, inputs, target = tiny_mlp()
    graph = pcsim.trace(module, *inputs)
    kw = dict(t_end=5000.0, tau_x=1.0, method="euler", dt=5.0, record=[])  # dt / tau_x = 5: Euler diverges
    pattern = r"blew up at t = 5000: the value population '\w+' became (NaN|inf)"
    with np.errstate(all="ignore"), pytest.raises(pcsim.SimulationError, match=pattern):
        pcsim.simulate(graph, inputs, target * 100, backend="brian2", **kw)


def test_cli_simulate_on_brian2_writes_the_same_trajectory_as_euler(tmp_path, capsys):
    from pcsim.cli import main

    model = tmp_path / "tiny.py"
    model.write_text("import torch\nfrom torch import nn\n\n"
                     "def build(seed=0):\n    torch.manual_seed(seed)\n"
                     "    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), "
                     "(torch.randn(2, 3),), torch.randn(2, 2)\n")
    common = ["--method", "euler", "--dt", "0.1", "--t-end", "1", "--tau-x", "0.5", "--plasticity", "always"]
    files = {}
    for backend in ("brian2", "scipy"):
        files[backend] = tmp_path / f"{backend}.npz"
        extra = ["--target", "numpy"] if backend == "brian2" else []
        code = main(["simulate", str(model), "--backend", backend, *extra, *common, "--out", str(files[backend])])
        assert code == 0, capsys.readouterr().err
    got, ref = (pcsim.Trajectory.from_npz(files[b]) for b in ("brian2", "scipy"))
    assert got.meta["codegen_target"] == "numpy"
    assert_same_path(got, ref)
    code = main(["simulate", str(model), "--target", "cython", "--out", str(tmp_path / "x.npz")])
    assert code == 2 and "--backend brian2" in capsys.readouterr().err


# -- compiled targets (slow: every code object compiles) ----------------------------------------------------
class EveryRenderedOp(nn.Module):
    """One network with every op the issue lists, each once: conv2d, avg pooling, flatten, a dense layer, tanh,
    ReLU, sigmoid and a residual add (levelled: an identity vertex). Compiled targets build about six code
    objects per population (updates, summed variables, synapses, monitors), each for seconds, so the
    network is the smallest that holds them all."""

    def __init__(self):
        super().__init__()
        self.conv, self.pool = nn.Conv2d(2, 3, 3, padding=1), nn.AvgPool2d(2)
        self.fc = nn.Linear(27, 3)

    def forward(self, x):
        a = torch.relu(self.fc(torch.flatten(self.pool(torch.tanh(self.conv(x))), 1)))
        return torch.sigmoid(a) + a


def every_rendered_op():
    torch.manual_seed(3)
    module = EveryRenderedOp().double()
    g = torch.Generator().manual_seed(4)
    return module, (torch.randn(2, 2, 6, 6, generator=g),), torch.randn(2, 3, generator=g)


def test_every_rendered_op_network_on_numpy_is_pcsims_euler_path():
    """The control for the compiled test below: the same network and settings on the numpy target."""
    check_compiled_path("numpy")


def check_compiled_path(codegen_target):
    module, inputs, target = every_rendered_op()
    graph = pcsim.trace(module, *inputs).level()
    assert any(v.op == "identity" for v in graph.vertices)  # the skip edge was levelled
    # 20 steps: the error wave reaches the first layer and moves it (at 12 steps and tau_x = 0.5, tanh's
    # derivative off by 0.1% changed the path by 2e-15; here by 2e-4)
    kw = dict(t_end=1.0, dt=0.05, method="euler", tau_x=0.1, tau_e=0.05, plasticity=pcsim.after(0.3))
    ref = pcsim.simulate(graph, inputs, target, backend="scipy", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CythonFallbackWarning)  # a fallback would not test cython
        got = pcsim.simulate(graph, inputs, target, backend="brian2", codegen_target=codegen_target, **kw)
    assert any(np.abs(u).max() > 0 for u in ref.updates.values())  # plasticity did act
    assert_same_path(got, ref)


@pytest.fixture
def quick_compiler():
    """Compile without optimising or debug information: a cold cache then builds in about a third of the time.
    What is tested is the generated code's arithmetic, not its speed."""
    key = "codegen.cpp.extra_compile_args_gcc"
    before = brian2.prefs[key]
    brian2.prefs[key] = ["-w", "-O0", "-g0", "-std=c++11"]
    yield
    brian2.prefs[key] = before


@pytest.mark.slow
def test_cython_target_is_pcsims_euler_path(quick_compiler):
    check_compiled_path("cython")


@pytest.mark.slow
def test_cpp_standalone_runs_twice_equal_to_euler_and_zil_exact(quick_compiler):
    """Two builds in one process (device.reinit between them); Z-IL gates at dt = tau_x, so the same
    run checks the Euler path and autograd's gradients; the second build reuses the compiled code."""
    device_before = brian2.get_device()
    for seed in (0, 1):
        module, inputs, target = tiny_mlp(seed)
        graph = pcsim.trace(module, *inputs)
        kw = dict(t_end=0.75, tau_x=0.25, dt=0.25, method="euler", plasticity="zil")
        ref = pcsim.simulate(graph, inputs, target, backend="scipy", **kw)
        got = pcsim.simulate(graph, inputs, target, backend="brian2", codegen_target="cpp_standalone", **kw)
        assert_same_path(got, ref)
        for name, grad in autograd_gradients(module, inputs, target).items():
            assert relative_difference(torch.as_tensor(got.updates[name]), grad) <= 1e-10, name
    assert brian2.get_device() is device_before


def test_a_fused_recurrent_layer_is_refused_with_the_way_out():
    torch.manual_seed(0)
    gru = nn.GRU(3, 4).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    graph = pcsim.trace(gru, x, fused=True)
    with pytest.raises(pcsim.UnsupportedOpError, match=r"vertex '.*'.*fused into one vertex.*without `fused`"):
        pcsim.simulate(graph, (x,), (torch.zeros(5, 2, 4), torch.zeros(1, 2, 4)), backend="brian2", t_end=0.5,
                       dt=0.1)


def test_a_float32_graph_gives_float32_records_on_brian2_as_on_the_other_backends():
    # Brian2 integrates in float64; its records came back float64 while scipy's and torch's were float32
    module, inputs, target = tiny_mlp()
    module, inputs, target = module.float(), tuple(x.float() for x in inputs), target.float()
    graph = pcsim.trace(module, *inputs)
    kw = dict(t_end=0.5, dt=0.05, method="euler", tau_x=0.5, plasticity="always", record=pcsim.Record(every_step=True))
    ref = pcsim.simulate(graph, inputs, target, backend="scipy", **kw)
    got = pcsim.simulate(graph, inputs, target, backend="brian2", **kw)
    for traj in (ref, got):
        assert {a.dtype for d in (traj.values, traj.errors, traj.updates) for a in d.values()} == {np.dtype(np.float32)}
    tol = pcsim.tolerance(torch.float32)
    for name in ref.values:
        assert np.abs(got.values[name] - ref.values[name]).max() <= tol * np.abs(ref.values[name]).max()


def test_an_empty_batch_is_refused_naming_the_vertex():
    """A batch of size 0 gives every population 0 neurons: Brian2 stopped with its own 'NeuronGroup size should be
    at least 1, was 0' (and warnings about objects never run); the torch backends simulate it."""
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.float64)
    g = pcsim.trace(net, x)
    with pytest.raises(pcsim.InputError, match=r"the brian2 backend makes one neuron per entry, and vertex '0' "
                                               r"\(op linear, shape \(0, 5\)\) has none"):
        pcsim.simulate(g, (x,), y, backend="brian2", dt=0.1, t_end=1.0)


@pytest.mark.parametrize("threads", [-1, 1.5, True, "2"])
def test_a_thread_count_that_is_not_a_whole_number_is_refused(threads):
    # before: Brian2(threads=-1) was accepted and handed to Brian2's OpenMP preference
    with pytest.raises(ValueError, match=r"Brian2 threads must be a whole number >= 0"):
        pcsim.Brian2(dt=0.1, threads=threads)


def test_pcsims_warnings_are_not_swallowed_by_brian2s_first_import(tmp_path):
    """Brian2's import turns on logging.captureWarnings: a warning of the first Brian2 run went to Brian2's log,
    missing from warnings.catch_warnings (and pytest.warns) entered before it. In a fresh interpreter, where Brian2
    is not imported yet."""
    import os
    import subprocess

    probe = (
        "import warnings, torch, pcsim\n"
        "net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()\n"
        "x, y = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)\n"
        "g = pcsim.trace(net, x)\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    for _ in range(2):  # the first run imports Brian2 (after its warning), the second warns after that\n"
        "        pcsim.simulate(g, (x,), y, solver=pcsim.Brian2(dt=1.0), tau_x=1.0, t_end=1.0, plasticity='zil')\n"
        "print(sum('Z-IL windows' in str(r.message) for r in w))\n")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "2", done.stdout + done.stderr[-1000:]
