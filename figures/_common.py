"""Shared machinery of the figure scripts: each defines CONFIG, SMOKE, compute(config) -> data and
plot(data) -> Figure; `save` writes the PNG with its seed, config and package versions beside it."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch
from torch import nn

OUT = Path(__file__).resolve().parent / "out"


def versions() -> dict:
    import matplotlib
    import scipy

    import pcsim

    return {"pcsim": pcsim.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "matplotlib": matplotlib.__version__, "python": platform.python_version()}


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def save(name: str, fig, config: dict, data: dict, smoke: bool) -> Path:
    folder = OUT / "smoke" if smoke else OUT
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    fig.savefig(png, dpi=110)
    meta = {"figure": name, "smoke": smoke, "config": config, "versions": versions(), "data": _plain(data)}
    (folder / f"{name}.json").write_text(json.dumps(meta, indent=1))
    return png


def small_mlp(seed: int, sizes=(64, 32, 32, 10), activation=nn.Tanh) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes, sizes[1:], strict=False):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers[:-1]).double()


def script_main(path: str, argv: list[str] | None = None) -> int:
    """`python figures/figN_name.py [--smoke]`: the same as `pcsim figures [--smoke] --only figN`."""
    import argparse

    from pcsim.cli import main

    parser = argparse.ArgumentParser(description=f"regenerate {Path(path).stem} into figures/out/")
    parser.add_argument("--smoke", action="store_true", help="tiny configuration, into figures/out/smoke/")
    args = parser.parse_args(argv)
    return main(["figures", "--dir", str(Path(path).resolve().parent), "--only", Path(path).stem,
                 *(["--smoke"] if args.smoke else [])])
