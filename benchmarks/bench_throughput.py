"""Continuous-time throughput: model time simulated per wall-clock second, per solver, on two networks.

    .venv/bin/python benchmarks/bench_throughput.py [--reps 3] [--threads 1] [--out benchmarks/results/throughput]

Networks (float32, the target shown at t = 0, tau_x = 1, instantaneous errors, plasticity off, recording only
the end): the MLP 784-300-300-10 (tanh) at batch 64, and ResNet-18 (models/resnet18.py, 3x32x32) at batch 8.
Solvers: torch Euler at dt = 0.1 (IL's step), torch Tsit5 and Dopri5 (torchode) at rtol = atol = 1e-3 (Tsit5 also
with compile=True: the step fused with the field and compiled, its compile in the first call's time), scipy
LSODA at 1e-3 (refused where its dense Jacobian would not fit: the refusal is the row), each run on CUDA too
when one is present. Brian2 is measured on its own network by benchmarks/brian2_throughput.py. The median of
`--reps` warm runs; throughput is t_end over it; the first (warm-up) call's time is given too. Writes OUT.json
and OUT.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PCSIM_MODELS", str(ROOT / "models"))
sys.path.insert(0, str(ROOT))

import pcsim  # noqa: E402
from pcsim.bench.measure import write_results  # noqa: E402
from pcsim.bench.rules import machine  # noqa: E402
from pcsim.zoo import load_model_file  # noqa: E402

TOL = 1e-3


def networks(device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mlp = nn.Sequential(nn.Linear(784, 300), nn.Tanh(), nn.Linear(300, 300), nn.Tanh(), nn.Linear(300, 10))
    x, y = torch.randn(64, 784, generator=gen), torch.randn(64, 10, generator=gen)
    resnet, inputs, target = load_model_file("resnet18").build_model(seed=0, batch=8)
    out = {"MLP 784-300-300-10, batch 64": (mlp, (x,), y, "mse", 20.0),
           "ResNet-18, batch 8": (resnet.float(), tuple(inputs), target, "ce", 1.0)}
    return {name: (m.to(device), tuple(i.to(device) for i in ins), t.to(device), loss, t_end)
            for name, (m, ins, t, loss, t_end) in out.items()}


def solvers() -> dict:
    return {"torch Euler (dt 0.1)": pcsim.Euler(0.1), f"torch Tsit5 ({TOL:g})": pcsim.Tsit5(rtol=TOL, atol=TOL),
            f"torch Dopri5 ({TOL:g})": pcsim.Dopri5(rtol=TOL, atol=TOL),
            f"torch Tsit5 ({TOL:g}), compiled": pcsim.Tsit5(rtol=TOL, atol=TOL, compile=True),
            f"scipy LSODA ({TOL:g})": pcsim.Scipy("LSODA", rtol=TOL, atol=TOL)}


def brian2_solvers(targets) -> dict:
    """Brian2 on the MLP only (one synapse per sample, input and output: 21 million here), for a short run:
    its cost is building that network, then each step."""
    return {f"brian2 {t} (dt 0.1)": pcsim.Brian2(0.1, target=t) for t in targets}


def measure(graph, inputs, target, loss, t_end, solver, reps: int) -> dict:
    def run():
        pcsim.simulate(graph, inputs, target, loss=loss, solver=solver, t_end=t_end, tau_x=1.0,
                       record={"times": [t_end]})
        if inputs[0].is_cuda:
            torch.cuda.synchronize()
    try:
        start = time.perf_counter()
        run()  # warm-up (and the refusal, if any); a compiled solver compiles here
        first = time.perf_counter() - start
    except (ValueError, pcsim.PcsimError) as e:
        return {"refused": str(e)}
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    wall = statistics.median(times)
    return {"t_end": t_end, "wall_s": wall, "model_time_per_s": t_end / wall, "first_call_s": first}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "throughput"))
    ap.add_argument("--brian2", nargs="*", default=["numpy", "cython"], help="Brian2 targets to time on the MLP")
    ap.add_argument("--brian2-t-end", type=float, default=1.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for net, (module, inputs, target, loss, t_end) in networks(device).items():
            graph = pcsim.trace(module, *inputs)
            runs = {name: (solver, t_end) for name, solver in solvers().items()}
            if device.type == "cpu" and net.startswith("MLP"):
                runs.update({n: (s, args.brian2_t_end) for n, s in brian2_solvers(args.brian2).items()})
            for name, (solver, t) in runs.items():
                if device.type == "cuda" and name.startswith("scipy"):
                    continue
                r = measure(graph, inputs, target, loss, t, solver, args.reps)
                rows.append({"network": net, "solver": name, "device": device.type, **r})
                print(rows[-1], flush=True)
    result = {"machine": machine(devices[-1]), "threads": args.threads,
              "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "rows": rows}
    m = result["machine"]
    lines = ["# Continuous-time throughput: model time per wall-clock second", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}; {args.threads} thread(s); "
             f"created {result['created']}.", "",
             "Float32, target shown at t = 0, tau_x = 1 (model time in units of tau_x), instantaneous errors, "
             f"recording only the end; median of {args.reps} warm runs. Brian2 (float64, as it computes) end to end "
             "through pcsim.simulate: building the network's objects and synapses, then its steps.", "",
             "| network | solver | device | t_end | wall s | model time / s | first call s |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if "refused" in r:
            lines.append(f"| {r['network']} | {r['solver']} | {r['device']} | | | refused: {r['refused']} | |")
        else:
            lines.append(f"| {r['network']} | {r['solver']} | {r['device']} | {r['t_end']:g} | {r['wall_s']:.3f} "
                         f"| {r['model_time_per_s']:.2f} | {r['first_call_s']:.1f} |")
    write_results(args.out, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
