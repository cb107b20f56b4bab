"""What the built graph leaves out or adds around the captured calls: a recurrent kernel's dropout
argument, copies that change nothing, vertices no output reads, and the identity that carries an
output's loss where the output also feeds other vertices."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.fx as fx

from pcsim.graph.ir import ParentArg, Vertex
from pcsim.graph.level import fresh_name
from pcsim.graph.provenance import user_stacklevel
from pcsim.ops.table import identity


def without_dropout(n: fx.Node) -> tuple:
    """The node's arguments with a `dropout` probability set to 0 (a fused recurrent layer's): pcsim runs
    dropout as the identity, as in eval mode, everywhere (the ops `dropout` and `native_dropout` are
    replaced by the identity in the op table)."""
    schema = getattr(n.target, "_schema", None)
    names = [a.name for a in schema.arguments] if schema is not None else []
    i = names.index("dropout") if "dropout" in names else len(n.args)
    return n.args if i >= len(n.args) else (*n.args[:i], 0.0, *n.args[i + 1:])


def unchanged(n: fx.Node, value: Any, values: dict) -> bool:
    """Whether the call's result is its first argument's value, element for element and in memory layout."""
    source = values.get(n.args[0]) if n.args and isinstance(n.args[0], fx.Node) else None
    return (isinstance(value, torch.Tensor) and isinstance(source, torch.Tensor) and value.shape == source.shape
            and value.stride() == source.stride() and value.dtype == source.dtype and value.device == source.device)


def upstream(vertices: list[Vertex], outputs) -> list[Vertex]:
    """The inputs and the vertices some of `outputs` is computed from, in order. The others (a forget gate at the
    first step, whose product with the zero cell state was dropped) have no error and move nothing."""
    needed = set(outputs)
    for v in reversed(vertices):
        if v.name in needed:
            needed.update(v.parents)
    return [v for v in vertices if v.name in needed or v.is_input]


def computed_from(nodes: list[fx.Node], through=lambda n: True) -> set[fx.Node]:
    """`nodes` and the program's nodes they are computed from, following the inputs of those `through` allows."""
    seen: set[fx.Node] = set()
    while nodes:
        n = nodes.pop()
        if n not in seen:
            seen.add(n)
            if through(n):
                nodes.extend(n.all_input_nodes)
    return seen


def sink_outputs(vertices: list[Vertex], outputs: list[str]) -> list[str]:
    """Outputs that also feed other vertices get an identity child that carries the loss. So does each return of
    a tensor returned more than once (`return h, h`; a Hugging Face output's last hidden state, again in its
    `hidden_states`): each has its own target, and one vertex can be clamped to only one."""
    used = {p for v in vertices for p in v.parents}
    names = {v.name for v in vertices}
    result = []
    for o in outputs:
        if o in used or outputs.count(o) > 1:
            sink = fresh_name(o + "__output", names)
            src = next(v for v in vertices if v.name == o)
            vertices.append(Vertex(sink, "identity", src.shape, src.dtype, parents=(o,), fn=identity,
                                   args=(ParentArg(0),), source=f"loss carrier for output '{o}'"))
            o = sink
        result.append(o)
    return result


def not_an_output(i: int, kind: Any) -> str:
    """Why output #i, captured as `kind` (a clamped vertex's name or a constant), cannot be one: said
    as it is (a module whose parameters are all frozen heard that its output was 'not computed from the parameters')."""
    if isinstance(kind, str):
        what = ("is an input, or computed from the inputs and constants (buffers, frozen parameters) alone: no "
                "trainable parameter moves it, so it has no error to learn from")
    else:
        what = "is a constant (computed from buffers, frozen parameters or nothing that varies): it has no error"
    return f"output #{i} {what}"


def warn_dropouts(dropouts: list[str]) -> None:
    """Say once that the dropouts captured (described in `dropouts`) run as the identity."""
    if dropouts:
        more = f" (and {len(dropouts) - 1} more)" if len(dropouts) > 1 else ""
        warnings.warn(f"{dropouts[0]}{more}: pcsim runs dropout as the identity, as in eval mode, so that its rules "
                      "and autograd see one deterministic function (module.eval() or training=False silences this)",
                      stacklevel=user_stacklevel())
