"""Per-call overhead of the exact rules, an old commit's code against this tree's, in one process.

    .venv/bin/python benchmarks/bench_overhead_ab.py --old-tree build/compare-fef8df9 [--model mlp20 | mlp20ce |
        ZOO_NAME] [--batch 32] [--rounds 41] [--cases build retyped wave zil]

The old tree is a checkout of the old commit (benchmarks/compare_commits.py makes one under build/compare-<sha>).
Its pcsim/algorithms/{losses,problem,fa_zil_wavefront,zil}.py and pcsim/graph/ties.py are loaded from their files
under other module names, beside this tree's pcsim, and run on the same graph, data and parameters: the timed
difference is those files' alone, and the load of a shared machine hits both sides of each round alike (the two
sides alternate, which goes first alternating by round). Works while those files' interfaces agree with this
tree's. Each case checks first that both sides give the same numbers (bit for bit). Prints, per case, the median
and range of the time per call on each side and the median (and quartiles) of the per-round new/old ratio.

Cases: build (Problem.build), retyped (ModuleTies.retyped over the parameters), wave (Problem.build and the
Fa-Z-IL wavefront), zil (pcsim.zil as a whole; the old zil.py over this tree's Problem and steps).
Models: mlp20 (20 Linear(8, 8) + tanh, float64, batch 4, MSE; what Problem.build's per-call figures were
measured on), mlp20ce (the same ending in Linear(8, 5), CE), or a zoo model at --batch (float32, bench_rules'
sizes).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PCSIM_MODELS", str(ROOT / "models"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import pcsim  # noqa: E402
from pcsim.algorithms import fa_zil_wavefront as new_wave  # noqa: E402
from pcsim.algorithms import problem as new_problem  # noqa: E402
from pcsim.graph import ties as new_ties  # noqa: E402

new_zil = importlib.import_module("pcsim.algorithms.zil")  # the package's `zil` is the function

CASES = ("build", "retyped", "wave", "zil")


def load(tree: Path, rel: str, name: str):
    spec = importlib.util.spec_from_file_location(name, tree / "pcsim" / rel)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def old_side(tree: Path) -> dict:
    """The old files, wired to each other where they import one another."""
    losses = load(tree, "algorithms/losses.py", "old_losses")
    problem = load(tree, "algorithms/problem.py", "old_problem")
    problem.get_loss, problem.LOSSES, problem.Loss = losses.get_loss, losses.LOSSES, losses.Loss
    wave = load(tree, "algorithms/fa_zil_wavefront.py", "old_wave")
    wave.Problem, wave.traced_shape = problem.Problem, problem.traced_shape
    zil = load(tree, "algorithms/zil.py", "old_zil")
    ties = load(tree, "graph/ties.py", "old_ties")
    return {"problem": problem, "wave": wave, "zil": zil, "ties": ties}


def model(name: str, batch: int):
    if name in ("mlp20", "mlp20ce"):
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        for _ in range(20):
            layers += [nn.Linear(8, 8), nn.Tanh()]
        if name == "mlp20ce":
            layers[-1:] = [nn.Linear(8, 5)]
        x = torch.randn(4, 8, dtype=torch.float64)
        y = torch.randint(0, 5, (4,)) if name == "mlp20ce" else torch.randn(4, 8, dtype=torch.float64)
        return nn.Sequential(*layers).double(), (x,), y, "ce" if name == "mlp20ce" else "mse"
    from pcsim.bench.rules import DIMS
    from pcsim.zoo import load_model_file
    spec = load_model_file(name)
    module, inputs, target = spec.build_model(0, **{**DIMS.get(name, {}), "batch": batch})
    module.eval()
    for m in module.modules():  # as bench_rules runs them
        if isinstance(m, nn.RNNBase):
            m.train()
    return module, inputs, target, spec.loss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-tree", required=True, type=Path, help="a checkout of the old commit")
    ap.add_argument("--model", default="mlp20")
    ap.add_argument("--batch", type=int, default=32, help="a zoo model's batch")
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    old = old_side(args.old_tree.resolve())
    module, x, y, loss = model(args.model, args.batch)
    g = pcsim.trace(module, *x).level().pruned()
    old_plan, new_plan = old["wave"].WavePlan.of(g), new_wave.WavePlan.of(g)
    oP, nP = old["problem"].Problem, new_problem.Problem
    cases = {
        "build": (lambda: oP.build(g, x, y, loss), lambda: nP.build(g, x, y, loss)),
        "retyped": (lambda: old["ties"].ModuleTies.retyped(g.ties, g.params),
                    lambda: new_ties.ModuleTies.retyped(g.ties, g.params)),
        "wave": (lambda: old["wave"].wavefront(oP.build(g, x, y, loss), 1.0, old_plan),
                 lambda: new_wave.wavefront(nP.build(g, x, y, loss), 1.0, new_plan)),
        "zil": (lambda: old["zil"].zil(g, x, y, loss), lambda: new_zil.zil(g, x, y, loss)),
    }
    for case in ("wave", "zil"):
        a, b = (f() for f in cases[case])
        assert all(torch.equal(a[n], b[n]) for n in a), f"{case}: old and new give other numbers"
    load_avg = os.getloadavg()[0]
    print(f"model {args.model}, {args.rounds} rounds, {args.threads} thread(s), load {load_avg:.2f}")
    for case in args.cases:
        old_fn, new_fn = cases[case]
        calls = {"build": 200, "retyped": 1000}.get(case, 20 if args.model.startswith("mlp20") else 10)
        old_fn(), new_fn()
        to, tn, ratios = [], [], []
        for r in range(args.rounds):
            got = {}
            for tag, fn in (("old", old_fn), ("new", new_fn))[:: -1 if r % 2 else 1]:
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                got[tag] = (time.perf_counter() - t0) / calls * 1e6
            to.append(got["old"])
            tn.append(got["new"])
            ratios.append(got["new"] / got["old"])
        q = sorted(ratios)
        span = lambda v: f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"  # noqa: E731
        print(f"{case:8s} old us {span(to)}  new us {span(tn)}  new/old paired {statistics.median(ratios):.3f} "
              f"(quartiles {q[len(q) // 4]:.3f}-{q[3 * len(q) // 4]:.3f})", flush=True)
    print(f"load at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
