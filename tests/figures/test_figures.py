"""Every figure script runs end to end at its smoke size (`pcsim figures --smoke`)."""

import json

import pytest

from pcsim.cli import main
from pcsim.cli_figures import figures_dir

SCRIPTS = sorted(p.stem.split("_")[0] for p in figures_dir().glob("fig*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_figure_smoke(name, capsys):
    code = main(["figures", "--smoke", "--only", name])
    out, err = capsys.readouterr()
    assert code == 0, err
    png = figures_dir() / "out" / "smoke" / f"{name}.png"
    meta = json.loads(png.with_suffix(".json").read_text())
    assert png.stat().st_size > 5_000 and meta["smoke"] and meta["versions"]["pcsim"]


def test_unknown_figure_is_a_clear_error(capsys):
    assert main(["figures", "--only", "fig99"]) == 2
    assert "no figure matches" in capsys.readouterr().err


def test_timing_figure_data_is_exact_on_its_diagonal():
    """The figure shows what the analysis computes: only k = 0 is at rounding level."""
    import numpy as np

    from pcsim.cli_figures import _load

    module = _load(figures_dir() / "fig7_timing_sensitivity.py")
    data = module.compute(module.SMOKE)
    m = np.asarray(data["matrix"])
    k0 = data["offsets"].index(0)
    assert np.all(m[:, k0] <= 1e-12) and np.all(np.delete(m, k0, axis=1)[~np.isnan(np.delete(m, k0, axis=1))] > 1e-6)
