"""A drawing layout of a graph by levels, and its DOT text: data only, no plotting.

Columns are levels: a latent vertex sits at its longest distance to an output (0 = the output,
drawn rightmost), so on a levelled graph every latent edge spans exactly one column. Clamped
vertices (inputs and what is computed from them alone) and vertices that reach no output sit one
column before their furthest child. Within a column, vertices are ordered by a few barycentre
sweeps (the mean slot of their neighbours), which keeps chains straight and crossings few.
"""

from __future__ import annotations

from dataclasses import dataclass

from pcsim.graph.ir import Graph

KINDS = ("input", "clamped", "latent", "identity", "output", "unused")


@dataclass(frozen=True)
class Layout:
    """Where each vertex goes: `column` (0 = inputs side) and `slot` within the column."""

    names: tuple[str, ...]  # topological order
    level: dict[str, int]  # distance to the output (drawing level)
    column: dict[str, int]  # n_levels - 1 - level: inputs left, outputs right
    slot: dict[str, float]  # vertical position, centred on 0
    kind: dict[str, str]  # one of KINDS
    ops: dict[str, str]
    edges: tuple[tuple[str, str], ...]  # (parent, child)
    n_levels: int

    @property
    def identity(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if self.kind[n] == "identity")

    def position(self, name: str) -> tuple[float, float]:
        return float(self.column[name]), self.slot[name]


def drawing_levels(graph: Graph) -> dict[str, int]:
    """Longest distance to an output for latent vertices; one more than the furthest child otherwise."""
    level = dict(graph.max_distance)
    for v in reversed(graph.vertices):
        if v.name not in level:
            below = [level[c] for c in graph.children[v.name] if c in level]
            level[v.name] = max(below) + 1 if below else 0
    return level


def _kind(graph: Graph, name: str) -> str:
    v = graph[name]
    if v.is_input:
        return "input"
    if v.inserted:
        return "identity"
    if name in graph.outputs:
        return "output"
    if name in graph.clamped:
        return "clamped"
    return "latent" if name in graph.max_distance else "unused"


def layout(graph: Graph, sweeps: int = 4) -> Layout:
    """Columns by level and slots by barycentre ordering."""
    level = drawing_levels(graph)
    n_levels = max(level.values(), default=0) + 1
    columns: dict[int, list[str]] = {}
    for v in graph.vertices:  # topological order is the first guess within a column
        columns.setdefault(n_levels - 1 - level[v.name], []).append(v.name)
    index = {n: float(i) for col in columns.values() for i, n in enumerate(col)}
    parents = {v.name: v.parents for v in graph.vertices}

    def reorder(col: list[str], neighbours) -> list[str]:
        def key(n: str) -> float:
            near = [index[m] for m in neighbours[n]]
            return sum(near) / len(near) if near else index[n]
        ordered = sorted(col, key=key)
        for i, n in enumerate(ordered):
            index[n] = float(i)
        return ordered

    for _ in range(sweeps):
        for c in sorted(columns):  # left to right, by parents
            columns[c] = reorder(columns[c], parents)
        for c in sorted(columns, reverse=True):  # right to left, by children
            columns[c] = reorder(columns[c], graph.children)
    slot = {n: i - (len(col) - 1) / 2 for col in columns.values() for i, n in enumerate(col)}
    return Layout(
        names=tuple(v.name for v in graph.vertices), level=level,
        column={n: n_levels - 1 - lv for n, lv in level.items()}, slot=slot,
        kind={v.name: _kind(graph, v.name) for v in graph.vertices},
        ops={v.name: v.op for v in graph.vertices},
        edges=tuple((p, v.name) for v in graph.vertices for p in v.parents), n_levels=n_levels)


_DOT_STYLE = {
    "input": 'shape=box, style=filled, fillcolor="#dddddd"',
    "clamped": 'shape=box, style=filled, fillcolor="#eeeeee"',
    "latent": 'shape=ellipse, style=filled, fillcolor="#cfe2f3"',
    "output": 'shape=doublecircle, style=filled, fillcolor="#d9ead3"',
    "identity": 'shape=square, style="filled,dashed", fillcolor="#f4cccc", color="#cc0000"',
    "unused": 'shape=ellipse, style=dotted',
}


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _quote(text: str) -> str:
    return f'"{_escape(text)}"'


def to_dot(lay: Layout, title: str = "graph") -> str:
    """Graphviz DOT text: left to right, one rank per level, identity vertices dashed red squares."""
    lines = [f"digraph {_quote(title)} {{", "  rankdir=LR;", "  node [fontsize=10];",
             f"  label={_quote(title + ' (red: identity vertices inserted by level())')};"]
    for n in lay.names:
        label = f'"{_escape(n)}\\n{_escape(lay.ops[n])}"'  # DOT's own line break
        lines.append(f"  {_quote(n)} [label={label}, {_DOT_STYLE[lay.kind[n]]}];")
    for col in range(lay.n_levels):
        members = [n for n in lay.names if lay.column[n] == col]
        if members:
            lines.append("  { rank=same; " + " ".join(_quote(n) + ";" for n in members) + " }")
    lines += [f"  {_quote(p)} -> {_quote(c)};" for p, c in lay.edges]
    return "\n".join([*lines, "}"]) + "\n"
