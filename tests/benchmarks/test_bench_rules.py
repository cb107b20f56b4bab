"""benchmarks/bench_rules.py's run control: a deadline (a lent machine's time is short) and --keep-going."""

import json

from tests.benchmarks.helpers import run


def test_a_short_deadline_lists_what_it_left_out(tmp_path):
    out = tmp_path / "rules"
    done = run("benchmarks/bench_rules.py", "--toy", "--models", "mlp", "rnn", "--rules", "bp",
               "--deadline-s", "0", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads(out.with_suffix(".json").read_text())
    assert table["models"] == []
    assert [m["model"] for m in table["not_measured"]] == ["mlp", "rnn"]
    assert "- rnn: the run's deadline (0 s) had passed" in out.with_suffix(".md").read_text()


def test_keep_going_lists_a_failing_model_with_its_error_and_goes_on(tmp_path):
    out = tmp_path / "rules"
    args = ("benchmarks/bench_rules.py", "--toy", "--reps", "1", "--budget-s", "1", "--rules", "bp",
            "--models", "no_such_model", "mlp", "--out", str(out))
    failed = run(*args)
    assert failed.returncode != 0 and "no_such_model" in failed.stderr  # without --keep-going: the error itself
    done = run(*args, "--keep-going")
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads(out.with_suffix(".json").read_text())
    assert [m["model"] for m in table["models"]] == ["mlp"]
    (left_out,) = table["not_measured"]
    assert left_out["model"] == "no_such_model" and "no_such_model" in left_out["reason"]
