"""benchmarks/device_check.py, the script a lent GPU runs once: its smoke run on the CPU, end to end.

No GPU has been lent so far, so the CUDA run itself is untested; this keeps every path it takes
working on the CPU (equivalence against autograd, the timing tables, the deadline, the outputs
written under --out, where the device tool collects them) so that the one run on a GPU is not spent
on a broken script.
"""

import json
import sys
import tarfile

import pytest
import torch

from pcsim.numerics import tolerance
from tests.benchmarks.helpers import REPO, run

pytestmark = pytest.mark.slow


def test_smoke_run_checks_every_rule_against_autograd_and_writes_its_tables(tmp_path):
    out = tmp_path / "out"
    done = run("benchmarks/device_check.py", "--smoke", "--out", str(out), "--device", "cpu", "--archive")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the device tool returns at most 8 files: --archive leaves two, the tables packed
    assert sorted(f.name for f in out.iterdir()) == ["device_check.tar.gz", "device_check_all.md"]
    with tarfile.open(out / "device_check.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    assert {f.name for f in tmp_path.iterdir() if f.is_file()} == {
        f"{stem}.{ext}" for stem in ("device_check", "rules_cpu", "rules_cpu_compiled", "brian2_throughput_quick")
        for ext in ("json", "md")}
    every_md = (out / "device_check_all.md").read_text()
    assert all((tmp_path / f"{stem}.md").read_text() in every_md
               for stem in ("device_check", "rules_cpu", "rules_cpu_compiled", "brian2_throughput_quick"))

    rows = json.loads((tmp_path / "device_check.json").read_text())["rows"]
    archs = {(r["arch"], r["dtype"]) for r in rows}
    assert archs == {(a, d) for a in ("mlp_tanh_bias", "rnn_shared", "residual_block", "lstm (fused)", "gru (fused)")
                     for d in ("float64", "float32")}
    for r in rows:  # the oracle is autograd, inside pcsim.check; the tolerance is the suite's
        assert r["max_rel_diff"] <= tolerance(getattr(torch, r["dtype"])), r
        assert r["ok"]
    assert (tmp_path / "device_check.md").read_text().count("| ok |") == len(rows)

    table = json.loads((tmp_path / "rules_cpu.json").read_text())
    measured = {m["model"]: m["rules"] for m in table["models"]}
    assert set(measured) == {"mlp", "rnn", "lstm, fused layers"}
    for model, rules in measured.items():
        expected = {"bp", "bp-graph", "zil", "fa-zil-wavefront"} | ({"fa-zil-autonomous"} if "fused" not in model
                                                                     else set())
        assert set(rules) == expected, model
        assert rules["bp"]["ratio_to_bp"] == 1.0 and rules["bp"]["peak_mem_ratio"] == 1.0
        assert all(r["runs"] == 2 and r["median_ms"] > 0 for r in rules.values())
    compiled = json.loads((tmp_path / "rules_cpu_compiled.json").read_text())
    assert set(compiled["models"][0]["rules"]) == {"bp", "fa-zil-wavefront", "fa-zil-wavefront-compiled"}
    assert "compile and run fa-zil-wavefront-compiled" in done.stdout  # the first call did compile
    ode = json.loads((tmp_path / "brian2_throughput_quick.json").read_text())["results"]
    assert [r["label"] for r in ode] == ["scipy LSODA", "torch Euler"]
    assert all(r["warm_s"] > 0 for r in ode) and ode[1]["max_abs_diff_to_torch_euler"] == 0.0


def test_an_architecture_that_raises_is_a_failing_row_and_the_check_goes_on():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import device_check

    def broken():
        raise RuntimeError("no kernel for this op on this device\nmore lines")

    row = device_check._row(torch.device("cpu"), torch.float64, "arch", broken, ("zil",))
    assert not row["ok"] and row["error"] == "RuntimeError: no kernel for this op on this device"
    assert device_check._row(torch.device("cpu"), torch.float32, "arch", lambda: 1e-6, ("zil",))["ok"]
    assert not device_check._row(torch.device("cpu"), torch.float32, "arch", lambda: 1e-4, ("zil",))["ok"]
