"""`pcsim bench`: the benchmark as a command, its tables in the folder named."""

import json

import pytest

from pcsim.cli import main


def test_bench_writes_the_tables_for_the_rules_asked(tmp_path, capsys):
    code = main(["bench", "--toy", "--models", "mlp", "--rules", "fa-zil-wavefront", "--reps", "2",
                 "--budget-s", "5", "--out", str(tmp_path)])
    assert code == 0
    table = json.loads((tmp_path / "rules_cpu.json").read_text())
    (row,) = table["models"]
    assert row["model"] == "mlp" and set(row["rules"]) == {"bp", "fa-zil-wavefront"}  # BP: always the baseline
    assert row["rules"]["bp"]["ratio_to_bp"] == 1.0 and row["rules"]["bp"]["runs"] == 2
    wave = row["rules"]["fa-zil-wavefront"]
    assert wave["median_ms"] > 0 and 0 < wave["ratio_to_bp"] < 100 and wave["peak_mem_mb"] > 0
    markdown = (tmp_path / "rules_cpu.md").read_text()
    assert "| mlp |" in markdown and "fa-zil-wavefront" in markdown
    assert str(tmp_path / "rules_cpu.md") in capsys.readouterr().out


def test_bench_refuses_an_unknown_model_before_measuring(tmp_path, capsys):
    code = main(["bench", "--models", "mlp", "no_such_net", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "no_such_net" in err and "mlp" in err
    assert not any(tmp_path.iterdir())


def test_help_lists_bench_as_a_working_command(capsys):
    try:
        main(["--help"])
    except SystemExit:
        pass
    text = capsys.readouterr().out
    assert "bench" in text and "not available" not in text


@pytest.mark.parametrize("flag,value", [("--reps", "0"), ("--reps", "-2"), ("--batch", "0"), ("--threads", "0"),
                                        ("--budget-s", "0")])
def test_bench_refuses_a_count_that_is_not_positive_before_measuring(flag, value, tmp_path, capsys):
    # before: --reps 0 failed after the warm-ups with "no median for empty data"; --batch 0 and --threads 0
    # were taken as "not given" and measured the default batch and threads silently
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--toy", "--models", "mlp", "--rules", "zil", flag, value, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and flag in err and "must be > 0" in err
    assert not any(tmp_path.iterdir())


def test_bench_refuses_an_out_that_is_a_file_and_a_foreign_table_to_append_to_before_measuring(tmp_path, capsys):
    # before: the model was measured, then writing its table failed with a raw pathlib stack
    # ("the model failed at pathlib.py: FileExistsError"); a broken JSON was a bare JSONDecodeError
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    args = ["bench", "--toy", "--models", "mlp", "--rules", "zil", "--reps", "1"]
    assert main([*args, "--out", str(a_file)]) == 2
    captured = capsys.readouterr()
    assert f"--out {a_file} is a file" in captured.err and "warm-up" not in captured.out
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "rules_cpu.json").write_text("{not json")
    assert main([*args, "--append", "--out", str(tmp_path / "tables")]) == 2
    captured = capsys.readouterr()
    assert "rules_cpu.json is not a table pcsim bench wrote" in captured.err and "warm-up" not in captured.out


@pytest.mark.parametrize("args,expected", [
    (["--device", "gpu"], "--device: 'gpu' is not a torch device"),
    (["--device", "mps"], "--device: must be cpu or cuda, got mps"),
    (["--device", "cuda:99"], "--device: cuda:99"),
    (["--deadline-s", "-5"], "--deadline-s: must be >= 0, got -5"),
    (["--deadline-s", "nan"], "--deadline-s: must be >= 0, got nan"),
])
def test_bench_refuses_a_device_or_deadline_it_cannot_use_before_measuring(args, expected, tmp_path, capsys):
    # before: --device gpu and --device cuda (no CUDA) stopped in the first model's setup, printed as 'the model
    # failed: RuntimeError: Expected one of cpu, cuda, ...'; --deadline-s -5 measured nothing and exited 0
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--toy", "--models", "mlp", "--rules", "zil", *args, "--out", str(tmp_path)])
    assert exit_.value.code == 2 and expected in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flag", ["--models", "--rules"])
def test_bench_refuses_an_empty_selection(flag, tmp_path, capsys):
    # before: '--rules' with nothing after it timed BP alone, '--models' alone measured the whole zoo; exit 0
    rest = {"--models": ["--rules", "zil"], "--rules": ["--models", "mlp"]}[flag]
    code = main(["bench", "--toy", *rest, flag, "--reps", "1", "--out", str(tmp_path)])
    assert code == 2 and f"{flag} names nothing" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
