"""Readable, stable vertex names: the module path where the capture gives one.

A vertex made by a leaf module's only call is named by the module's path (`fc1`,
`encoder.layer.0.attention.self.query`); a module that makes several vertices names them
`path.op` (`layer1.0.add`), or `path`, `path_1`, ... when they are repeated calls of one op (a cell
applied at every time step). Vertices of the top-level forward keep the capture's own node names
(`tanh`, `add_1`). A vertex that picks an item of a tuple-valued call (a fused LSTM's `h_n`) adds
the item's index when more than one item is used.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch.fx as fx

from pcsim.graph.level import fresh_name
from pcsim.graph.provenance import user_line
from pcsim.ops.table import op_name

_SUFFIX = re.compile(r"_\d+$")


def module_path(n: fx.Node) -> str:
    """The innermost module the node was computed in ('' for the top-level forward)."""
    stack = n.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, _ = list(stack.values())[-1]
    return path if isinstance(path, str) else ""


def where(n: fx.Node, why: str = "", frame: bool = True) -> str:
    """"op name ('node') at file.py:12: why", then the user's frame unless `frame` is False."""
    line = user_line(n.meta.get("stack_trace"))
    text = f"op {op_name(n.target)} ('{n.name}')" + (f" at {line.short}" if line else "") + (f": {why}" if why else "")
    return text + (f"\n{line}" if line and frame else "")


class VertexNamer:
    """Hands out provisional names while a graph is built, then the readable ones (`final`)."""

    def __init__(self):
        self._taken: set[str] = set()
        # module path -> (provisional name, op label) of each vertex made there
        self._groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self._items: dict[str, set[int]] = defaultdict(set)  # a tuple-valued call's name -> the items used

    def take(self, name: str) -> str:
        """A name used as it is (the inputs keep their argument names)."""
        self._taken.add(name)
        return name

    def name(self, origin: fx.Node, select: int | None) -> str:
        label = origin.name if select is None else f"{origin.name}#{select}"
        if select is not None:
            self._items[origin.name].add(select)
        self._groups[module_path(origin)].append((label, _SUFFIX.sub("", origin.name)))
        return label

    def final(self) -> dict[str, str]:
        """Provisional name -> readable name, unique."""
        renamed: dict[str, str] = {}
        taken = set(self._taken)
        for path, members in self._groups.items():
            same_op = len({op for _, op in members}) == 1
            calls = list(dict.fromkeys(label.partition("#")[0] for label, _ in members))  # items of one call: one
            for label, _ in members:
                call, _, index = label.partition("#")
                i = calls.index(call)
                if not path:
                    base = call
                elif len(calls) == 1 or (same_op and i == 0):
                    base = path
                else:
                    base = f"{path}_{i}" if same_op else f"{path}.{call}"
                if index and len(self._items[call]) > 1:
                    base = f"{base}_{index}"
                renamed[label] = fresh_name(base, taken)
        return renamed
