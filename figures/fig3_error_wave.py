"""Figure 3: the error wave. After the target appears, each population's error grows later the
further it is from the output; value and error activity of a 5-level network in continuous time
(scipy RK45; the Brian2 panel is drawn when that backend is available)."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

import pcsim

try:
    from ._common import script_main, small_mlp
except ImportError:  # run as a file, `python figures/figN_name.py`: Python put its folder on sys.path
    from _common import script_main, small_mlp

CONFIG = {"seed": 0, "batch": 1, "t_end": 3.0, "tau_x": 0.2, "points": 301, "dt_brian2": 0.002}
SMOKE = {"seed": 0, "batch": 1, "t_end": 0.5, "tau_x": 0.2, "points": 11, "dt_brian2": 0.05}


def compute(config: dict) -> dict:
    net = small_mlp(config["seed"], sizes=(6, 6, 6, 6, 6, 3))
    gen = torch.Generator().manual_seed(config["seed"])
    x = torch.randn(config["batch"], 6, generator=gen, dtype=torch.float64)
    y = torch.randn(config["batch"], 3, generator=gen, dtype=torch.float64)
    graph = pcsim.trace(net, x)
    layers = sorted((v.name for v in graph.vertices if v.op == "linear"), key=graph.min_distance.get)
    times = np.linspace(0, config["t_end"], config["points"])
    runs = {"scipy RK45": dict(backend="scipy", method="RK45", record={"times": times})}
    runs["brian2 (numpy, Euler)"] = dict(backend="brian2", method="euler", dt=config["dt_brian2"],
                                           record=pcsim.Record(every_step=True))
    out = {"layers": layers, "levels": [graph.min_distance[n] for n in layers], "runs": {}}
    for label, kw in runs.items():
        try:
            tr = pcsim.simulate(graph, (x,), y, t_end=config["t_end"], tau_x=config["tau_x"], **kw)
        except (NotImplementedError, pcsim.PcsimError, ImportError) as e:
            out["runs"][label] = {"unavailable": str(e).splitlines()[0]}
            continue
        out["runs"][label] = {"t": tr.t, "errors": {n: np.abs(tr.errors[n][:, 0]).max(axis=1) for n in layers},
                              "values": {n: tr.values[n][:, 0, 0] for n in layers}}
    return out


def plot(data: dict) -> Figure:
    runs = data["runs"]
    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, len(runs), squeeze=False)
    for col, (label, run) in enumerate(runs.items()):
        top, bottom = axes[0, col], axes[1, col]
        if "unavailable" in run:
            for ax in (top, bottom):
                ax.text(0.5, 0.5, f"{label}: not available\n({run['unavailable'][:80]})", ha="center",
                        va="center", transform=ax.transAxes, fontsize=8)
                ax.set_axis_off()
            continue
        for name, level in zip(data["layers"], data["levels"], strict=True):
            top.semilogy(run["t"], np.maximum(run["errors"][name], 1e-16), label=f"layer {name} (level {level})")
            bottom.plot(run["t"], run["values"][name], label=f"layer {name}")
        top.set(xlabel="time", ylabel="max |eps|")
        top.set_title(f"{label}: |error| per layer after target onset (t = 0)", fontsize=9)
        bottom.set(title="value of one neuron per layer", xlabel="time", ylabel="x")
        if data["layers"]:
            top.legend(fontsize=7)
    return fig


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
