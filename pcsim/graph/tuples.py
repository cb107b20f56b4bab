"""Tuple-valued calls in a traced graph: `chunk`, `split`, a fused LSTM's `(output, (h_n, c_n))`.

Such a call is not a vertex; each item the program picks from it by integer index is one (a
vertex that recomputes the call and selects, `Vertex.select`). A nested result is returned flat
by its vertices' function (`Flattened`), so a single index selects any of its tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pcsim.ops.modules import ModuleCall


@dataclass(frozen=True)
class Flattened:
    """A call whose nested tuple result is returned flat, so one index selects any of its tensors."""

    fn: Any

    def __call__(self, *args, **kwargs):
        return tuple(item for _, item in leaves(self.fn(*args, **kwargs)))


def leaves(value: Any, path: tuple[int, ...] = ()):
    """(path, item) of every non-tuple item of a nested tuple, depth first."""
    for i, item in enumerate(value):
        if isinstance(item, tuple | list):
            yield from leaves(item, path + (i,))
        else:
            yield path + (i,), item


@dataclass(frozen=True)
class TupleCall:
    """A tuple-valued call; each `getitem` picking one tensor of it becomes a vertex that recomputes
    and selects. `index` maps a tensor's path in the (possibly nested) tuple to its position in
    what `call` returns; `prefix` is the path of the sub-tuple this node stands for."""

    call: ModuleCall
    parents: tuple[str, ...]
    source: str
    index: dict[tuple[int, ...], int]
    prefix: tuple[int, ...] = ()

    @classmethod
    def of(cls, call: ModuleCall, parents: tuple[str, ...], source: str, value: tuple) -> TupleCall:
        paths = [p for p, _ in leaves(value)]
        if any(len(p) > 1 for p in paths):
            call = ModuleCall(call.op, Flattened(call.fn), call.args, call.kwargs, call.notes)
        return cls(call, parents, source, {p: i for i, p in enumerate(paths)})

    def pick(self, i: Any) -> tuple[int, ...] | None:
        """The path `self[i]` names, or None when `i` is not an integer index of this tuple."""
        width = len({p[len(self.prefix)] for p in self.index if p[:len(self.prefix)] == self.prefix})
        if not isinstance(i, int) or not -width <= i < width:
            return None
        return self.prefix + (i % width,)

    def items(self, value: tuple):
        """(path below `prefix`, position in the flat result, tensor) of every tensor this node stands
        for; `value` is this node's own value (the sub-tuple at `prefix`)."""
        for path, position in self.index.items():
            if path[:len(self.prefix)] == self.prefix:
                rest, item = path[len(self.prefix):], value
                for i in rest:
                    item = item[i]
                yield rest, position, item


def nested(leaves: list[tuple[tuple[int, ...], Any]]) -> tuple:
    """The nested tuple whose item at each path is the given leaf (paths in depth-first order)."""
    out: list = []
    for path, leaf in leaves:
        level = out
        for i in path[:-1]:
            if len(level) <= i:
                level.append([])
            level = level[i]
        level.append(leaf)

    def freeze(x):
        return tuple(freeze(i) for i in x) if isinstance(x, list) else x
    return freeze(out)
