"""`pcsim demo`: the files it writes, its table, and that a deviating exact rule fails it.

Oracles: torch autograd (inside pcsim.check and the training loop) for the verdicts; the planted
mutation (Z-IL with gamma = 0.5 scales level d's update by 0.5^d, far from autograd) for the
failure path. The demo runs in its --quick mode here; `make demo` runs the full one.
"""

from __future__ import annotations

import pytest

import pcsim.table
from pcsim.cli.demo import STAGES
from pcsim.demo import QUICK
from tests.cli import run


def table_rows(out: str) -> dict[str, str]:
    """model -> its line of the printed table."""
    return {line.split()[0]: line for line in out.splitlines()
            if line.startswith("  ") and line.split() and line.split()[0] in QUICK.models and "vertices" not in line
            and line.rstrip().endswith(("exact", "DEVIATES"))}


@pytest.mark.slow
def test_quick_demo_writes_the_summary_figures_and_table(tmp_path, capsys):
    code, out, err = run(["demo", "--quick", "--out", tmp_path], capsys)
    assert code == 0, out + err
    for name in ("summary.md", "zoo_table.md", "dynamics.png", "training.png"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    rows = table_rows(out)
    assert set(rows) == set(QUICK.models) and all(r.endswith("exact") for r in rows.values())
    summary = (tmp_path / "summary.md").read_text()
    assert "![value and error populations](dynamics.png)" in summary and "](training.png)" in summary
    for model in QUICK.models:
        assert f"| {model} |" in summary
    # it ends by naming every file it wrote, and says it passed
    tail = out[out.index("Wrote 4 files:"):]
    for name in ("summary.md", "zoo_table.md", "dynamics.png", "training.png"):
        assert str(tmp_path / name) in tail
    assert "every exact rule matched backprop" in out.splitlines()[-1]
    assert "Traceback" not in out + err
    for stage in ("[1/3]", "[2/3]", "[3/3]"):
        assert stage in out


def test_a_deviating_zil_row_is_reported_and_fails_the_demo(tmp_path, capsys, monkeypatch):
    # planted mutation: Z-IL without C3 (gamma = 0.5) is far from autograd on every model deeper than one level
    monkeypatch.setitem(pcsim.table.COLUMNS, "Z-IL", ("zil", {"gamma": 0.5}, True))
    code, out, err = run(["demo", "--quick", "--only", "table", "--out", tmp_path], capsys)
    assert code == 1
    rows = table_rows(out)
    assert set(rows) == set(QUICK.models) and all(r.endswith("DEVIATES") for r in rows.values())
    assert "FAILED" in out and "mlp: an exact rule deviates from autograd" in out
    assert "FAILED" in (tmp_path / "summary.md").read_text()
    assert "Traceback" not in out + err


def test_missing_brian2_is_one_clear_line(tmp_path, capsys, monkeypatch):
    from pcsim.backends.brian2 import runner

    def unavailable():
        raise runner.Brian2Unavailable("the brian2 backend needs Brian2, which could not be imported "
                                       "(No module named 'brian2'); install it")

    monkeypatch.setattr(runner, "import_brian2", unavailable)
    code, out, err = run(["demo", "--quick", "--only", "dynamics", "--out", tmp_path], capsys)
    assert code == 0, out + err
    skipped = [line for line in out.splitlines() if "Brian2" in line and "skipped" in line]
    assert len(skipped) == 1 and "not installed" in skipped[0] and "make install" in skipped[0]
    assert (tmp_path / "dynamics.png").is_file()
    assert "Euler at dt = tau_x with Z-IL gates (scipy)" in out and "(brian2)" not in out


def test_an_unexpected_error_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    import pcsim.training.data

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(pcsim.training.data, "load_dataset", broken)
    code, out, err = run(["demo", "--quick", "--only", "training", "--out", tmp_path], capsys)
    assert code == 1
    assert "could not finish: RuntimeError: disk on fire" in out and "second line" not in out
    assert "Traceback" not in out + err
    assert (tmp_path / "summary.md").is_file()


@pytest.mark.parametrize("only", ["nope", "table,bogus", ","])
def test_only_takes_known_stages(tmp_path, capsys, only):
    code, out, err = run(["demo", "--only", only, "--out", tmp_path], capsys)
    assert code == 2 and out == ""
    assert err.startswith("pcsim: error: --only") and ",".join(STAGES) in err


def test_an_out_path_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, out, err = run(["demo", "--out", blocker / "sub"], capsys)
    assert code == 2 and out == "" and err.startswith("pcsim: error: cannot write to --out") and "Traceback" not in err
