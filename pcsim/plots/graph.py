"""A traced graph drawn by levels (from `pcsim.graph.layout`): inserted identity vertices marked."""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

STYLE = {  # kind -> (marker, face colour, edge colour, size, legend label)
    "input": ("s", "#bbbbbb", "#555555", 50, "input (clamped)"),
    "clamped": ("s", "#e5e5e5", "#888888", 40, "computed from inputs (clamped)"),
    "latent": ("o", "#6fa8dc", "#1c4587", 50, "vertex (value + error)"),
    "output": ("o", "#93c47d", "#274e13", 80, "output"),
    "identity": ("s", "#ea9999", "#cc0000", 60, "identity inserted by level()"),
    "unused": ("o", "white", "#999999", 30, "reaches no output"),
}


def plot_graph(lay, title: str = "", labels: bool | None = None, max_labels: int = 80,
               ax: Axes | None = None, arc_skips: bool = False) -> Figure:
    """One column per level (outputs right); edges as lines; `labels=None`: names if few vertices.
    With `ax`, draws into that axes (panels of a larger figure) and returns its figure.
    `arc_skips`: edges that span more than one level drawn as orange arcs (a straight skip edge
    along a chain would hide behind the chain's own edges)."""
    n = len(lay.names)
    if ax is None:
        per_column = max((sum(1 for v in lay.names if lay.column[v] == c) for c in range(lay.n_levels)), default=1)
        width = min(max(4.0, 0.9 * lay.n_levels + 1.5), 40.0)
        height = min(max(3.0, 0.6 * per_column + 1.5), 30.0)
        ax = Figure(figsize=(width, height), layout="constrained").subplots()
    fig = ax.figure
    skips = [(p, c) for p, c in lay.edges if arc_skips and lay.column[c] - lay.column[p] > 1]
    segments = [(lay.position(p), lay.position(c)) for p, c in lay.edges if (p, c) not in skips]
    ax.add_collection(LineCollection(segments, colors="#999999", linewidths=0.8, zorder=1))
    for p, c in skips:
        ax.add_patch(FancyArrowPatch(lay.position(p), lay.position(c), connectionstyle="arc3,rad=-0.4",
                                     arrowstyle="-", color="#e69138", linewidth=1.4, zorder=1))
    if skips:  # a legend entry for the arcs (patches would show as boxes)
        ax.plot([], [], color="#e69138", linewidth=1.4, label=f"skip edge over > 1 level ({len(skips)})")
    for kind, (marker, face, edge, size, label) in STYLE.items():
        members = [v for v in lay.names if lay.kind[v] == kind]
        if members:
            xs, ys = zip(*(lay.position(v) for v in members), strict=True)
            ax.scatter(xs, ys, marker=marker, s=size, c=face, edgecolors=edge, zorder=2,
                       label=f"{label} ({len(members)})")
    if labels or (labels is None and n <= max_labels):
        short = short_names(lay.names)
        for v in lay.names:  # slanted, so that neighbours' names run past each other rather than over
            x, y = lay.position(v)
            ax.annotate(short[v], (x, y), xytext=(2, 5), textcoords="offset points", ha="left", va="bottom",
                        rotation=30, rotation_mode="anchor", fontsize=6,
                        color="#cc0000" if lay.kind[v] == "identity" else "black")
    ax.set_xticks(range(lay.n_levels))
    ax.set_xticklabels([str(lay.n_levels - 1 - c) for c in range(lay.n_levels)], fontsize=7)
    ax.set_xlabel("level (distance to the output)")
    ax.set_yticks([])
    ax.margins(x=0.05, y=0.15)
    ax.spines[["top", "right", "left"]].set_visible(False)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    ident = len(lay.identity)
    ax.set_title(f"{title}{': ' if title else ''}{n} vertices, {lay.n_levels} levels, {ident} identity "
                 f"{'vertex' if ident == 1 else 'vertices'} inserted", fontsize=9)
    return fig


def short_names(names) -> dict[str, str]:
    """Each name's shortest dotted suffix that no other name ends with (`layer.0.attention.self.key` ->
    `self.key` when the graph has other `key`s): module paths are long, and their tails tell vertices apart."""
    parts = {n: n.split(".") for n in names}
    short = {}
    for n, p in parts.items():
        for k in range(1, len(p) + 1):
            tail = p[-k:]
            if not any(m != n and q[-k:] == tail for m, q in parts.items()):
                break
        short[n] = ".".join(tail)
    return short
