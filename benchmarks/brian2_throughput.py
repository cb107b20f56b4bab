"""Throughput of the Brian2 backend's code-generation targets against scipy RK45 and torch Euler.

A 784-256-256-10 tanh network (float64) runs 100 ms of model time at dt = 0.1 ms (1000 Euler
steps; tau_x = 10 ms, instantaneous errors, the target shown from t = 0, plasticity off), at batch
1 and 16, on: scipy RK45 and LSODA (adaptive, rtol 1e-8), torch Euler, and Brian2 on the numpy,
cython and cpp_standalone targets, all in one run. pcsim's time unit is read as 1 ms here (Brian2 sees it
as 1 s; only the ratio dt / tau_x matters).

For each, the first call (code generation; compilation unless cached in build/) and the best of
`--repeats` warm calls are timed end to end through `pcsim.simulate` (Brian2: building the
objects, writing and running the code, reading the monitors back). Every Euler run's final
values are compared with torch Euler's: they integrate the same system with the same step.

    python benchmarks/brian2_throughput.py            # writes benchmarks/results/brian2_throughput.{json,md}
    python benchmarks/brian2_throughput.py --quick    # a smaller network, for a smoke test
    python3 benchmarks/brian2_throughput.py --device cuda --only "torch Euler" "scipy LSODA"  # on a GPU
                                                      # (with the row 'torch Euler, cuda'; no Brian2 needed)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("BRIAN2_CACHE_DIR", str(ROOT / "build" / "brian2-cache"))
os.environ.setdefault("PCSIM_BUILD", str(ROOT / "build"))  # cpp_standalone's builds, from any directory
sys.path.insert(0, str(ROOT))

import pcsim  # noqa: E402

RUNS = [  # (label, backend, simulate keywords)
    ("scipy RK45", "scipy", {"method": "RK45"}),
    ("scipy LSODA", "scipy", {"method": "LSODA"}),
    ("torch Euler", "torch", {"method": "euler"}),
    ("brian2 numpy", "brian2", {"codegen_target": "numpy"}),
    ("brian2 cython", "brian2", {"codegen_target": "cython"}),
    ("brian2 cpp_standalone", "brian2", {"codegen_target": "cpp_standalone"}),
]


def network(sizes, batch, seed=0):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.Tanh()]
    module = nn.Sequential(*layers[:-1]).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(batch, sizes[0], generator=g, dtype=torch.float64)
    y = 0.1 * torch.randn(batch, sizes[-1], generator=g, dtype=torch.float64)
    return module, (x,), y


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cxx = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        cxx = "none found"
    import scipy

    try:  # a lent GPU machine has no Brian2: its table has the torch and scipy rows
        import brian2

        brian2_version = brian2.__version__
    except ImportError:
        brian2_version = "not installed"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "brian2": brian2_version,
            "scipy": scipy.__version__, "numpy": np.__version__, "compiler": cxx, "gpu": gpu,
            "load_average_at_start": os.getloadavg()}


def run_one(graph, inputs, target, backend, kw, settings, repeats):
    def call():
        t0 = time.perf_counter()
        tr = pcsim.simulate(graph, inputs, target, backend=backend, **settings, **kw)
        return time.perf_counter() - t0, tr

    first, tr = call()
    warm = [call()[0] for _ in range(repeats)]
    final = np.concatenate([tr.values[n][-1].ravel() for n in graph.latent])
    return first, min(warm) if warm else first, final


def table(results, meta) -> str:
    m = meta["machine"]
    lines = [f"Model time {meta['t_end']} ms at dt = {meta['dt']} ms ({meta['steps']} Euler steps), "
             f"network {'-'.join(map(str, meta['sizes']))} (tanh, float64), tau_x = {meta['tau_x']} ms, "
             "instantaneous errors, plasticity off.",
             f"Machine: {m['cpu']}, {m['cores']} cores, load average at start "
             f"{', '.join(f'{v:.1f}' for v in m['load_average_at_start'])}; torch {m['torch']} on "
             f"{m['torch_threads']} thread(s), Brian2 {m['brian2']}, {m['compiler']}; GPU: {m.get('gpu', 'none')}.", "",
             "| batch | backend | warm (s) | first call (s) | model ms per wall s | warm / torch Euler "
             "| max abs diff to torch Euler |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['batch']} | {r['label']} | {r['warm_s']:.2f} | {r['first_s']:.2f} | "
                     f"{r['model_ms_per_wall_s']:.1f} | {r['vs_torch_euler']:.2f} | "
                     f"{r['max_abs_diff_to_torch_euler']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=2, help="warm calls after the first (default 2)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch CPU threads (default 1: Brian2's generated code runs on one core too)")
    parser.add_argument("--only", nargs="+", default=None, help="labels to run, e.g. 'torch Euler'")
    parser.add_argument("--quick", action="store_true", help="a 64-32-32-10 network for 10 ms (smoke test)")
    parser.add_argument("--device", default="cpu",
                        help="also run torch Euler on this device ('cuda'), as the row 'torch Euler, cuda'")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.torch_threads)
    sizes, t_end = ((64, 32, 32, 10), 10.0) if args.quick else ((784, 256, 256, 10), 100.0)
    dt, tau_x = 0.1, 10.0
    settings = {"t_end": t_end, "dt": dt, "tau_x": tau_x, "record": {"times": [t_end]}}
    meta = {"sizes": sizes, "t_end": t_end, "dt": dt, "tau_x": tau_x, "steps": int(round(t_end / dt)),
            "machine": machine(), "repeats": args.repeats}
    results = []
    for batch in args.batches:
        module, inputs, target = network(sizes, batch)
        graph = pcsim.trace(module, *inputs)
        finals = {}
        runs = [(label, backend, kw, graph, inputs, target) for label, backend, kw in RUNS]
        if device.type != "cpu":  # the same network, traced again on the device: the torch backend runs there
            on = module.to(device), tuple(x.to(device) for x in inputs), target.to(device)
            runs.append((f"torch Euler, {device.type}", "torch", {"method": "euler"}, pcsim.trace(on[0], *on[1]),
                         on[1], on[2]))
        for label, backend, kw, g, xs, y in runs:
            if args.only and label not in args.only and label != "torch Euler" and not label.endswith(device.type):
                continue
            first, warm, final = run_one(g, xs, y, backend, kw, settings, args.repeats)
            finals[label] = (first, warm, final)
            print(f"batch {batch:>3}  {label:<22} warm {warm:8.2f} s   first {first:8.2f} s", flush=True)
        ref_warm, ref_final = finals["torch Euler"][1], finals["torch Euler"][2]
        for label, (first, warm, final) in finals.items():
            results.append({"batch": batch, "label": label, "first_s": first, "warm_s": warm,
                            "vs_torch_euler": warm / ref_warm, "model_ms_per_wall_s": t_end / warm,
                            "max_abs_diff_to_torch_euler": float(np.abs(final - ref_final).max())})
    meta["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    name = "brian2_throughput" + ("_quick" if args.quick else "") + ("" if device.type == "cpu" else f"_{device.type}")
    (args.out / f"{name}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(table(results, meta))
    print(table(results, meta))
    print(f"wrote {args.out / (name + '.json')} and {args.out / (name + '.md')}")


if __name__ == "__main__":
    main()
