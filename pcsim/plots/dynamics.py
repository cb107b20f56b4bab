"""The activity of every population over time, from one Trajectory or several overlaid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

LINESTYLES = ("-", "--", ":", "-.")


def plot_backends(trajectories: Mapping[str, object], populations: Sequence[str] | None = None, neurons: int = 3,
                  sample: int = 0) -> Figure:
    """One row per population (None: every one the first trajectory recorded), value (left) and error (right) of
    one sample; each trajectory in its own line style, one colour per neuron, so agreeing backends draw on top of
    each other. A dashed line marks target onset; the error wave shows as later onsets in deeper rows."""
    if not trajectories:
        raise ValueError("no trajectory to plot")
    for label, traj in trajectories.items():
        if not all(hasattr(traj, a) for a in ("t", "values", "errors", "meta")):
            raise TypeError(f"trajectory '{label}' is a {type(traj).__name__}, not a pcsim Trajectory")
    if isinstance(populations, str):  # one name, not its letters
        populations = [populations]
    names = list(next(iter(trajectories.values())).values if populations is None else populations)
    if not names:
        raise ValueError("the trajectory recorded no population to plot")
    _check(trajectories, names, neurons, sample)
    fig = Figure(figsize=(10, 1.5 * len(names) + 1.0), layout="constrained")
    axes = fig.subplots(len(names), 2, sharex=True, squeeze=False)
    for style, (label, traj) in zip(LINESTYLES, trajectories.items(), strict=False):
        t_on = traj.meta.get("t_on") if traj.meta.get("target_shown") else None
        for row, name in enumerate(names):
            for col, group in enumerate((traj.values, traj.errors)):
                data = np.asarray(group[name])
                data = data[:, sample].reshape(len(traj.t), -1) if data.ndim > 1 else data.reshape(len(traj.t), 1)
                ax = axes[row, col]
                for k in range(min(neurons, data.shape[1])):
                    ax.plot(traj.t, data[:, k], ls=style, lw=1.2, color=f"C{k}",
                            label=label if (row, col, k) == (0, 0, 0) else None)
                if t_on is not None:
                    ax.axvline(t_on, color="k", ls="--", lw=0.6)
    for row, name in enumerate(names):
        axes[row, 0].set_ylabel(f"{name}\nvalue x", fontsize=8)
        axes[row, 1].set_ylabel(f"{name}\nerror eps", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time (target shown at the dashed line)")
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle("value and error populations: " + " vs ".join(trajectories)
                 + f" (first {neurons} neurons of sample {sample})", fontsize=9)
    return fig


def _check(trajectories: Mapping[str, object], names: list[str], neurons: int, sample: int) -> None:
    """What the figure is asked for exists, said by name: numpy's IndexError for a sample past the batch and a
    KeyError for a population a trajectory did not record said neither which nor what there is."""
    if neurons < 1:
        raise ValueError(f"neurons must be >= 1, got {neurons}")
    for label, traj in trajectories.items():
        missing = [n for n in names if n not in traj.values]
        if missing:
            raise ValueError(f"trajectory '{label}' has no population {', '.join(map(repr, missing))}; it recorded "
                             f"{list(traj.values)}")
        for name in names:
            shape = np.shape(traj.values[name])
            if len(shape) > 1 and not -shape[1] <= sample < shape[1]:
                raise ValueError(f"sample {sample} is outside population '{name}' of trajectory '{label}', which "
                                 f"holds {shape[1]} samples")


def plot_trajectory(traj, populations=None, neurons: int = 4, sample: int = 0) -> Figure:
    """`plot_backends` of one trajectory, labelled by its backend and method."""
    meta = getattr(traj, "meta", None) or {}  # not a Trajectory: plot_backends says so
    label = f"{meta.get('backend', '')} {meta.get('method', '')}".strip() or "trajectory"
    return plot_backends({label: traj}, populations, neurons, sample)
