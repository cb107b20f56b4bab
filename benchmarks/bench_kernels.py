"""Where one IL / Euler step of the peers' MLP spends its time: the torch kernels it calls, one thread.

    .venv/bin/python benchmarks/bench_kernels.py [--reps 15] [--calls 500] [--out benchmarks/results/kernels_cpu]
    build/peers-jpc/bin/python benchmarks/bench_kernels.py   # adds JAX's jitted product and tanh (make peers)

The step of `pcsim.il` (and of `simulate`'s torch Euler) on the MLP 784-300-300-10, batch 64, float32 calls
per step two 64x300x300 GEMMs (a hidden linear error and its feedback), two tanh (the hidden activations
relinearised) and a few cheap element-wise ops. This times those kernels at those shapes, interleaved, beside
sigmoid and exp: torch's CPU tanh and exp go through MKL's VML (high-accuracy mode), sigmoid through torch's own
vectorised code, and how far apart they are depends on the CPU; the GEMMs go through MKL, timed beside
oneDNN's linear with a packed weight (MKL picks its code path by CPU vendor, oneDNN by instruction set).
Also times 2 sigmoid(2x) - 1 (tanh's identity) and reports its largest absolute deviation from float64
tanh next to torch's float32 tanh, so a faster kernel can be judged on accuracy as well. Each entry is
microseconds per call, the median over repetitions of `calls` back-to-back calls; ratios are to tanh in the
same repetition. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import torch

# XLA on one thread, as in bench_peers.py; set before jax can be imported
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                           "intra_op_parallelism_threads=1").strip()
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pcsim.bench.measure import interleaved, summary, write_results  # noqa: E402
from pcsim.bench.rules import machine  # noqa: E402

BATCH, WIDTH = 64, 300


def kernels() -> dict:
    gen = torch.Generator().manual_seed(0)
    x, d = torch.randn(BATCH, WIDTH, generator=gen), torch.randn(BATCH, WIDTH, generator=gen)
    w, out = torch.randn(WIDTH, WIDTH, generator=gen) / WIDTH ** 0.5, torch.empty(BATCH, WIDTH)
    return {"tanh": lambda: torch.tanh(x, out=out),
            "sigmoid": lambda: torch.sigmoid(x, out=out),
            "exp": lambda: torch.exp(x, out=out),
            "2 sigmoid(2x) - 1": lambda: torch.sigmoid(torch.mul(x, 2, out=out), out=out).mul_(2).sub_(1),
            "tanh_backward (1 - y^2) g": lambda: torch.ops.aten.tanh_backward(d, x),
            "addmm 64x300x300 (error)": lambda: torch.addmm(d, x, w.t(), alpha=-1, out=out),
            "addmm_ 64x300x300 (feedback)": lambda: out.addmm_(x, w),
            **_onednn(x, w), **_jax(x, w)}


def _onednn(x: torch.Tensor, w: torch.Tensor) -> dict:
    """The same product through oneDNN (the weight packed once, as inductor's freezing does), where torch has it;
    and MKL against oneDNN at PCX's layer size (batch 256, 1000x1000)."""
    if not torch.backends.mkldnn.is_available():
        return {}
    pack, linear = torch.ops.mkldnn._reorder_linear_weight, torch.ops.mkldnn._linear_pointwise
    gen = torch.Generator().manual_seed(1)
    big_x, big_w = torch.randn(256, 1000, generator=gen), torch.randn(1000, 1000, generator=gen) / 1000 ** 0.5
    packed, big_packed = pack(w, x.shape[0]), pack(big_w, big_x.shape[0])
    return {"oneDNN linear 64x300x300, packed weight": lambda: linear(x, packed, None, "none", [], ""),
            "mm 256x1000x1000 (MKL)": lambda: torch.mm(big_x, big_w.t()),
            "oneDNN linear 256x1000x1000, packed weight": lambda: linear(big_x, big_packed, None, "none", [], "")}


def _jax(x: torch.Tensor, w: torch.Tensor) -> dict:
    """The product and tanh jitted by JAX (XLA, one thread), where jax is installed (the JPC venv of `make peers`):
    what the peers' steps are made of, timed in the same repetitions."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return {}
    xj, wj = jnp.asarray(x.numpy()), jnp.asarray(w.numpy())
    product, tanh = jax.jit(lambda a, b: a @ b.T), jax.jit(jnp.tanh)
    return {"JAX jit product 64x300x300": lambda: product(xj, wj).block_until_ready(),
            "JAX jit tanh": lambda: tanh(xj).block_until_ready()}


def accuracy() -> dict:
    """Largest |f32 result - f64 tanh| over [-30, 30]: torch's tanh against the sigmoid identity."""
    y = torch.linspace(-30.0, 30.0, 600001, dtype=torch.float64)
    ref, y32 = torch.tanh(y), y.float()
    return {"torch.tanh float32": (torch.tanh(y32).double() - ref).abs().max().item(),
            "2 sigmoid(2x) - 1 float32": ((2 * torch.sigmoid(2 * y32) - 1).double() - ref).abs().max().item(),
            "2 sigmoid(2x) - 1 float32, |x| < 1e-3, relative": (
                ((2 * torch.sigmoid(2 * y32) - 1).double() - ref).abs() / ref.abs().clamp_min(1e-300)
            )[(y.abs() < 1e-3) & (y != 0)].max().item()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "kernels_cpu"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    calls = {name: (lambda f=f: [f() for _ in range(args.calls)]) for name, f in kernels().items()}
    for f in calls.values():
        f()
    times = interleaved(calls, dict.fromkeys(calls, args.reps), cpu, log=lambda _: None)
    per_call = {n: [(r, t / args.calls) for r, t in ts] for n, ts in times.items()}
    stats = summary(per_call, base="tanh")
    result = {"machine": machine(cpu), "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "command": " ".join(["bench_kernels.py", *(argv if argv is not None else sys.argv[1:])]),
              "shape": [BATCH, WIDTH], "dtype": "float32", "calls": args.calls, "reps": args.reps,
              "kernels": stats, "accuracy": accuracy(), "load_average": list(os.getloadavg())}
    lines = [f"# torch kernels of the MLP's IL step ({BATCH}x{WIDTH}, float32, one thread)", "",
             f"Machine: {result['machine']['cpu']}, torch {torch.__version__}; created {result['created']}; "
             f"`{result['command']}`; load average at the end {', '.join(f'{v:.1f}' for v in result['load_average'])}.",
             "", "| kernel | us per call | / tanh (quartiles) |", "|---|---:|---:|"]
    for n, s in stats.items():
        lines.append(f"| {n} | {1e6 * s['median_ms'] / 1e3:.1f} | {s['ratio_to_bp']:.2f} "
                     f"({s['ratio_q1']:.2f}-{s['ratio_q3']:.2f}) |")
    lines += ["", "Largest absolute deviation from float64 tanh over [-30, 30] (and the identity's relative error "
              "near 0, where it cancels):", ""]
    lines += [f"- {k}: {v:.3g}" for k, v in result["accuracy"].items()]
    write_results(args.out, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
