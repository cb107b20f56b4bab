"""Time per weight update and peak memory of BP, Z-IL, Fa-Z-IL and IL on every zoo model: the
repository's tables (`make bench`). The measurement is `pcsim.bench.rules`, also run as `pcsim bench`.

    .venv/bin/python benchmarks/bench_rules.py [--models mlp resnet18] [--rules bp fa-zil-wavefront]
        [--reps 10] [--device cpu|cuda] [--threads N] [--budget-s 240] [--out benchmarks/results/rules_cpu]
        [--deadline-s S] [--keep-going]

`--out` is a stem here (OUT.json and OUT.md); `pcsim bench --out` names a folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PCSIM_MODELS", str(ROOT / "models"))  # the zoo of this checkout, from any directory

import torch  # noqa: E402,F401

import pcsim  # noqa: E402,F401 - compare_commits.py reads which pcsim this script imports
from pcsim.bench.rules import DIMS, RULES, add_arguments, case, machine, measure, run  # noqa: E402,F401


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--out", default=None, help="output stem (default benchmarks/results/rules_DEVICE)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"rules_{args.device.split(':')[0]}"
    return run(args, out)


if __name__ == "__main__":
    sys.exit(main())
