"""`level()`: insert identity vertices so every path from a vertex to an output has one length.

Z-IL is exact only on levelled graphs (the AAAI version's Figure 3): a vertex whose children sit
at different distances from the output would receive its error in pieces at different steps.
Each latent vertex gets level L = its longest distance to an output; an edge p -> v with
L(p) > L(v) + 1 is routed through a chain of identity vertices at levels L(p)-1, ..., L(v)+1.
One chain per parent is shared by all its children, so a parent feeding several skipped levels
costs L(p) - min L(child) - 1 identities in all. Inputs are clamped, so their edges are left alone.

A vertex with a single latent parent and a smaller value (one gate of an LSTM's four, `chunk(...)[k]`)
is raised to level L(p) - 1 instead, so that the chain runs below it, over the smaller tensor:
identity vertices are real populations that Z-IL updates at every step, and a chain of H-wide
identities costs a quarter of one over the 4H-wide pre-activation.
"""

from __future__ import annotations

import math
from dataclasses import replace

from pcsim.graph.ir import Graph, ParentArg, Vertex


def identity(x):
    """The inserted vertices' function: pass the value through unchanged."""
    return x


def fresh_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_`, `base__`, ...: the first not in `taken`, which it is added to."""
    name = base
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _raised(graph: Graph) -> dict[str, int]:
    """Each latent vertex's level: its longest distance to an output, or one below its parent's (see above)."""
    levels = dict(graph.max_distance)
    outputs = set(graph.outputs)
    for v in graph.vertices:  # topological: a parent's level is final before its children's
        if v.name not in levels or v.name in outputs:
            continue
        latent = [p for p in v.parents if p not in graph.clamped]
        if len(latent) == 1 and levels[latent[0]] > levels[v.name] + 1 \
                and math.prod(v.shape) < math.prod(graph[latent[0]].shape):
            levels[v.name] = levels[latent[0]] - 1
    return levels


def level(graph: Graph) -> Graph:
    """Return a levelled copy of `graph` (the same graph when it is levelled already)."""
    if graph.is_levelled:
        return graph
    levels = _raised(graph)
    taken = {v.name for v in graph.vertices}
    chains: dict[str, dict[int, str]] = {}  # parent -> {level: identity vertex at that level}
    out: list[Vertex] = []

    def at_level(parent: Vertex, target: int) -> str:
        chain = chains.setdefault(parent.name, {levels[parent.name]: parent.name})
        current = min(chain)
        while current > target:
            current -= 1
            if current not in chain:
                chain[current] = fresh_name(f"{parent.name}__level{current}", taken)
                out.append(Vertex(chain[current], "identity", parent.shape, parent.dtype, parents=(chain[current + 1],),
                                  fn=identity, args=(ParentArg(0),), inserted=True,
                                  source=f"identity inserted by level() below '{parent.name}'"))
        return chain[target]

    for v in graph.vertices:
        if v.name in graph.clamped or v.name not in levels:
            out.append(v)
            continue
        below = levels[v.name] + 1  # the level of v's parents; at_level adds the identities it needs to `out`
        parents = tuple(p if p in graph.clamped or levels[p] == below else at_level(graph[p], below)
                        for p in v.parents)
        out.append(replace(v, parents=parents) if parents != v.parents else v)
    levelled = replace(graph, vertices=tuple(out))
    assert levelled.is_levelled, "level() left an edge that skips levels"
    return levelled
