"""Figure 7: how exact Z-IL's timing must be. Each level's update taken at step d + k, as divergence
from BP; only the diagonal k = 0 is at rounding level."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

import pcsim
from pcsim.analysis import timing_sensitivity
from pcsim.training.data import digits

try:
    from ._common import script_main, small_mlp
except ImportError:  # run as a file, `python figures/figN_name.py`: Python put its folder on sys.path
    from _common import script_main, small_mlp

CONFIG = {"seed": 0, "batch": 32, "sizes": [64, 32, 32, 32, 32, 10], "offsets": [-2, -1, 0, 1, 2, 3]}
SMOKE = {"seed": 0, "batch": 4, "sizes": [64, 8, 8, 10], "offsets": [-1, 0, 1]}


def compute(config: dict) -> dict:
    data = digits(seed=config["seed"]).to(torch.float64)
    x, y = data.x_train[: config["batch"]], data.y_train[: config["batch"]]
    graph = pcsim.trace(small_mlp(config["seed"], sizes=tuple(config["sizes"])), x)
    levels, offsets, matrix = timing_sensitivity(graph, (x,), y, "ce", offsets=config["offsets"])
    return {"levels": levels, "offsets": offsets, "matrix": matrix}


def plot(data: dict) -> Figure:
    m = np.asarray(data["matrix"], dtype=float)
    shown = np.where(np.isnan(m), np.nan, np.maximum(m, 1e-17))
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(shown, norm=LogNorm(vmin=1e-17, vmax=max(1.0, np.nanmax(shown))), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(data["offsets"])), [f"{k:+d}" for k in data["offsets"]])
    ax.set_yticks(range(len(data["levels"])), data["levels"])
    ax.set(xlabel="update step offset k (update at t = d + k)", ylabel="level d (distance to output)",
           title="Z-IL timing sensitivity: divergence from BP (float64)")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if np.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.0e}", ha="center", va="center", fontsize=7,
                        color="w" if m[i, j] < 1e-6 else "k")
    fig.colorbar(im, ax=ax, label="||update - BP|| / ||BP||")
    return fig


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
