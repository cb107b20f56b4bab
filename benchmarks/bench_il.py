"""IL's inference loop against BP on the MLP 784-1000-1000-10, batch 256, float32 (issue 8's IL target).

Interleaved: each repetition times BP (torch autograd forward + backward of the summed loss on the
same nn.Module) and then pcsim.il at each T, so machine load hits both alike; the ratio is taken
per repetition and the median reported. Run: .venv/bin/python benchmarks/bench_il.py [--reps N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import pcsim

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
import mlp  # noqa: E402


def bp_step(model, x, y):
    params = [p for p in model.parameters()]
    loss = F.cross_entropy(model(x), y, reduction="sum")
    return torch.autograd.grad(loss, params)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--steps", type=int, nargs="+", default=[5, 20, 100])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    ap.add_argument("--compile", action="store_true", help="also time pcsim.il(compile=True) (rows 'ilT-compiled')")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    model, (x,), y = mlp.build(batch=args.batch)
    graph = pcsim.trace(model, x)
    runs = {"bp": lambda: bp_step(model, x, y)}
    for t in args.steps:
        runs[f"il{t}"] = lambda t=t: pcsim.il(graph, (x,), y, "ce", gamma=0.1, steps=t)
        if args.compile:
            runs[f"il{t}-compiled"] = lambda t=t: pcsim.il(graph, (x,), y, "ce", gamma=0.1, steps=t, compile=True)
    for f in runs.values():  # warm-up (and, with --compile, compilation)
        f()
    times = {k: [] for k in runs}
    cpu = {k: [] for k in runs}  # this process's CPU time: what other processes' load does not add
    load0 = os.getloadavg()[0]
    for _ in range(args.reps):
        for k, f in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    print(f"threads {torch.get_num_threads()}, load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"bp median {1e3 * statistics.median(times['bp']):.1f} ms")
    for k in runs:
        if k == "bp":
            continue
        ratios = [a / b for a, b in zip(times[k], times["bp"], strict=True)]
        cpu_ratios = [a / b for a, b in zip(cpu[k], cpu["bp"], strict=True)]
        print(f"{k}: median {1e3 * statistics.median(times[k]):.1f} ms, ratio median {statistics.median(ratios):.2f}x "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f}); CPU-time ratio median "
              f"{statistics.median(cpu_ratios):.2f}x (min {min(cpu_ratios):.2f}, max {max(cpu_ratios):.2f})")


if __name__ == "__main__":
    main()
