"""Every figure script runs end to end at its smoke size (`pcsim figures --smoke`)."""

import json

import pytest

from pcsim.cli import main
from pcsim.cli.figures import figures_dir

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


@pytest.mark.parametrize("only, unknown", [("fig99", "fig99"), ("fig7,fgi3", "fgi3"), (",", None)])
def test_unknown_figure_is_a_clear_error(capsys, only, unknown):
    # before: a misspelt name beside a known one was dropped, the known one ran, exit 0
    assert main(["figures", "--smoke", "--only", only]) == 2
    captured = capsys.readouterr()
    assert f"names no figure {unknown};" in captured.err if unknown else "names none;" in captured.err
    assert "the figures are fig1, fig2, fig3, fig4, fig5, fig6, fig7" in captured.err and not captured.out


def test_a_folder_without_figure_scripts_is_a_clear_error(capsys, tmp_path):
    # before: --dir naming a folder with no fig*.py (a typo, the repository root) wrote '0 of 0 figure(s)', exit 0
    (tmp_path / "notes.py").write_text("")
    assert main(["figures", "--smoke", "--dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert f"{tmp_path} holds no figure script (fig*.py)" in captured.err and not captured.out


def test_timing_figure_data_is_exact_on_its_diagonal():
    """The figure shows what the analysis computes: only k = 0 is at rounding level."""
    import numpy as np

    from pcsim.cli.figures import _load

    module = _load(figures_dir() / "fig7_timing_sensitivity.py")
    data = module.compute(module.SMOKE)
    m = np.asarray(data["matrix"])
    k0 = data["offsets"].index(0)
    assert np.all(m[:, k0] <= 1e-12) and np.all(np.delete(m, k0, axis=1)[~np.isnan(np.delete(m, k0, axis=1))] > 1e-6)


def _figure(name):
    from pcsim.cli.figures import _load

    return _load(next(figures_dir().glob(f"{name}_*.py")))


def test_residual_graph_figure_levels_the_skip_edge():
    """fig1: as traced, the skip edge spans two levels and Z-IL is off; levelled, one identity
    vertex and Z-IL equals autograd (pcsim.check's oracle)."""
    import torch

    from pcsim.numerics import tolerance

    module = _figure("fig1")
    data = module.compute(module.SMOKE)
    traced, levelled = data["panels"]["as traced"], data["panels"]["levelled"]
    lay = levelled["layout"]
    assert [v for v in lay["names"] if lay["kind"][v] == "identity"] == ["tanh__level2"]
    assert all(lay["column"][c] - lay["column"][p] == 1 for p, c in lay["edges"] if lay["kind"][p] != "input"
               and lay["kind"][p] != "clamped")
    assert ("tanh", "add") in traced["layout"]["edges"]
    assert traced["layout"]["column"]["add"] - traced["layout"]["column"]["tanh"] == 2
    assert levelled["zil_deviation"] <= tolerance(torch.float64) < 1e-6 < traced["zil_deviation"]
    fig = module.plot(data)
    assert len(fig.axes) == 2 and any("exact" in t.get_text() for t in fig.axes[1].texts)


def test_divergence_figure_numbers_are_pcsim_check_all_numbers(capsys):
    """fig2's numbers and `pcsim check --all`'s table agree (both come from pcsim.table)."""
    models = ["residual_mlp", "tied_autoencoder"]
    module = _figure("fig2")
    data = module.compute({"models": models, "dims": {}, "dtype": "float64"})
    assert main(["check", "--all", "--models", ",".join(models)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    table = {cells[0]: dict(zip(header, cells, strict=True))
             for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:])}
    for row in data["rows"]:
        for column, value in row["deviation"].items():
            assert table[row["model"]][column] == f"{value:.1e}", (row["model"], column)
    assert data["rows"][0]["deviation"]["Z-IL unlevelled"] > 1e-6 >= data["rows"][0]["deviation"]["Z-IL"]
    module.plot({**data, "rows": [{**data["rows"][0], "deviation": {"Z-IL unlevelled": float("inf")}}]})


def test_timing_figure_full_config_needs_the_benchmark_json(tmp_path):
    module = _figure("fig6")
    with pytest.raises(Exception, match=r"no_such\.json is missing: run `make bench`"):
        module.compute({"source": str(tmp_path / "no_such.json")})


def test_timing_figure_draws_the_benchmark_schema(tmp_path):
    """A file in the benchmark's schema: one bar per model and rule, memory panel when measured."""
    rule = {"median_ms": 2.0, "ratio_to_bp": 2.0, "peak_mem_mb": 3.0, "peak_mem_ratio": 1.5, "runs": 3}
    bench = {"machine": {"cpu": "test cpu", "cores": 2}, "dtype": "float64", "created": "now", "method": "m",
             "models": [{"model": m, "batch": 2, "depth": 3,
                         "rules": {"bp": {**rule, "ratio_to_bp": 1.0}, "zil": rule, "il-T5": rule, "new-rule": rule}}
                        for m in ("a", "b")]}
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(bench))
    module = _figure("fig6")
    fig = module.plot(module.compute({"source": str(path)}))
    time_ax, memory_ax = fig.axes
    assert len(time_ax.patches) == 2 * 3 and len(memory_ax.patches) == 2 * 3  # bp is the 1x line, not a bar
    assert "test cpu" in fig.get_suptitle() and "new-rule" in [t.get_text() for t in time_ax.get_legend().texts]


def test_each_script_runs_on_its_own_with_smoke(capsys):
    """`python figures/fig1_residual_graph.py --smoke` is `pcsim figures --smoke --only fig1_residual_graph`."""
    from pcsim.cli.figures import _load

    common = _load(figures_dir() / "_common.py")
    assert common.script_main(str(figures_dir() / "fig1_residual_graph.py"), ["--smoke"]) == 0
    assert "out/smoke/fig1.png" in capsys.readouterr().out
    for path in figures_dir().glob("fig*.py"):
        assert 'if __name__ == "__main__":' in path.read_text(), path.name
