"""`pcsim figures [--smoke] [--only fig4,fig7]`: run every figures/fig*.py script (compute, plot, save)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import pcsim


def figures_dir() -> Path:
    return Path(pcsim.__file__).resolve().parent.parent / "figures"


def add_parser(commands) -> None:
    p = commands.add_parser("figures", help="regenerate the figures into figures/out/",
                            description="Run every figures/fig*.py: compute(config) -> data, plot(data) -> Figure; "
                                        "the PNG and a JSON with the seed, config and versions go to figures/out/ "
                                        "(figures/out/smoke/ with --smoke). The full fig2 runs the whole zoo "
                                        "(minutes); the full fig6 reads benchmarks/results/rules_cpu.json "
                                        "(make bench).")
    p.add_argument("--smoke", action="store_true", help="tiny configurations: checks that every figure runs")
    p.add_argument("--only", default=None, help="comma-separated figure names, e.g. fig4,fig7")


def _load(path: Path):
    root = str(path.parent.parent)
    if root not in sys.path:  # figure scripts import figures._common
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"figures.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_command(args: argparse.Namespace) -> int:
    scripts = sorted(figures_dir().glob("fig*.py"))
    if args.only:
        wanted = set(args.only.split(","))
        scripts = [s for s in scripts if s.stem.split("_")[0] in wanted or s.stem in wanted]
        if not scripts:
            raise ValueError(f"no figure matches --only {args.only}")
    failed = []
    begin = time.perf_counter()
    for path in scripts:
        module = _load(path)
        common = _load(path.with_name("_common.py"))
        config = module.SMOKE if args.smoke else module.CONFIG
        start = time.perf_counter()
        try:
            data = module.compute(config)
            png = common.save(path.stem.split("_")[0], module.plot(data), config, data, args.smoke)
        except Exception as e:  # noqa: BLE001 - report and go on with the other figures
            failed.append(path.stem)
            print(f"{path.stem}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        print(f"{path.stem}: wrote {png} ({time.perf_counter() - start:.1f} s)", flush=True)
    print(f"{len(scripts) - len(failed)} of {len(scripts)} figure(s) written in {time.perf_counter() - begin:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0
