"""Continuous time on torch against IL's discrete loop: 200 Euler steps at dt / tau_x = 0.1.

    .venv/bin/python benchmarks/bench_continuous.py [--reps 10] [--threads 1] [--batch 64]
        [--out benchmarks/results/continuous_mlp]

The MLP 784-300-300-10 (tanh), batch 64, float32. Every run is timed interleaved in one process, the
order rotated, each ratio taken to `pcsim.il(steps=200, gamma=0.1)` in the same repetition:
- `simulate`, torch Euler (`pcsim.Euler(dt)`, IL's step), default recording (every population at
  `pcsim.dynamics.recording.SNAPSHOTS` evenly spaced times);
- the same, recording every population at every step (`Record(every_step=True)`), and only the end;
- the default and every-step runs with `fast=False`: the vector field evaluated per step.
Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pcsim  # noqa: E402
from pcsim.bench.measure import interleaved, summary, write_results  # noqa: E402
from pcsim.bench.rules import machine  # noqa: E402

STEPS, GAMMA, TAU = 200, 0.1, 1.0


def runs(batch: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(784, 300), nn.Tanh(), nn.Linear(300, 300), nn.Tanh(), nn.Linear(300, 10))
    x, y = torch.randn(batch, 784, generator=gen), torch.randn(batch, 10, generator=gen)
    graph = pcsim.trace(net, x)
    t_end, dt = STEPS * GAMMA * TAU, GAMMA * TAU
    end, every = {"times": [t_end]}, pcsim.Record(every_step=True)

    def sim(fast=True, **kw):
        return lambda: pcsim.simulate(graph, (x,), y, solver=pcsim.Euler(dt, fast=fast), t_end=t_end, tau_x=TAU, **kw)
    return {"il": lambda: pcsim.il(graph, (x,), y, steps=STEPS, gamma=GAMMA),
            "torch euler": sim(), "torch euler, every step": sim(record=every),
            "torch euler, end only": sim(record=end),
            "field euler": sim(fast=False), "field euler, every step": sim(fast=False, record=every)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "continuous_mlp"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    fns = runs(args.batch)
    for fn in fns.values():  # warm-up
        fn()
    times = interleaved(fns, dict.fromkeys(fns, args.reps), device)
    stats = summary(times, "il")
    result = {"machine": machine(device), "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "setting": f"MLP 784-300-300-10 tanh, batch {args.batch}, float32, {args.threads} thread(s), "
                         f"{STEPS} steps at dt/tau_x = {GAMMA}, {args.reps} interleaved repetitions",
              "runs": stats}
    m = result["machine"]
    lines = ["# Continuous time (torch Euler) against IL's loop", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}; created {result['created']}.", "",
             f"Setting: {result['setting']}. Ratio: median over repetitions of the time over `pcsim.il`'s in the "
             "same repetition (quartiles in brackets).", "",
             "| run | median ms | x pcsim.il |", "|---|---:|---:|"]
    for name, s in stats.items():
        lines.append(f"| {name} | {s['median_ms']:.1f} | {s['ratio_to_bp']:.2f} "
                     f"({s['ratio_q1']:.2f}-{s['ratio_q3']:.2f}) |")
    write_results(args.out, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
