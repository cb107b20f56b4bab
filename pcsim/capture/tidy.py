"""What the built graph leaves out or adds around the captured calls: a recurrent kernel's dropout
argument, copies that change nothing, vertices no output reads, and the identity that carries an
output's loss where the output also feeds other vertices."""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.export.graph_signature import InputKind

from pcsim.graph.ir import ConstArg, ParentArg, Vertex
from pcsim.graph.level import fresh_name
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


def reaching(vertices: list[Vertex], outputs: list[str]) -> list[Vertex]:
    """The inputs and the vertices some output is computed from; the others (a forget gate at the first
    step, whose product with the zero cell state was dropped) have no error and move nothing."""
    needed = set(outputs)
    for v in reversed(vertices):
        if v.name in needed:
            needed.update(v.parents)
    return [v for v in vertices if v.name in needed or v.is_input]


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


def traced_from(module: nn.Module, program: torch.export.ExportedProgram, kind: dict) -> dict[str, Any]:
    """The Graph fields that tie it to the module it was traced from, by weak references (`refuse_changed`): the
    module itself, whose parameters must stay the graph's, the normalisations whose statistics follow the
    mode (batch ones in train mode, running ones in eval), with their mode now, and `folded_sources`."""
    modes = tuple((path or type(module).__name__, weakref.ref(m), m.training) for path, m in module.named_modules()
                  if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats)
    return {"traced_module": weakref.ref(module), "traced_modes": modes,
            "folded_sources": folded_sources(module, program, kind)}


def folded_sources(module: nn.Module, program: torch.export.ExportedProgram, kind: dict
                   ) -> tuple[tuple[str, weakref.ref, int, torch.Tensor | None], ...]:
    """The buffers the graph reads, and the buffers and frozen parameters constants were folded from at the trace
    (`self.scale.exp()`, a table computed from `inv_freq`), as (name, weak reference, version, copy of the value
    then, for a fold's source). The graph reads a buffer through a view, so changes made in place are seen, but
    not one assigned anew; a folded constant keeps the trace's value. `refuse_changed` refuses either."""
    specs = dict(zip((n for n in program.graph.nodes if n.op == "placeholder"), program.graph_signature.input_specs,
                     strict=True))
    named = {**dict(module.named_buffers(remove_duplicate=False)), **dict(module.named_parameters())}
    read = {n: named[s.target] for n, s in specs.items() if s.kind == InputKind.BUFFER and s.target in named
            and any(u in kind for u in n.users)}  # by a live call: a train-mode BatchNorm's statistics are not
    stack = [n for n in program.graph.nodes if n.op == "call_function" and isinstance(kind.get(n), ConstArg)]
    seen, folded = set(stack), set()
    while stack:  # each node once: every ancestor of a folded constant is one too
        n = stack.pop()
        if n in specs and specs[n].target in named:
            folded.add(n)
        for a in n.all_input_nodes:
            if a not in seen:
                seen.add(a)
                stack.append(a)
    sources = {specs[n].target: (named[specs[n].target], n in folded) for n in {*read, *folded}}
    return tuple((name, weakref.ref(t), t._version, t.detach().clone() if fold else None)
                 for name, (t, fold) in sorted(sources.items()))
