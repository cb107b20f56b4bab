"""The figures of `pcsim demo`: backends overlaid on one set of axes, and BP beside Z-IL in training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

LINESTYLES = ("-", "--", ":", "-.")
ZERO_FLOOR = 1e-18  # where an exact zero is drawn on a log axis


def plot_backends(trajectories: Mapping[str, object], populations: Sequence[str], neurons: int = 3,
                  sample: int = 0) -> Figure:
    """One row per population, value (left) and error (right); each backend in its own line style,
    one colour per neuron, so agreeing backends draw on top of each other."""
    if not trajectories:
        raise ValueError("no trajectory to plot")
    fig = Figure(figsize=(10, 1.5 * len(populations) + 1.0), layout="constrained")
    axes = fig.subplots(len(populations), 2, sharex=True, squeeze=False)
    for style, (label, traj) in zip(LINESTYLES, trajectories.items(), strict=False):
        t_on = traj.meta.get("t_on") if traj.meta.get("target_shown") else None
        for row, name in enumerate(populations):
            for col, group in enumerate((traj.values, traj.errors)):
                data = np.asarray(group[name])[:, sample].reshape(len(traj.t), -1)
                ax = axes[row, col]
                for k in range(min(neurons, data.shape[1])):
                    ax.plot(traj.t, data[:, k], ls=style, lw=1.2, color=f"C{k}",
                            label=label if (row, col, k) == (0, 0, 0) else None)
                if t_on is not None:
                    ax.axvline(t_on, color="k", ls="--", lw=0.6)
    for row, name in enumerate(populations):
        axes[row, 0].set_ylabel(f"{name}\nvalue x", fontsize=8)
        axes[row, 1].set_ylabel(f"{name}\nerror eps", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time (target shown at the dashed line)")
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle("value and error populations, output layer at the bottom: " + " vs ".join(trajectories)
                 + f" (first {neurons} neurons)", fontsize=9)
    return fig


def plot_training(epochs: Sequence[int], curves: Mapping[str, Mapping[str, Sequence[float]]],
                  divergence: Sequence[float], title: str = "") -> Figure:
    """Learning curves of each rule on top of each other (train loss, test accuracy), and the
    largest parameter difference between the rules after each epoch (0 drawn at 1e-18)."""
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    loss_ax, acc_ax, div_ax = fig.subplots(1, 3)
    for (rule, rows), style in zip(curves.items(), (dict(lw=5, alpha=0.35), dict(color="k", ls="--", marker=".")),
                                   strict=False):
        loss_ax.plot(epochs, rows["train_loss"], label=rule, **style)
        acc_ax.plot(epochs, rows["test_acc"], label=rule, **style)
    loss_ax.set(xlabel="epoch", ylabel="train loss (batch mean)", title="training loss")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy", title="held-out accuracy")
    loss_ax.legend()
    acc_ax.legend()
    div_ax.semilogy(epochs, np.maximum(np.asarray(divergence, dtype=float), ZERO_FLOOR), "o-")
    div_ax.axhline(ZERO_FLOOR, color="grey", lw=0.5)
    div_ax.set(xlabel="epoch", ylabel="max |theta - theta_BP|  (0 drawn at 1e-18)", ylim=(ZERO_FLOOR / 10, 1.0),
               title="parameters: distance to BP's")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
