"""pcsim.paths: the zoo, figure and build folders come from a flag, an environment variable or the current
directory, never from where the package's files are; `import pcsim` leaves sys.path alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pcsim import paths
from pcsim.cli import main
from pcsim.zoo import load_model_file, zoo_dir, zoo_names

PACKAGE = Path(__file__).resolve().parents[1] / "pcsim"

ONE_FILE_MODEL = """
    import torch
    from torch import nn

    def build(seed=0):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), torch.randn(5, 3), torch.randn(5, 2)
"""


@pytest.fixture
def zoo(tmp_path):
    """A zoo folder with one model file, `tiny`."""
    folder = tmp_path / "my zoo"
    folder.mkdir()
    (folder / "tiny.py").write_text(textwrap.dedent(ONE_FILE_MODEL))
    return folder


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_env_var_names_the_zoo(zoo, monkeypatch, capsys):
    monkeypatch.setenv("PCSIM_MODELS", str(zoo))
    assert zoo_dir() == zoo and zoo_names() == ["tiny"]
    code, out, err = run(["check", "tiny", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["model"] == "tiny"


def test_the_flag_names_the_zoo_and_beats_the_env_var(zoo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PCSIM_MODELS", str(tmp_path / "elsewhere"))
    for command in (["check", "tiny", "--json"], ["graph", "tiny"]):
        code, out, err = run([*command, "--models-dir", zoo], capsys)
        assert code == 0, err
    assert zoo_dir() == tmp_path / "elsewhere"  # the flag holds for its command only


def test_the_default_is_models_under_the_current_directory(zoo, monkeypatch):
    monkeypatch.delenv("PCSIM_MODELS", raising=False)
    monkeypatch.chdir(zoo.parent)
    zoo.rename(zoo.parent / "models")
    assert zoo_dir() == Path("models")
    assert load_model_file("tiny").path == (zoo.parent / "models" / "tiny.py").resolve()


@pytest.mark.parametrize("how", ["default", "env", "flag"])
def test_a_missing_zoo_folder_says_which_setting_to_use(how, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no ./models here
    monkeypatch.delenv("PCSIM_MODELS", raising=False)
    argv = ["check", "mlp"]
    if how == "env":
        monkeypatch.setenv("PCSIM_MODELS", str(tmp_path / "no_such_zoo"))
    if how == "flag":
        argv += ["--models-dir", tmp_path / "no_such_zoo"]
    code, out, err = run(argv, capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith("pcsim: error: no models folder: ")
    assert "PCSIM_MODELS=DIR" in err and "--models-dir DIR" in err
    assert {"default": "./models (the default)", "env": "$PCSIM_MODELS=", "flag": "--models-dir "}[how] in err
    if how != "flag":  # the same error from Python
        with pytest.raises(paths.FolderNotFound, match="PCSIM_MODELS"):
            zoo_names()


def test_a_missing_figures_folder_says_which_setting_to_use(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PCSIM_FIGURES", raising=False)
    code, _, err = run(["figures", "--only", "fig1"], capsys)
    assert code == 2 and "PCSIM_FIGURES=DIR" in err and "--dir DIR" in err and "Traceback" not in err


FIGURE = """
    from matplotlib.figure import Figure

    from ._common import label  # the helper beside the script, without sys.path

    CONFIG = {"n": 3}
    SMOKE = {"n": 2}

    def compute(config):
        return {"x": list(range(config["n"]))}

    def plot(data):
        fig = Figure()
        fig.add_subplot().plot(data["x"], label=label())
        return fig
"""

COMMON = """
    import json
    from pathlib import Path

    def label():
        return "from _common"

    def save(name, fig, config, data, smoke):
        folder = Path(__file__).parent / "out"
        folder.mkdir(exist_ok=True)
        fig.savefig(folder / f"{name}.png")
        (folder / f"{name}.json").write_text(json.dumps({"config": config, "smoke": smoke}))
        return folder / f"{name}.png"
"""


def test_the_figures_flag_and_env_var_run_another_folder_without_touching_sys_path(tmp_path, monkeypatch, capsys):
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "fig9_test.py").write_text(textwrap.dedent(FIGURE))
        (folder / "_common.py").write_text(textwrap.dedent(COMMON))
    before = list(sys.path)
    code, out, err = run(["figures", "--dir", tmp_path / "one", "--smoke"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "one" / "out" / "fig9.json").read_text()) == {"config": {"n": 2}, "smoke": True}
    monkeypatch.setenv("PCSIM_FIGURES", str(tmp_path / "two"))
    code, out, err = run(["figures"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "two" / "out" / "fig9.json").read_text())["config"] == {"n": 3}
    assert sys.path == before


def test_import_pcsim_does_not_modify_sys_path(tmp_path):
    probe = ("import sys; before = list(sys.path); import pcsim, pcsim.cli, pcsim.zoo, pcsim.paths; "
             "from pcsim.backends.brian2 import runner; print(sys.path == before)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "True"


def test_the_package_does_not_look_for_the_repository_next_to_its_files():
    reaching = re.compile(r"sys\.path\.(insert|append)|pcsim\.__file__|parents\[[2-9]\]|\.parent\.parent")
    found = [f"{p.relative_to(PACKAGE)}:{i}: {line.strip()}" for p in sorted(PACKAGE.rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1) if reaching.search(line)]
    assert not found, "\n".join(found)
