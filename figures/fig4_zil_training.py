"""Figure 4: Z-IL and BP trained side by side (learning curves on top of each other, divergence at
rounding level), and the C1, C2 and C3 ablations diverging from BP over iterations."""

from __future__ import annotations

import copy

import numpy as np
import torch
from matplotlib.figure import Figure

import pcsim
from pcsim.check import autograd_gradients
from pcsim.training.data import digits

try:
    from ._common import script_main, small_mlp
except ImportError:  # run as a file, `python figures/figN_name.py`: Python put its folder on sys.path
    from _common import script_main, small_mlp

CONFIG = {"seed": 0, "iterations": 300, "batch": 32, "lr": 0.05, "eval_every": 25}
SMOKE = {"seed": 0, "iterations": 6, "batch": 16, "lr": 0.05, "eval_every": 3}


def _variants(depth: int) -> dict:
    return {
        "Z-IL": lambda g, x, y: pcsim.zil(g, (x,), y, "ce"),
        "C1 broken (random start)": lambda g, x, y: pcsim.zil(g, (x,), y, "ce", init="random"),
        "C2 broken (all at t = depth)": lambda g, x, y: pcsim.zil(g, (x,), y, "ce",
                                                                 schedule={n: depth for n in g.level().latent}),
        "C3 broken (gamma = 0.5)": lambda g, x, y: pcsim.zil(g, (x,), y, "ce", gamma=0.5),
    }


def compute(config: dict) -> dict:
    data = digits(seed=config["seed"]).to(torch.float64)
    base = small_mlp(config["seed"])
    gen = torch.Generator().manual_seed(config["seed"])
    x0 = data.x_train[: config["batch"]]
    graph = pcsim.trace(base, x0)
    variants = _variants(graph.level().depth)
    models = {"BP": copy.deepcopy(base), **{k: copy.deepcopy(base) for k in variants}}
    graphs = {k: pcsim.trace(m, x0) for k, m in models.items() if k != "BP"}
    divergence = {k: [] for k in variants}
    accuracy = {k: [] for k in ("BP", "Z-IL")}
    steps = []
    n = len(data.x_train) // config["batch"] * config["batch"]
    order = torch.randperm(len(data.x_train), generator=gen)[:n].reshape(-1, config["batch"])
    for it in range(config["iterations"]):
        idx = order[it % len(order)]
        x, y = data.x_train[idx], data.y_train[idx]
        ref = autograd_gradients(models["BP"], (x,), y, "ce")
        updates = {"BP": ref}
        for k, fn in variants.items():
            updates[k] = fn(graphs[k], x, y)
        with torch.no_grad():
            for k, m in models.items():
                for name, p in m.named_parameters():
                    p -= config["lr"] * updates[k][name] / len(idx)
        flat = {k: torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for k, m in models.items()}
        for k in variants:
            diff = float((flat[k] - flat["BP"]).abs().sum())
            divergence[k].append(diff if np.isfinite(diff) else np.nan)
        if it % config["eval_every"] == 0 or it == config["iterations"] - 1:
            steps.append(it + 1)
            with torch.no_grad():
                for k in accuracy:
                    accuracy[k].append(float((models[k](data.x_test).argmax(1) == data.y_test).double().mean()))
    return {"divergence": divergence, "accuracy": accuracy, "eval_steps": steps}


def plot(data: dict) -> Figure:
    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(data["eval_steps"], data["accuracy"]["BP"], "o-", lw=3, alpha=0.4, label="BP")
    left.plot(data["eval_steps"], data["accuracy"]["Z-IL"], "k.--", label="Z-IL")
    left.set(xlabel="iteration", ylabel="test accuracy", title="digits, MLP 64-32-32-10: learning curves")
    left.legend()
    floor = 1e-18
    for k, v in data["divergence"].items():
        right.semilogy(np.arange(1, len(v) + 1), np.maximum(np.asarray(v, dtype=float), floor), label=k)
    right.axhline(floor, color="grey", lw=0.5)
    right.set(xlabel="iteration", ylabel="sum |theta - theta_BP|  (0 drawn at 1e-18)",
              title="divergence from BP (float64)")
    right.legend(fontsize=8)
    return fig


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
