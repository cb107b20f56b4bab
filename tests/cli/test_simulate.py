"""`pcsim simulate`: writes the Trajectory file and the plot; bad options exit 2 with a message."""

import numpy as np
import pytest
import torch

import pcsim
from pcsim.cli import main


def test_simulate_writes_a_trajectory_and_a_plot(tmp_path, capsys):
    out, png = tmp_path / "run.npz", tmp_path / "run.png"
    code = main(["simulate", "rnn", "--method", "euler", "--dt", "0.5", "--tau-x", "0.5", "--plasticity", "zil",  # rnn:
                 "--t-end", "20", "--every-step", "--out", str(out), "--plot", str(png)])  # 32 levels deep
    assert code == 0, capsys.readouterr().err
    traj = pcsim.Trajectory.from_npz(out)
    assert traj.meta["backend"] == "scipy" and traj.meta["method"] == "euler"
    assert len(traj.t) == 41 and png.stat().st_size > 10_000
    # Z-IL gates at dt = tau_x: the file's updates are the model's autograd gradients
    from pcsim.check import autograd_gradients
    from pcsim.zoo import load_model_file

    module, inputs, target = load_model_file("rnn").build_model(seed=0)
    module, inputs, target = module.double(), tuple(x.double() for x in inputs), target.double()
    for name, ref in autograd_gradients(module, inputs, target).items():
        np.testing.assert_allclose(traj.updates[name], ref.numpy(), rtol=1e-10, atol=1e-13)


def test_simulate_records_snapshots_by_default(tmp_path, capsys):
    """40 Euler steps: 21 evenly spaced grid times by default, or as many as --snapshots asks."""
    for flags, times in (([], np.arange(0, 41, 2) * 0.5), (["--snapshots", "5"], np.arange(0, 41, 10) * 0.5)):
        out = tmp_path / "run.npz"
        code = main(["simulate", "rnn", "--method", "euler", "--dt", "0.5", "--t-end", "20", *flags, "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        np.testing.assert_allclose(pcsim.Trajectory.from_npz(out).t, times, rtol=0, atol=1e-12)


def test_simulate_reports_bad_options(tmp_path, capsys):
    code = main(["simulate", "mlp", "--method", "leapfrog", "--out", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "unknown method 'leapfrog'" in err and "Traceback" not in err
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(SystemExit) as exit_:  # argparse's: the flag is at fault
        main(["simulate", "mlp", "--tau-x", "-1", "--out", str(tmp_path / "x.npz")])
    assert exit_.value.code == 2 and "argument --tau-x" in capsys.readouterr().err


def test_plot_trajectory_draws_every_population():
    from pcsim.plots.dynamics import plot_trajectory

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    x, y = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    traj = pcsim.simulate(pcsim.trace(net, x), (x,), y, t_end=1.0, tau_x=0.5, method="rk4", dt=0.1)
    fig = plot_trajectory(traj)
    assert len(fig.axes) == 2 * len(traj.values)
    np.testing.assert_allclose(traj.values["2"][-1], y.numpy())  # a shown MSE output holds the target


def test_simulate_a_fused_lstm_gives_autograd_gradients(tmp_path, capsys):
    """The ODEs on a graph whose LSTM layer is one vertex: Z-IL's gates still read BP's gradients."""
    out = tmp_path / "lstm.npz"
    code = main(["simulate", "lstm", "--fused", "--method", "euler", "--dt", "1", "--plasticity", "zil",
                 "--t-end", "4", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    traj = pcsim.Trajectory.from_npz(out)
    from pcsim.check import autograd_gradients
    from pcsim.zoo import load_model_file

    spec = load_model_file("lstm")
    module, inputs, target = spec.build_model(seed=0)
    module, inputs = module.double(), tuple(x.double() for x in inputs)
    for name, ref in autograd_gradients(module, inputs, target, spec.loss).items():
        np.testing.assert_allclose(traj.updates[name], ref.numpy(), rtol=1e-10, atol=1e-13)


def test_mse_on_a_classification_model_one_hot_encodes_its_classes(tmp_path, capsys):
    """models/mlp.py is a classifier (LOSS = 'ce', class indices): with --loss mse the CLI trains it towards the
    one-hot rows of those classes, and Z-IL's gates give autograd's MSE gradients against them."""
    from pcsim.check import autograd_gradients
    from pcsim.zoo import load_model_file

    module, inputs, target = load_model_file("mlp").build_model(seed=0)
    module, inputs = module.double(), tuple(x.double() for x in inputs)
    depth = pcsim.trace(module, *inputs).level().depth
    out = tmp_path / "run.npz"
    code = main(["simulate", "mlp", "--loss", "mse", "--backend", "torch", "--method", "euler", "--dt", "0.5",
                 "--tau-x", "0.5", "--plasticity", "zil", "--t-end", str(0.5 * (depth + 2)), "--out", str(out)])
    assert code == 0 and "one-hot encoded over 10 classes" in capsys.readouterr().err
    one_hot = torch.eye(10, dtype=torch.float64)[target]
    traj = pcsim.Trajectory.from_npz(out)
    for name, ref in autograd_gradients(module, inputs, one_hot, "mse").items():
        np.testing.assert_allclose(traj.updates[name], ref.numpy(), rtol=1e-10, atol=1e-13)
    assert main(["check", "mlp", "--loss", "mse", "--json"]) == 0


def test_an_adaptive_torch_solver_with_its_tolerances(tmp_path, capsys):
    """--backend torch --method tsit5 --rtol/--atol: the trajectory's end is scipy DOP853's, within the tolerance."""
    from pcsim.zoo import load_model_file

    out = tmp_path / "run.npz"
    code = main(["simulate", "tied_autoencoder", "--backend", "torch", "--method", "tsit5", "--rtol", "1e-9",
                 "--atol", "1e-11", "--t-end", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    traj = pcsim.Trajectory.from_npz(out)
    assert traj.meta["method"] == "tsit5" and traj.meta["rtol"] == 1e-9 and traj.meta["atol"] == 1e-11
    module, inputs, target = load_model_file("tied_autoencoder").build_model(seed=0)
    module, inputs, target = module.double(), tuple(x.double() for x in inputs), target.double()
    ref = pcsim.simulate(pcsim.trace(module, *inputs), inputs, target, solver=pcsim.Scipy("DOP853", rtol=1e-12,
                         atol=1e-14), t_end=2.0, record={"times": [2.0]})
    for name, v in ref.values.items():
        np.testing.assert_allclose(traj.values[name][-1], v[-1], rtol=0, atol=1e-7, err_msg=name)


@pytest.mark.slow  # compiles the step (seconds)
def test_compile_is_an_option_of_the_adaptive_torch_solvers_only(tmp_path, capsys):
    """--compile: the fused, compiled step gives scipy DOP853's end state; elsewhere it is refused by name."""
    from pcsim.zoo import load_model_file

    out = tmp_path / "run.npz"
    code = main(["simulate", "tied_autoencoder", "--backend", "torch", "--method", "tsit5", "--compile",
                 "--rtol", "1e-9", "--atol", "1e-11", "--t-end", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    traj = pcsim.Trajectory.from_npz(out)
    assert traj.meta["compile"] is True
    module, inputs, target = load_model_file("tied_autoencoder").build_model(seed=0)
    module, inputs, target = module.double(), tuple(x.double() for x in inputs), target.double()
    ref = pcsim.simulate(pcsim.trace(module, *inputs), inputs, target, t_end=2.0, record={"times": [2.0]},
                         solver=pcsim.Scipy("DOP853", rtol=1e-12, atol=1e-14))
    for name, v in ref.values.items():
        np.testing.assert_allclose(traj.values[name][-1], v[-1], rtol=0, atol=1e-7, err_msg=name)
    code = main(["simulate", "tied_autoencoder", "--backend", "scipy", "--compile", "--out", str(out)])
    assert code != 0
    assert "solver 'RK45' of backend 'scipy' takes no option compile" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_an_output_that_cannot_be_written_is_refused_before_the_run(tmp_path, capsys, where, monkeypatch):
    """--out under a file (or naming a folder) used to fail after the whole run, blamed on the model ("the model
    failed at pathlib.py:...") with pathlib's frame; now one line naming the flag, before anything runs."""
    (tmp_path / "taken").write_text("")
    out = tmp_path / "taken" / "run.npz" if where == "under_a_file" else tmp_path
    monkeypatch.setattr(pcsim, "simulate", lambda *a, **k: pytest.fail("the run should not start"))
    code = main(["simulate", "mlp", "--method", "euler", "--dt", "0.5", "--t-end", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"--out {out}" in err and "model failed" not in err and "pathlib" not in err, err


def test_a_write_that_fails_names_the_file_not_the_model(tmp_path, capsys, monkeypatch):
    def refuse(self, path):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(pcsim.Trajectory, "to_npz", refuse)
    out = tmp_path / "run.npz"
    code = main(["simulate", "mlp", "--method", "euler", "--dt", "0.5", "--t-end", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot write --out {out}: Permission denied" in err and "model failed" not in err, err


@pytest.mark.parametrize("plot", ["p.xyz", "p"])
def test_a_plot_format_matplotlib_lacks_is_refused_before_the_run(tmp_path, capsys, monkeypatch, plot):
    # before: the whole run, the .npz written, then matplotlib's "Format 'xyz' is not supported"
    monkeypatch.setattr(pcsim, "simulate", lambda *a, **k: pytest.fail("the run should not start"))
    code = main(["simulate", "mlp", "--out", str(tmp_path / "run.npz"), "--plot", str(tmp_path / plot)])
    err = capsys.readouterr().err
    assert code == 2 and f"--plot {tmp_path / plot}: the format is read from the file's suffix" in err, err
    assert ".png" in err and ".svg" in err and ".dot" not in err and not (tmp_path / "run.npz").exists()


def test_snapshots_beside_every_step_is_refused(tmp_path, capsys):
    # before: --snapshots 5 was ignored and every step recorded, exit 0
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "mlp", "--every-step", "--snapshots", "5", "--out", str(tmp_path / "run.npz")])
    assert exit_.value.code == 2
    assert "argument --snapshots: not allowed with argument --every-step" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, says", [
    ("--dt", "0", "argument --dt: must be a finite number > 0, got 0"),
    ("--t-end", "-1", "argument --t-end: must be a finite number > 0, got -1"),
    ("--tau-x", "inf", "argument --tau-x: must be a finite number > 0, got inf"),
    ("--tau-e", "-0.1", "argument --tau-e: must be a finite number >= 0, got -0.1"),
    ("--rtol", "nan", "argument --rtol: must be a finite number > 0, got nan"),
])
def test_a_bad_number_flag_is_the_flags_fault_not_the_model_files(tmp_path, capsys, monkeypatch, flag, value, says):
    # before: the run stopped inside simulate, reported as the model file's fault ('models/mlp.py: dt must be > 0')
    monkeypatch.setattr(pcsim, "simulate", lambda *a, **k: pytest.fail("the run should not start"))
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "mlp", flag, value, "--out", str(tmp_path / "run.npz")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and says in err and "mlp.py" not in err, err


def test_an_onset_after_the_end_is_the_flags_fault(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pcsim, "simulate", lambda *a, **k: pytest.fail("the run should not start"))
    code = main(["simulate", "mlp", "--t-on", "5", "--t-end", "2", "--out", str(tmp_path / "run.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "--t-on 5 must come before --t-end 2 (or pass --no-target)" in err and "mlp.py" not in err, err
