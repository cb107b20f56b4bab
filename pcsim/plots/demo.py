"""The figures of `pcsim demo`: backends overlaid (`plot_backends`), and BP beside Z-IL in training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from pcsim.plots.dynamics import plot_backends

__all__ = ["plot_backends", "plot_training"]

ZERO_FLOOR = 1e-18  # where an exact zero is drawn on a log axis


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
