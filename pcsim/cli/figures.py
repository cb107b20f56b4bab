"""`pcsim figures [--smoke] [--only fig4,fig7] [--dir DIR]`: run every fig*.py script of the figure folder
(compute, plot, save), each loaded as a module of a package made for its folder (`_load`), sys.path untouched.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import sys
import time
import types
from pathlib import Path

from pcsim import paths


def figures_dir(*, must_exist: bool = False) -> Path:
    """The figure folder: `pcsim figures --dir DIR`, else $PCSIM_FIGURES, else ./figures."""
    return paths.folder("figures", must_exist=must_exist)


def add_parser(commands) -> None:
    p = commands.add_parser("figures", help="regenerate the figures into figures/out/",
                            description="Run every figures/fig*.py: compute(config) -> data, plot(data) -> Figure; "
                                        "the PNG and a JSON with the seed, config and versions go to figures/out/ "
                                        "(figures/out/smoke/ with --smoke). The full fig2 runs the whole zoo "
                                        "(minutes); the full fig6 reads benchmarks/results/rules_cpu.json "
                                        "(make bench).")
    p.add_argument("--smoke", action="store_true", help="tiny configurations: checks that every figure runs")
    p.add_argument("--only", default=None, help="comma-separated figure names, e.g. fig4,fig7")
    p.add_argument("--dir", default=None, metavar="DIR",
                   help="the folder of figure scripts (default: $PCSIM_FIGURES, else ./figures); PNGs go to DIR/out/")


def _load(path: Path):
    """A figure script (or `_common.py`) as a module of a package whose only search location is its folder,
    registered under a name unique to the folder's path: `from ._common import` works."""
    folder = Path(path).parent.resolve()
    name = f"_pcsim_figures_{hashlib.sha1(str(folder).encode()).hexdigest()[:12]}"
    if name not in sys.modules:
        package = types.ModuleType(name, f"the figure scripts in {folder}")
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    return importlib.import_module(f"{name}.{Path(path).stem}")


def run(args: argparse.Namespace) -> int:
    with paths.using(figures=args.dir):
        folder = figures_dir(must_exist=True)
        scripts = sorted(folder.glob("fig*.py"))
        if not scripts:  # a --dir naming the wrong folder wrote '0 of 0 figure(s)' and exited 0
            raise ValueError(f"{folder} holds no figure script (fig*.py): pass --dir the folder of the figure scripts "
                             "(the repository's figures/)")
        if args.only:
            wanted = {name.strip() for name in args.only.split(",") if name.strip()}
            # every name must match: a misspelt one was dropped and the others ran, exit 0
            unknown = sorted(wanted - {n for s in scripts for n in (s.stem.split("_")[0], s.stem)})
            if unknown or not wanted:
                named = f"no figure {', '.join(unknown)}" if unknown else "none"
                raise ValueError(f"--only {args.only!r} names {named}; the figures are "
                                 f"{', '.join(s.stem.split('_')[0] for s in scripts)} (or their scripts' names)")
            scripts = [s for s in scripts if s.stem.split("_")[0] in wanted or s.stem in wanted]
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
