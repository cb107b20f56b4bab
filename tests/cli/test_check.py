"""`pcsim check --all` (the paper's Table 1), in-process.

Expectations come from autograd (through pcsim.check) and from the models' structure: a skip
connection must make unlevelled Z-IL diverge; a levelled graph must be exact.
"""

from __future__ import annotations

import re

import pytest

from pcsim.table import COLUMNS, markdown, zoo_row, zoo_table
from tests.cli import run

pytestmark = pytest.mark.usefixtures("one_thread")



def table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("model",) and not cells[0].startswith("---"):
            rows[cells[0]] = cells
    return rows


def test_check_all_on_a_few_models_writes_the_table(tmp_path, capsys):
    out_md = tmp_path / "table.md"
    code, out, err = run(["check", "--all", "--models", "residual_mlp,tied_autoencoder,rnn", "--table", out_md],
                         capsys)
    assert code == 0, err
    assert out_md.read_text() == out
    header = next(line for line in out.splitlines() if line.startswith("| model"))
    assert all(column in header for column in COLUMNS)
    rows = table_rows(out)
    assert list(rows) == ["residual_mlp", "tied_autoencoder", "rnn"]
    cols = [c.strip() for c in header.strip().strip("|").split("|")]
    res = dict(zip(cols, rows["residual_mlp"], strict=True))
    assert res["identity"] == "1"
    for column in ("Z-IL", "Fa-Z-IL wavefront", "Fa-Z-IL autonomous"):
        for row in rows.values():
            assert float(dict(zip(cols, row, strict=True))[column]) <= 1e-12
    assert float(res["Z-IL unlevelled"]) > 1e-6  # the skip connection: exact only once levelled
    tied = dict(zip(cols, rows["tied_autoencoder"], strict=True))
    assert tied["identity"] == "0" and float(tied["Z-IL unlevelled"]) <= 1e-12
    assert "residual_mlp: Z-IL max relative deviation" in err  # progress goes to stderr
    assert re.search(r"Wall time for the whole table: \d+ s", out)


def test_zoo_row_at_reduced_size_and_markdown():
    row = zoo_row("densenet_block", dims=dict(input_shape=(3, 6, 6), stem=3, num_layers=3, growth=2, bn_size=1,
                                               batch=1))
    assert row.passed and row.identity > 0 and row.vertices > 0 and row.depth > 0
    assert row.deviation["Z-IL unlevelled"] > 1e-6
    assert set(row.seconds) == set(COLUMNS) and row.total_seconds >= sum(row.seconds.values())
    text = markdown([row])
    assert "| densenet_block |" in text and "Every levelled rule is within the tolerance" in text
    rows = zoo_table(["residual_mlp"], columns=["Z-IL"])
    assert list(rows[0].deviation) == ["Z-IL"]
    with pytest.raises(ValueError, match="unknown column"):
        zoo_table(["residual_mlp"], columns=["BP"])


@pytest.mark.parametrize(("argv", "fragment"), [
    (["check", "--all", "mlp"], "takes no MODEL"),
    (["check", "mlp", "--table", "x.md"], "go with --all"),
    (["check"], "needs a MODEL"),
    (["check", "--all", "--models", "no_such_model"], "no_such_model"),
])
def test_check_all_usage_errors(capsys, argv, fragment):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == "" and fragment in err and "Traceback" not in err


@pytest.mark.parametrize("flags, message", [
    # before: checked no model and said "Every levelled rule is within the tolerance on every model", exit 0
    (["--models", ","], "--models ',' names no model"),
    # before: torch's "set_num_threads expects a positive integer", printed as the model's failure
    (["--models", "mlp", "--threads", "0"], "argument --threads: must be > 0, got 0"),
    # before: the whole table ran, then pathlib's IsADirectoryError, printed as the model's failure
    (["--models", "mlp", "--table", "{tmp}"], "--table {tmp} is a folder: name a file in it"),
])
def test_check_all_refuses_what_it_cannot_do_before_the_run(tmp_path, capsys, monkeypatch, flags, message):
    import pcsim.table

    monkeypatch.setattr(pcsim.table, "zoo_table", lambda *a, **k: pytest.fail("the table should not run"))
    code, _, err = run(["check", "--all", *(f.format(tmp=tmp_path) for f in flags)], capsys)
    assert code == 2 and message.format(tmp=tmp_path) in err, err


def test_check_all_refuses_a_misspelt_model_before_running_the_others(capsys, monkeypatch):
    """`--models residual_mlp,no_such_model` checked residual_mlp (at full size, minutes for the larger models)
    before it found the second name missing and stopped with exit 2: every name is resolved first."""
    import pcsim.table

    monkeypatch.setattr(pcsim.table, "zoo_row", lambda *a, **k: pytest.fail("no model should run"))
    code, out, err = run(["check", "--all", "--models", "residual_mlp,no_such_model"], capsys)
    assert code == 2 and out == "" and "no zoo model named 'no_such_model'" in err and "Traceback" not in err
