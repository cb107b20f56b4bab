"""The `pcsim` command: `check` in-process and as a subprocess, its exit codes and error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pcsim.zoo import load_model_file
from tests.cli import run

REPO = Path(__file__).resolve().parents[2]
CONTRACT_KEYS = {"model", "rule", "loss", "dtype", "max_abs_diff", "max_rel_diff", "passed", "n_vertices",
                 "identity_vertices", "params"}



def check_json(argv, capsys) -> tuple[int, dict]:
    code, out, _ = run(["check", *argv, "--json"], capsys)
    return code, json.loads(out)  # json.loads fails if anything else reached stdout


def write_model(tmp_path, body: str, stem: str = "user_model") -> Path:
    path = tmp_path / f"{stem}.py"
    path.write_text(textwrap.dedent(body))
    return path


LINEAR_HEAD = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            {forward}

    def build(seed=0):
        torch.manual_seed(seed)
        return Net(), (torch.randn(4, 3),), torch.randn(4, 2)
"""


def test_check_mlp_prints_a_table_with_every_parameter(capsys):
    code, out, err = run(["check", "mlp"], capsys)
    assert code == 0, err
    module = load_model_file("mlp").build_model()[0]
    for name, _ in module.named_parameters():
        assert name in out
    assert "PASSED" in out and "zil" in out


def test_check_rnn_json_by_path_follows_the_contract(capsys):
    code, report = check_json([REPO / "models" / "rnn.py"], capsys)
    assert code == 0
    assert set(report) == CONTRACT_KEYS
    module = load_model_file("rnn").build_model()[0]
    assert list(report["params"]) == [n for n, _ in module.named_parameters()]
    assert all(set(d) == {"max_abs", "rel"} for d in report["params"].values())
    assert report["passed"] is True and report["max_rel_diff"] <= 1e-12
    assert (report["model"], report["rule"], report["loss"], report["dtype"]) == ("rnn", "zil", "mse", "float64")


def test_float32_reports_float32_and_passes(capsys):
    code, report = check_json(["rnn", "--dtype", "float32"], capsys)
    assert code == 0 and report["dtype"] == "float32" and report["passed"] is True


@pytest.mark.parametrize("rule", ["fa-zil", "fa-zil-autonomous"])
def test_fa_zil_rules_pass(capsys, rule):
    code, report = check_json(["rnn", "--rule", rule], capsys)
    assert code == 0 and report["rule"] == rule and report["passed"] is True


def test_il_runs_and_fails_with_exit_code_1(capsys):
    code, report = check_json(["rnn", "--rule", "il"], capsys)
    assert code == 1 and report["passed"] is False and report["max_rel_diff"] > 1e-12


def test_loss_and_seed_options_reach_the_check(capsys):
    code, report = check_json(["rnn", "--loss", "mse", "--seed", "3"], capsys)
    assert code == 0 and report["loss"] == "mse"


def test_a_users_model_file_works(tmp_path, capsys):
    path = write_model(tmp_path, """
        import torch
        from torch import nn

        def build(seed=0):
            gen = torch.Generator().manual_seed(seed)
            torch.manual_seed(seed)
            module = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
            return module, torch.randn(5, 4, generator=gen), torch.randn(5, 2, generator=gen)
    """)
    code, report = check_json([path], capsys)
    assert code == 0 and report["model"] == "user_model" and report["passed"] is True
    assert set(report["params"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_model_output_printed_during_build_does_not_spoil_json(tmp_path, capsys):
    path = write_model(tmp_path, LINEAR_HEAD.format(forward="return self.fc(x)").replace(
        "def build(seed=0):", "def build(seed=0):\n        print('building')"))
    code, report = check_json([path], capsys)
    assert code == 0 and report["passed"] is True


ERROR_MODELS = {
    "no_build": ("X = 1\n", "build"),
    "build_raises": ("def build(seed=0):\n    raise RuntimeError('boom in build')\n", "boom in build"),
    "no_derivative": (LINEAR_HEAD.format(forward="return torch.special.zeta(self.fc(x).exp() + 1, x.new_tensor(2.0))"),
                      "zeta"),
    "value_control_flow": (LINEAR_HEAD.format(forward="return self.fc(x) if x.sum() > 0 else -self.fc(x)"),
                           "could not be captured at value_control_flow.py:"),
    "forward_raises": (LINEAR_HEAD.format(forward="return self.fc(x)[:, [0, 9]]"), "IndexError"),
    "bad_input_shape": (LINEAR_HEAD.format(forward="return self.fc(x)").replace("randn(4, 3)", "randn(4, 5)"),
                        "could not be captured at bad_input_shape.py:"),
}


@pytest.mark.parametrize("kind", sorted(ERROR_MODELS))
def test_model_errors_exit_2_with_a_message_naming_the_file(tmp_path, capsys, kind):
    body, fragment = ERROR_MODELS[kind]
    path = write_model(tmp_path, body, stem=kind)
    code, out, err = run(["check", path, "--json"], capsys)
    assert code == 2 and out == ""
    first = err.splitlines()[0]
    assert first.startswith("pcsim: error: ") and path.name in first and fragment in first
    assert "Traceback" not in err
    # detail lines (the supported-op list, a hint) may follow, but only one line is the error itself
    assert sum(line.startswith("pcsim: error:") for line in err.splitlines()) == 1


@pytest.mark.parametrize("model", ["missing.py", "no_such_zoo_model"])
def test_missing_model_exits_2_on_one_line(tmp_path, capsys, model):
    target = tmp_path / model if model.endswith(".py") else model
    code, out, err = run(["check", target], capsys)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("pcsim: error: ") and model in err and "mlp" in err


@pytest.mark.parametrize("argv", [["check", "mlp", "--rule", "nope"], ["check", "mlp", "--dtype", "float16"],
                                  ["check"], ["check", "mlp", "--bogus"], []])
def test_usage_errors_exit_2(capsys, argv):
    code, out, _ = run(argv, capsys)
    assert code == 2 and out == ""


def test_python_dash_m_pcsim_as_a_subprocess():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "pcsim", "check", "models/rnn.py", "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == CONTRACT_KEYS and report["passed"] is True
    failed = subprocess.run([sys.executable, "-m", "pcsim", "check", "missing_model.py"], cwd=REPO,
                            capture_output=True, text=True, timeout=300, env=env)
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.startswith("pcsim: error:") and "missing_model.py" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "pcsim"
    if not script.exists():
        pytest.skip("no pcsim console script next to this interpreter")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("usage: pcsim")


def test_check_fused_runs_one_vertex_per_recurrent_layer(capsys):
    code, out, err = run(["check", "gru", "--fused", "--rule", "fa-zil-wavefront", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["passed"] and report["n_vertices"] < 10  # unrolled, the GRU has hundreds
    code, _, err = run(["check", "--all", "--fused"], capsys)
    assert code == 2 and "--fused goes with one MODEL" in err


def test_every_flag_of_every_command_has_help_that_states_its_default():
    # before: train's --rule, --epochs, --lr, --optimizer, --momentum, --dtype (float32, where check's is
    # float64) ... and simulate's --backend, --plasticity, --dtype had no help, so no default, in --help
    import argparse

    from pcsim.cli import _parser

    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = []
    for command, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            default = action.default
            forms = {str(default)} | ({f"{default:g}", f"{default:g}".replace("e-0", "e-")}
                                      if isinstance(default, float) else set())
            stated = (default in (None, False) or isinstance(default, list)
                      or any(form in (action.help or "") for form in forms))
            if not action.help or not stated:
                missing.append(f"{command} {'/'.join(action.option_strings) or action.dest} (default {default!r})")
    assert not missing
