"""Adaptive solvers on the same ODE: torchode (pcsim.Dopri5, pcsim.Tsit5) against torchdiffeq and scipy, interleaved.

    .venv/bin/python benchmarks/bench_torch_adaptive.py [--reps 5] [--tol 1e-3] [--out OUT] [--baseline-src DIR]

The MLP 784-300-300-10 (tanh), batch 64, float32, one thread; the target shown at t = 0 and integrated to
t = 20 tau_x, recording only the end. torchdiffeq gets the same vector field (`VectorField`), its state a
tuple of tensors. Every run is timed interleaved in one process and given as a
ratio to `pcsim.il(steps=200, gamma=0.1)` in the same repetition, with the number of field evaluations and
the largest difference of the final values to scipy's DOP853 at rtol 1e-8 in float64 (accuracy at the same tolerance).
This is the measurement behind torchode being pcsim's adaptive torch library. Writes OUT.json and OUT.md.

--baseline-src DIR: also time the Dopri5 and Tsit5 of the pcsim in DIR (say `git archive OLD pcsim | tar -x -C DIR`,
its commit in DIR/COMMIT), imported beside this checkout's under its own module objects, in the same interleaved
repetitions: old against new in one process, on the same graph built by each one's `trace`.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from baseline import import_pcsim_from  # noqa: E402 (benchmarks/baseline.py, beside this script)

import pcsim  # noqa: E402
from pcsim.algorithms.problem import Problem  # noqa: E402
from pcsim.bench.measure import interleaved, summary, write_results  # noqa: E402
from pcsim.bench.rules import machine  # noqa: E402
from pcsim.dynamics.field import VectorField  # noqa: E402

T_END, TAU = 20.0, 1.0


def _network(batch: int):
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(784, 300), nn.Tanh(), nn.Linear(300, 300), nn.Tanh(), nn.Linear(300, 10))
    x, y = torch.randn(batch, 784, generator=gen), torch.randn(batch, 10, generator=gen)
    return pcsim.trace(net, x), x, y, net


def _torchdiffeq(graph, x, y, tol: float, counter: dict):
    """torchdiffeq's dopri5 on the same field, its state a tuple of tensors (its API takes one)."""
    from torchdiffeq import odeint

    field = VectorField(Problem.build(graph, (x,), y, "mse"), tau_x=TAU)

    def rhs(t, ys):
        counter["evals"] += 1
        d = field(float(t), dict(zip(field.layout, ys, strict=True)))
        return tuple(d[k] for k in field.layout)

    def run():
        state = field.initial_state()
        times = torch.tensor([0.0, T_END], dtype=field.dtype)
        with torch.no_grad():
            path = odeint(rhs, tuple(state[k] for k in field.layout), times, rtol=tol, atol=tol, method="dopri5")
        return {k: p[-1] for k, p in zip(field.layout, path, strict=True)}
    return run, field


def baseline_runs(src: str, batch: int, tol: float, counts: dict, finals: dict) -> dict:
    """The Dopri5 and Tsit5 runs of the pcsim in `src` ("baseline ..." rows), evaluations counted on its field."""
    other = import_pcsim_from(src)
    field_cls = sys.modules.get("pcsim.dynamics.field")  # this checkout's, restored
    assert other.simulate is not pcsim.simulate and field_cls is not None
    _, x, y, net = _network(batch)
    graph = other.trace(net, x)
    other_field = other.dynamics.field.VectorField
    fns = {}
    for method in ("Dopri5", "Tsit5"):
        name = f"baseline {method}"
        counts[name] = {"evals": 0}

        solver = getattr(other, method)(rtol=tol, atol=tol)

        def run(name=name, solver=solver):
            call = other_field.__call__

            def count(self, *a, **k):
                counts[name]["evals"] += 1
                return call(self, *a, **k)
            other_field.__call__ = count
            try:
                tr = other.simulate(graph, (x,), y, solver=solver, t_end=T_END, tau_x=TAU, record={"times": [T_END]})
            finally:
                other_field.__call__ = call
            finals[name] = torch.cat([torch.as_tensor(tr.values[n][-1]).reshape(-1) for n in graph.latent])
        fns[name] = run
    return fns


def runs(batch: int, tol: float) -> tuple[dict, dict, dict]:
    graph, x, y, net = _network(batch)
    end = {"times": [T_END]}
    names = ("pcsim Dopri5 (torchode)", "pcsim Tsit5 (torchode)", "torchdiffeq dopri5", "scipy RK45")
    counts = {name: {"evals": 0} for name in names}
    finals = {}

    def counted(name, solver):
        field_call = VectorField.__call__

        def run():
            def count(self, *a, **k):
                counts[name]["evals"] += 1
                return field_call(self, *a, **k)
            VectorField.__call__ = count
            try:
                tr = pcsim.simulate(graph, (x,), y, solver=solver, t_end=T_END, tau_x=TAU, record=end)
            finally:
                VectorField.__call__ = field_call
            finals[name] = torch.cat([torch.as_tensor(tr.values[n][-1]).reshape(-1) for n in graph.latent])
        return run
    fns = {"il": lambda: pcsim.il(graph, (x,), y, steps=200, gamma=0.1),
           names[0]: counted(names[0], pcsim.Dopri5(rtol=tol, atol=tol)),
           names[1]: counted(names[1], pcsim.Tsit5(rtol=tol, atol=tol)),
           names[3]: counted(names[3], pcsim.Scipy("RK45", rtol=tol, atol=tol))}
    run, field = _torchdiffeq(graph, x, y, tol, counts[names[2]])

    def keep():
        u = run()
        finals[names[2]] = torch.cat([(field.base[n] + u["u", n]).reshape(-1) if n not in field.outputs
                                      else y.reshape(-1) for n in graph.latent])  # a shown MSE output is its target
    fns[names[2]] = keep
    graph64 = pcsim.trace(copy.deepcopy(net).double(), x.double())
    exact = pcsim.simulate(graph64, (x.double(),), y.double(), solver=pcsim.Scipy("DOP853", rtol=1e-8, atol=1e-10),
                           t_end=T_END, tau_x=TAU, record=end)
    reference = torch.cat([torch.as_tensor(exact.values[n][-1]).reshape(-1) for n in graph.latent])
    return fns, counts, {"finals": finals, "reference": reference}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "torch_adaptive"))
    ap.add_argument("--baseline-src", help="a folder holding another pcsim/ to time beside this one")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device("cpu")
    fns, counts, acc = runs(args.batch, args.tol)
    baseline = None
    if args.baseline_src:
        fns.update(baseline_runs(args.baseline_src, args.batch, args.tol, counts, acc["finals"]))
        stamp = Path(args.baseline_src) / "COMMIT"
        baseline = f"{args.baseline_src}" + (f" ({stamp.read_text().strip()})" if stamp.exists() else "")
    for fn in fns.values():  # warm-up, and one count of evaluations per solve
        fn()
    evals = {k: c["evals"] for k, c in counts.items()}
    times = interleaved(fns, dict.fromkeys(fns, args.reps), device)
    stats = summary(times, "il")
    error = {k: float((v.double() - acc["reference"]).abs().max()) for k, v in acc["finals"].items()}
    result = {"machine": machine(device), "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "setting": f"MLP 784-300-300-10 tanh, batch {args.batch}, float32, 1 thread, t_end = {T_END} tau_x, "
                         f"rtol = atol = {args.tol}, {args.reps} interleaved repetitions; load average at the end "
                         + ", ".join(f"{v:.1f}" for v in os.getloadavg()) + " (on a shared machine: compare ratios)",
              "runs": stats, "field_evaluations": evals, "max_error_to_dop853": error}
    m = result["machine"]
    lines = ["# Adaptive solvers on torch: torchode against torchdiffeq (and scipy)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}; created {result['created']}.", "",
             f"Setting: {result['setting']}. Ratio: median over repetitions of the time over `pcsim.il`'s 200 steps "
             "in the same repetition (quartiles in brackets).", "",
             "| run | median ms | x pcsim.il | field evaluations | max error vs DOP853 |", "|---|---:|---:|---:|---:|"]
    for name, s in stats.items():
        ratio = f"{s['ratio_to_bp']:.2f} ({s['ratio_q1']:.2f}-{s['ratio_q3']:.2f})"
        extra = f"{evals[name]} | {error[name]:.1e}" if name in error else " | "
        lines.append(f"| {name} | {s['median_ms']:.1f} | {ratio} | {extra} |")
    if baseline:
        result["baseline"] = baseline
        result["new_over_baseline"] = {}
        lines += ["", f"Baseline: the pcsim in {baseline}, timed in the same repetitions. This checkout over the "
                  "baseline, median of the per-repetition ratios (quartiles):", "",
                  "| ratio | median (quartiles) |", "|---|---:|"]
        for method in ("Dopri5", "Tsit5"):
            r = summary({"new": times[f"pcsim {method} (torchode)"], "old": times[f"baseline {method}"]}, "old")["new"]
            result["new_over_baseline"][method] = r
            lines.append(f"| pcsim {method} / baseline {method} | {r['ratio_to_bp']:.2f} "
                         f"({r['ratio_q1']:.2f}-{r['ratio_q3']:.2f}) |")
    write_results(args.out, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
