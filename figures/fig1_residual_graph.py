"""Figure 1 (the paper's Figure 3): a residual MLP block as traced, and after `level()`.

The skip edge from `tanh` to `add` jumps over `fc2`'s level, so Z-IL on the graph as traced is
not exact; `level()` routes it through one identity vertex and every edge then spans one level.
Vertices are placed by their distance to the output (`pcsim.graph.layout`), drawn by
`pcsim.plots.graph`; each panel names Z-IL's deviation from autograd (`pcsim.check`) on that graph.
"""

from __future__ import annotations

import dataclasses

import torch
from matplotlib.figure import Figure

import pcsim
from pcsim.graph.layout import Layout, layout
from pcsim.plots.graph import plot_graph
from pcsim.zoo import load_model_file

try:
    from ._common import script_main
except ImportError:  # run as a file, `python figures/figN_name.py`: Python put its folder on sys.path
    from _common import script_main

CONFIG = {"model": "residual_mlp", "seed": 0, "dims": {}}
SMOKE = {"model": "residual_mlp", "seed": 0, "dims": {"hidden": 4, "batch": 2}}


def compute(config: dict) -> dict:
    spec = load_model_file(config["model"])
    module, inputs, target = spec.build_model(seed=config["seed"], **config["dims"])
    graph = pcsim.trace(module, *inputs)
    panels = {}
    for name, g, level in (("as traced", graph, False), ("levelled", graph.level(), True)):
        report = pcsim.check(module, inputs, target, rule="zil", loss=spec.loss, level=level)
        panels[name] = {"layout": dataclasses.asdict(layout(g)), "zil_deviation": report.max_rel_diff,
                        "depth": g.depth, "identity": g.n_identity}
    return {"model": config["model"], "panels": panels}


def _layout(d: dict) -> Layout:
    """A Layout back from its dict (tuples may have become lists in JSON)."""
    return Layout(**{**d, "names": tuple(d["names"]), "edges": tuple(tuple(e) for e in d["edges"])})


def plot(data: dict) -> Figure:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (name, panel) in zip(axes, data["panels"].items(), strict=True):
        lay = _layout(panel["layout"])
        plot_graph(lay, title=f"{data['model']} {name}", labels=True, ax=ax, arc_skips=True)
        ax.set_ylim(-1.0, 1.2)
        ax.legend(loc="lower left", fontsize=7, frameon=False)
        verdict = "exact" if panel["zil_deviation"] <= pcsim.tolerance(torch.float64) else "not exact"
        ax.text(0.99, 0.02, f"Z-IL vs autograd: {panel['zil_deviation']:.1e} ({verdict})", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=8)
    fig.suptitle("Levelling a residual block: identity vertices on skip edges make every edge span one level",
                 fontsize=10)
    return fig


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
