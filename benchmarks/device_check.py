"""GPU check (issue 6): the equivalence suite's architectures on CUDA, then BP vs Fa-Z-IL timing.

Run on a machine with a GPU:  .venv/bin/python benchmarks/device_check.py  (a few minutes at most).
Prints one line per check; exits 1 if any exact rule misses its tolerance. On CUDA the timing is
bench_rules.py's (every zoo model, every rule, interleaved; IL T=100 left out for time), written
to benchmarks/results/rules_cuda.{json,md}; without a GPU a short BP vs Fa-Z-IL table on the CPU.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pcsim  # noqa: E402
from pcsim.numerics import tolerance  # noqa: E402
from tests.equivalence.archs import ARCHS  # noqa: E402


def equivalence(device: torch.device) -> bool:
    ok = True
    for dtype in (torch.float64, torch.float32):
        for arch, build in sorted(ARCHS.items()):
            module, inputs, target = build(dtype, "mse")
            module = module.to(device)
            inputs = tuple(x.to(device) for x in inputs)
            target = target.to(device)
            worst = 0.0
            for rule in ("zil", "fa-zil-wavefront", "fa-zil-autonomous"):
                worst = max(worst, pcsim.check(module, inputs, target, rule=rule, dtype=dtype).max_rel_diff)
            passed = worst <= tolerance(dtype)
            ok &= passed
            print(f"{device.type} {str(dtype)[6:]:8} {arch:20} max rel {worst:.2e} {'ok' if passed else 'FAIL'}")
    return ok


def fused_equivalence(device: torch.device) -> bool:
    """The zoo's LSTM and GRU traced with fused layers (cuDNN's kernel on CUDA in float32)."""
    from pcsim.zoo import load_model_file

    ok = True
    for dtype in (torch.float64, torch.float32):
        for name in ("lstm", "gru"):
            spec = load_model_file(name)
            module, inputs, target = spec.build_model(0, batch=16)
            module, inputs, target = module.to(device), tuple(x.to(device) for x in inputs), target.to(device)
            worst = max(pcsim.check(module, inputs, target, rule=rule, loss=spec.loss, dtype=dtype,
                                    fused=True).max_rel_diff for rule in ("zil", "fa-zil-wavefront"))
            passed = worst <= tolerance(dtype)
            ok &= passed
            print(f"{device.type} {str(dtype)[6:]:8} {name + ' (fused)':20} max rel {worst:.2e} "
                  f"{'ok' if passed else 'FAIL'}")
    return ok


def timing(device: torch.device, repeats: int = 20) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 1000), torch.nn.ReLU(), torch.nn.Linear(1000, 1000),
                              torch.nn.ReLU(), torch.nn.Linear(1000, 10)).to(device)
    x, y = torch.randn(256, 784, device=device), torch.randint(0, 10, (256,), device=device)
    graph = pcsim.trace(net, x)

    def bp():
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y, reduction="sum").backward()

    runs = {"bp": bp, "fa-zil wavefront": lambda: pcsim.fa_zil(graph, (x,), y, "ce"),
            "zil": lambda: pcsim.zil(graph, (x,), y, "ce"),
            "il T=20": lambda: pcsim.il(graph, (x,), y, "ce", steps=20)}
    times = {k: [] for k in runs}
    for _ in range(3):  # warm-up
        for f in runs.values():
            f()
    for _ in range(repeats):  # interleaved, so drift hits every rule alike
        for k, f in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            f()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
    base = sorted(times["bp"])[repeats // 2]
    print(f"\nMLP 784-1000-1000-10, batch 256, float32 on {device}:")
    for k, ts in times.items():
        med = sorted(ts)[repeats // 2]
        print(f"  {k:18} {1e3 * med:8.2f} ms  {med / base:6.2f} x BP")


if __name__ == "__main__":
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda":
        print("no CUDA device: running the same checks on the CPU")
    good = equivalence(device)
    good &= fused_equivalence(device)
    if device.type == "cuda":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_rules  # noqa: E402

        bench_rules.main(["--device", "cuda", "--reps", "10", "--budget-s", "30", "--rules", "bp", "bp-graph", "zil",
                          "fa-zil-wavefront", "fa-zil-autonomous", "il-T5", "il-T20"])
        bench_rules.main(["--device", "cuda", "--reps", "10", "--budget-s", "30", "--fused", "--append",
                          "--models", "lstm", "gru", "--rules", "bp", "bp-graph", "zil", "fa-zil-wavefront"])
    else:
        timing(device)
    sys.exit(0 if good else 1)
