"""Figure 5: IL approaching BP, as relative error and angle, against T and gamma (strict and fixed
prediction), and against the output precision (Whittington & Bogacz's weak-feedback limit)."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

import pcsim
from pcsim.analysis import il_convergence
from pcsim.training.data import digits

try:
    from ._common import script_main, small_mlp
except ImportError:  # run as a file, `python figures/figN_name.py`: Python put its folder on sys.path
    from _common import script_main, small_mlp

CONFIG = {"seed": 0, "batch": 64, "steps": [1, 2, 5, 10, 20, 50, 100, 200, 500], "gammas": [0.05, 0.1, 0.2, 0.5],
          "precisions": [1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001], "precision_steps": 400}
SMOKE = {"seed": 0, "batch": 8, "steps": [1, 5], "gammas": [0.1], "precisions": [1.0, 0.1],
         "precision_steps": 10}


def compute(config: dict) -> dict:
    data = digits(seed=config["seed"]).to(torch.float64)
    x, y = data.x_train[: config["batch"]], data.y_train[: config["batch"]]
    graph = pcsim.trace(small_mlp(config["seed"]), x)
    by_steps = il_convergence(graph, (x,), y, "ce", gammas=config["gammas"], steps=config["steps"],
                              fixed_prediction=(False, True))
    by_precision = il_convergence(graph, (x,), y, "ce", gammas=[0.1], steps=[config["precision_steps"]],
                                  precisions=config["precisions"], fixed_prediction=(False,))
    return {"by_steps": by_steps, "by_precision": by_precision}


def plot(data: dict) -> Figure:
    fig = Figure(figsize=(14, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for fixed, ax in ((False, axes[0]), (True, axes[1])):
        rows = [r for r in data["by_steps"] if r["fixed_prediction"] == fixed]
        for gamma in sorted({r["gamma"] for r in rows}):
            sel = [r for r in rows if r["gamma"] == gamma]
            ax.loglog([r["steps"] for r in sel], [max(r["relative_error"], 1e-17) for r in sel], "o-",
                      label=f"gamma {gamma}")
        ax.set(xlabel="inference steps T", ylabel="||IL - BP|| / ||BP||",
               title="fixed prediction" if fixed else "strict IL (output precision 1)")
        ax.legend(fontsize=8)
    rows = data["by_precision"]
    ax = axes[2]
    ax.loglog([r["output_precision"] for r in rows], [r["relative_error"] for r in rows], "o-", label="rel. error")
    twin = ax.twinx()
    twin.semilogx([r["output_precision"] for r in rows], [r["angle_deg"] for r in rows], "s--", color="C1",
                  label="angle")
    ax.invert_xaxis()
    ax.set(xlabel="output precision (learning rate compensated)", ylabel="||IL - BP|| / ||BP||",
           title=f"strict IL, T = {rows[0]['steps']}, gamma 0.1")
    twin.set_ylabel("angle to BP (degrees)")
    ax.legend(loc="lower left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    return fig


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
