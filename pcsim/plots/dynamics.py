"""The activity of every population over time, from a Trajectory."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def plot_trajectory(traj, populations=None, neurons: int = 4, sample: int = 0) -> Figure:
    """One row per population: a few value neurons (left) and error neurons (right) of one sample.

    A dashed line marks target onset; the error wave shows as later onsets in deeper rows.
    """
    names = list(traj.values) if populations is None else list(populations)
    if not names:
        raise ValueError("the trajectory recorded no population to plot")
    fig = Figure(figsize=(10, 1.6 * len(names) + 0.8), layout="constrained")
    axes = fig.subplots(len(names), 2, sharex=True, squeeze=False)
    t_on = traj.meta.get("t_on") if traj.meta.get("target_shown") else None
    for row, name in enumerate(names):
        for col, (group, label) in enumerate(((traj.values, "value"), (traj.errors, "error"))):
            ax = axes[row, col]
            data = np.asarray(group[name])
            flat = data[:, sample].reshape(len(traj.t), -1) if data.ndim > 1 else data.reshape(len(traj.t), 1)
            ax.plot(traj.t, flat[:, :neurons], lw=1)
            if t_on is not None:
                ax.axvline(t_on, color="k", ls="--", lw=0.8)
            ax.set_ylabel(f"{name}\n{label}", fontsize=8)
            ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("time")
    fig.suptitle(f"{traj.meta.get('backend', '')} {traj.meta.get('method', '')}: value (left) and error (right) "
                 f"populations, first {neurons} neurons of sample {sample}", fontsize=9)
    return fig
