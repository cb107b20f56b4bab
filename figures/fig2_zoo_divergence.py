"""Figure 2 (the paper's Table 1): how far Z-IL and Fa-Z-IL are from backprop on each zoo model,
on the levelled graph and on the graph as traced.

The numbers are `pcsim.table.zoo_table`'s, the code behind `pcsim check --all` (figures/table1.md):
per model, the largest over parameters of ||update - autograd|| / ||autograd||. The full
configuration runs every zoo model at its default size (minutes); the smoke one small builds.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time

import numpy as np
import torch
from matplotlib.figure import Figure

from pcsim.numerics import tolerance
from pcsim.table import zoo_table

try:
    from ._common import script_main
except ImportError:  # run as a file, `python figures/figN_name.py`: Python put its folder on sys.path
    from _common import script_main

# models None: every zoo model at its default size; threads 1 as `make check-zoo` (figures/table1.md)
CONFIG = {"models": None, "dims": {}, "dtype": "float64", "threads": 1}
SMOKE = {"models": ["cnn", "lstm", "mlp", "residual_mlp", "rnn", "tied_autoencoder"], "dtype": "float64",
         "threads": None,
         "dims": {"mlp": {"input_shape": [16], "hidden": [8, 8], "batch": 2},
                  "cnn": {"batch": 2},
                  "residual_mlp": {"hidden": 4, "batch": 2},
                  "rnn": {"input_shape": [4, 3], "hidden_size": 4, "batch": 2},
                  "lstm": {"input_shape": [3, 4], "hidden_size": 4, "batch": 2},
                  "tied_autoencoder": {"input_shape": [16], "code": 4, "batch": 2}}}

# series drawn: (table column, legend label, marker, colour)
SERIES = (("Z-IL", "Z-IL, levelled", "o", "#1c4587"),
          ("Fa-Z-IL wavefront", "Fa-Z-IL wavefront", "s", "#38761d"),
          ("Fa-Z-IL autonomous", "Fa-Z-IL autonomous", "^", "#6aa84f"),
          ("Z-IL unlevelled", "Z-IL on the graph as traced", "X", "#cc0000"))
FLOOR, CEILING = 1e-18, 1e18  # where exact zeros and infinities (or NaN) are drawn on the log axis


def _dims(config: dict) -> dict:
    """JSON lists back to the tuples build() expects."""
    return {m: {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
            for m, d in config.get("dims", {}).items()}


def compute(config: dict) -> dict:
    dtype = getattr(torch, config["dtype"])
    threads = torch.get_num_threads()
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    start = time.perf_counter()
    try:
        rows = zoo_table(config["models"], dtype=dtype, dims=_dims(config),  # minutes at full size: say where it is
                         progress=lambda line: print(f"  fig2 {line}", file=sys.stderr, flush=True))
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    return {"rows": [dataclasses.asdict(r) for r in rows], "dtype": config["dtype"], "tolerance": tolerance(dtype),
            "unit_roundoff": torch.finfo(dtype).eps / 2, "wall_seconds": time.perf_counter() - start,
            "torch_threads": used}


def _shown(x: float) -> float:
    if math.isnan(x) or math.isinf(x):
        return CEILING
    return min(max(x, FLOOR), CEILING)


def plot(data: dict) -> Figure:
    rows = data["rows"]
    fig = Figure(figsize=(max(6.5, 0.85 * len(rows) + 2.5), 4.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(rows))
    width = 0.18
    shown = []
    for i, (column, label, marker, colour) in enumerate(SERIES):
        values = [_shown(r["deviation"].get(column, float("nan"))) for r in rows]
        offset = (i - (len(SERIES) - 1) / 2) * width
        ax.scatter(x + offset, values, marker=marker, color=colour, s=36, zorder=3, label=label)
        shown += values
    ax.axhline(data["unit_roundoff"] * 2, color="#38761d", linestyle=":", linewidth=0.9,
               label=f"{data['dtype']} rounding: machine epsilon {data['unit_roundoff'] * 2:.1e}")
    ax.axhline(data["tolerance"], color="#555555", linestyle="--", linewidth=0.9,
               label=f"tolerance of pcsim check {data['tolerance']:.0e}")
    ax.set_yscale("log")
    top = CEILING if max(shown) >= CEILING else max(max(shown), data["tolerance"]) * 1e3
    ax.set_ylim(FLOOR / 10, top * 1e4)
    # exact zeros and infinities sit on their own labelled lines at the ends of the axis
    ticks = [10.0 ** k for k in range(-15, int(math.log10(top)) + 1, 5)]
    labels = [f"$10^{{{int(math.log10(t))}}}$" for t in ticks]
    ticks, labels = [FLOOR, *ticks], ["0 (bit-identical)", *labels]
    if top >= CEILING:
        ticks, labels = [*ticks[:-1], CEILING], [*labels[:-1], "inf / NaN"]
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.minorticks_off()
    for edge in (FLOOR, CEILING):
        ax.axhline(edge, color="#cccccc", linewidth=0.6, zorder=0)
    ax.set_xticks(x, [f"{r['model']}\n{r['identity']} id." for r in rows], fontsize=8)
    ax.set_ylabel("max over parameters of ||update - BP|| / ||BP||")
    ax.set_title(f"Z-IL and Fa-Z-IL against backprop on the model zoo ({data['dtype']}; "
                 f"'id.': identity vertices level() inserts)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", ncol=2, frameon=False)
    ax.grid(axis="y", which="major", alpha=0.3)
    return fig


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
