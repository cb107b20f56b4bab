"""GPU check (issues 6 and 8): the exact rules against autograd on the device, then the timing table.

On a lent GPU machine, as one call (its python3 holds torch; Brian2 and mlxtend, absent there, are
not needed here):

    PYTHONUNBUFFERED=1 python3 benchmarks/device_check.py --out "$OUT" --archive

(`--archive`: OUT gets the tables as device_check.tar.gz, unpacked into benchmarks/results to
commit them, and all their markdown in device_check_all.md; the tool returns at most 8 files.)

1. Equivalence: every architecture of tests/equivalence in float64 and float32, Z-IL and both
   Fa-Z-IL modes against autograd, and the zoo's LSTM and GRU traced with fused layers (cuDNN's
   kernel); written to OUT/device_check.{json,md}. The exit status is 1 if any misses its tolerance.
2. Timing (bench_rules.py): every zoo model, every rule but IL at T = 100, cheapest models first, so
   a short lease still measures the small ones; OUT/rules_cuda.{json,md}, the fused LSTM and GRU
   appended; then the compiled wavefront on the per-gate LSTM and GRU and on ResNet-18 (whose
   inductor options, batch norm's layout choice, were measured on the CPU only),
   OUT/rules_cuda_compiled.
3. ODE throughput (brian2_throughput.py): torch Euler on the GPU and on the CPU, and scipy's LSODA,
   on the 784-256-256-10 network; OUT/brian2_throughput_cuda.{json,md}.
Nothing new starts after --deadline-s; what that leaves out is listed as not measured, and a model
that fails is listed with its error while the others go on.

Without a GPU the same equivalence runs on the CPU, and the timing is bench_rules.py's MLP row, printed,
not written (the CPU tables come from `make bench`). `--smoke` (the test suite's): toy sizes, a few architectures,
two repetitions, the GPU's timing path run on the CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_rules  # noqa: E402
import brian2_throughput  # noqa: E402

import pcsim  # noqa: E402
from pcsim.numerics import tolerance  # noqa: E402
from pcsim.zoo import load_model_file  # noqa: E402
from tests.equivalence.archs import ARCHS  # noqa: E402

EXACT_RULES = ["zil", "fa-zil-wavefront", "fa-zil-autonomous"]
# Cheapest first: when the lease runs short, the models left out are the big image ones.
DEVICE_ORDER = ("mlp", "rnn", "lstm", "gru", "tied_autoencoder", "residual_mlp", "cnn", "transformer",
                "alexnet", "resnet18", "densenet_block")
SMOKE_ARCHS = ("mlp_tanh_bias", "rnn_shared", "residual_block")


def equivalence(device: torch.device, archs) -> list[dict]:
    """Worst relative difference to autograd over the exact rules, per architecture and dtype."""
    rows = []
    for dtype in (torch.float64, torch.float32):
        for arch in archs:
            def worst(arch=arch, dtype=dtype):
                module, inputs, target = ARCHS[arch](dtype, "mse")
                module, inputs, target = module.to(device), tuple(x.to(device) for x in inputs), target.to(device)
                return max(r.max_rel_diff for r in pcsim.check_rules(module, inputs, target, EXACT_RULES, dtype=dtype))

            rows.append(_row(device, dtype, arch, worst, EXACT_RULES))
    return rows


def fused_equivalence(device: torch.device, batch: int = 16) -> list[dict]:
    """The zoo's LSTM and GRU traced with fused layers (cuDNN's kernel on CUDA in float32)."""
    rows = []
    rules = ["zil", "fa-zil-wavefront"]
    for dtype in (torch.float64, torch.float32):
        for name in ("lstm", "gru"):
            def worst(name=name, dtype=dtype):
                spec = load_model_file(name)
                module, inputs, target = spec.build_model(0, batch=batch)
                module, inputs, target = module.to(device), tuple(x.to(device) for x in inputs), target.to(device)
                return max(r.max_rel_diff for r in pcsim.check_rules(module, inputs, target, rules, loss=spec.loss,
                                                                      dtype=dtype, fused=True))

            rows.append(_row(device, dtype, f"{name} (fused)", worst, rules))
    return rows


def _row(device: torch.device, dtype: torch.dtype, arch: str, worst, rules) -> dict:
    """One table row from `worst()`; an exception there is a FAIL with its message, and the run goes on."""
    try:
        diff, error = worst(), ""
    except Exception as e:  # noqa: BLE001 - reported as a failing row: the timing after it still runs
        diff, error = float("nan"), f"{type(e).__name__}: {e}".splitlines()[0]
    row = {"device": device.type, "dtype": str(dtype).removeprefix("torch."), "arch": arch, "rules": list(rules),
           "max_rel_diff": diff, "tolerance": tolerance(dtype), "ok": bool(diff <= tolerance(dtype)), "error": error}
    print(f"{row['device']} {row['dtype']:8} {arch:20} max rel {diff:.2e} {'ok' if row['ok'] else 'FAIL'} {error}",
          flush=True)
    return row


def write_equivalence(out: Path, device: torch.device, rows: list[dict]) -> None:
    result = {"machine": bench_rules.machine(device), "rows": rows,
              "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    m = result["machine"]
    lines = [f"# Exact rules against autograd on {m['device']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; torch {m['torch']}; "
             f"created {result['created']}.", "",
             "Worst relative difference to torch autograd's gradients over the rules named, per architecture "
             "(tests/equivalence) and dtype; the tolerance is pcsim.numerics.tolerance(dtype).", "",
             "| device | dtype | architecture | rules | max rel diff | tolerance | |",
             "|---|---|---|---|---:|---:|---|"]
    lines += [f"| {r['device']} | {r['dtype']} | {r['arch']} | {', '.join(r['rules'])} | {r['max_rel_diff']:.2e} | "
              f"{r['tolerance']:.0e} | {'ok' if r['ok'] else 'FAIL ' + r['error']} |" for r in rows]
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_check.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "device_check.md").write_text("\n".join(lines) + "\n")


def timing_tables(out: Path, device: torch.device, deadline_s: float, smoke: bool, after=lambda: None) -> None:
    """bench_rules.py's tables on the device, each call given what is left of the deadline; `after` each."""
    started = time.monotonic()
    models, recurrent = (["mlp", "rnn"], ["lstm"]) if smoke else (list(DEVICE_ORDER), ["lstm", "gru"])
    common = ["--device", device.type, "--keep-going", *(["--toy", "--reps", "2", "--budget-s", "1"] if smoke else
                                                         ["--reps", "10", "--budget-s", "30"])]
    exact = ["bp", "bp-graph", "zil", "fa-zil-wavefront", "fa-zil-autonomous"]
    table = str(out / f"rules_{device.type}")
    calls = [
        ["--models", *models, "--rules", *exact, *([] if smoke else ["il-T5", "il-T20"]), "--out", table],
        ["--models", *recurrent, "--fused", "--append", "--rules", *exact[:4], "--out", table],
        ["--models", *(["mlp"] if smoke else [*recurrent, "resnet18"]), "--rules", "bp", "fa-zil-wavefront",
         "fa-zil-wavefront-compiled", "--out", table + "_compiled"],
    ]
    for args in calls:
        left = deadline_s - (time.monotonic() - started)
        bench_rules.main([*common, "--deadline-s", f"{max(left, 0.0):.0f}", *args])
        after()
    if time.monotonic() - started > deadline_s:
        print("ODE throughput: not measured (the deadline had passed)", flush=True)
        return
    try:  # issue 8's ODE throughput, torch Euler on the device beside the CPU's and scipy's
        brian2_throughput.main(["--device", device.type, "--only", "torch Euler", "scipy LSODA", "--out", str(out),
                                *(["--quick", "--batches", "1", "--repeats", "1"] if smoke else [])])
    except Exception as e:  # noqa: BLE001 - the last table; the others are written already
        print(f"ODE throughput: failed ({type(e).__name__}: {e})", flush=True)


def mlp_timing(device: torch.device, scratch: Path) -> None:
    """A quick look on a machine without a GPU: bench_rules.py's MLP row, printed (its files in `scratch`)."""
    bench_rules.main(["--device", device.type, "--models", "mlp", "--reps", "10", "--rules", "bp", "zil",
                      "fa-zil-wavefront", "il-T20", "--out", str(scratch / "mlp_cpu")])


def archive(work: Path, out: Path) -> None:
    """Every table under `work` as OUT/device_check.tar.gz, and their markdown as one OUT/device_check_all.md.

    The device tool brings back at most 8 files from its $OUT: this keeps the run's to two, rewritten
    after each stage, so a run stopped at its time limit still returns what it finished.
    """
    files = sorted(f for f in work.iterdir() if f.suffix in (".json", ".md"))
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "device_check.tar.gz.part"
    with tarfile.open(partial, "w:gz") as tar:
        for f in files:
            tar.add(f, arcname=f.name)
    partial.replace(out / "device_check.tar.gz")
    (out / "device_check_all.md").write_text("\n".join(f"<!-- {f.name} -->\n{f.read_text()}" for f in files
                                                      if f.suffix == ".md"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results"),
                    help="folder for the tables (default: $OUT where set, else benchmarks/results)")
    ap.add_argument("--deadline-s", type=float, default=360.0,
                    help="seconds of timing after the equivalence checks; nothing new starts after them")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="toy sizes, few architectures: the test suite's run")
    ap.add_argument("--archive", action="store_true",
                    help="OUT gets two files, device_check.tar.gz and device_check_all.md, instead of each table")
    args = ap.parse_args(argv)
    device, out = torch.device(args.device), Path(args.out)
    if device.type != "cuda":
        print("no CUDA device: running the checks on the CPU", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch) if args.archive else out
        after = (lambda: archive(work, out)) if args.archive else (lambda: None)
        rows = equivalence(device, SMOKE_ARCHS if args.smoke else sorted(ARCHS))
        rows += fused_equivalence(device, batch=4 if args.smoke else 16)
        write_equivalence(work, device, rows)
        after()
        if device.type == "cuda" or args.smoke:
            timing_tables(work, device, args.deadline_s, args.smoke, after)
            after()
        else:
            mlp_timing(device, Path(scratch))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
