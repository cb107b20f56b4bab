"""A core ATen program as pcsim's Graph: which nodes are populations, and which are not.

Each node of the exported program is classified once, from what it reads and what it computed
on the example inputs (the program is run once, on the real parameters, by `_Recorder`):
- a user input: an input vertex, clamped to data;
- a parameter: a `ParamArg` slot of the vertices that read it, never a vertex;
- a function of parameters and constants alone (a transpose, a tied `W.T`, weight norm): a
  `Computed` slot, so autograd on the reading vertex's call reaches the parameters themselves;
- an integer or boolean function of a latent vertex (`scores == -inf`): a `Computed` slot too,
  recomputed inside each reading vertex's call (it has no derivative, so it is no population);
- a function of nothing that varies (buffers, `arange`, `full`, rotary tables): folded to a constant;
- a tensor computed from inputs alone (masks, position ids, a flattened image): a clamped vertex,
  recomputed from the data, with no error population;
- a floating-point tensor computed from a latent vertex: a latent vertex (a population);
- the item of a tuple-valued call (`native_layer_norm`, `split_with_sizes`, a fused LSTM): a vertex
  that runs the call and selects (`Vertex.select`).
Integer and boolean tensors are never populations.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.export.graph_signature import InputKind, OutputKind

from pcsim.capture.names import VertexNamer
from pcsim.errors import TraceError, UnsupportedOpError
from pcsim.graph.ir import INPUT_OP, Computed, ConstArg, Graph, ParamArg, ParentArg, Vertex, template_slots
from pcsim.graph.provenance import user_line
from pcsim.ops.table import entry, identity, op_name


class _Multi:
    """A tuple-valued call depending on vertices, before `getitem` picks its items."""

    def __init__(self, fn, args, kwargs, parents: list[str], node: fx.Node):
        self.fn, self.args, self.kwargs, self.parents, self.node = fn, args, kwargs, parents, node


class _Folded:
    """An integer or boolean function of latent vertices, templated afresh inside each reader's call."""

    def __init__(self, node: fx.Node):
        self.node = node


class _Recorder(fx.Interpreter):
    """Runs the program once on the real inputs, parameters and buffers, keeping every node's value."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        try:
            out = super().run_node(n)
        except Exception as e:  # noqa: BLE001 - reported with the user's line
            raise TraceError(f"the captured program failed at {where(n)}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
        self.values[n] = out
        return out


def where(n: fx.Node) -> str:
    """'op `name` at file.py:12' with the user's frame, for messages."""
    line = user_line(n.meta.get("stack_trace"))
    return f"op {op_name(n.target)} ('{n.name}')" + (f" at {line.short}\n{line}" if line else "")


class Builder:
    def __init__(self, module: nn.Module, program: torch.export.ExportedProgram, inputs: tuple[torch.Tensor, ...]):
        self.module, self.program, self.example = module, program, inputs
        self.params = dict(module.named_parameters())
        self.constants: dict[str, torch.Tensor] = {}
        self.kind: dict[fx.Node, Any] = {}  # node -> vertex name | ParamArg | ConstArg | Computed | _Multi | literal
        self.vertices: list[Vertex] = []
        self.inputs: list[str] = []
        self.latent: set[str] = set()
        self.namer = VertexNamer()

    # -- running the program ---------------------------------------------------------------------
    def _placeholder_values(self) -> list[Any]:
        sig, values, user = self.program.graph_signature, [], iter(self.example)
        buffers = dict(self.module.named_buffers(remove_duplicate=False))
        for spec in sig.input_specs:
            if spec.kind == InputKind.PARAMETER:
                values.append(self.params[spec.target])
            elif spec.kind == InputKind.BUFFER:
                values.append(buffers[spec.target] if spec.target in buffers else self.program.constants[spec.target])
            elif spec.kind == InputKind.CONSTANT_TENSOR:
                values.append(self.program.constants[spec.target])
            elif spec.kind == InputKind.USER_INPUT:
                values.append(next(user))
            else:
                raise UnsupportedOpError(f"the captured program takes a {spec.kind.name} input, which pcsim "
                                         "does not support")
        return values

    def run(self) -> Graph:
        gm = self.program.graph_module
        with torch.no_grad():
            recorder = _Recorder(gm)
            recorder.run(*self._placeholder_values())
        self.values = recorder.values
        specs = iter(self.program.graph_signature.input_specs)
        out_node = None
        for n in gm.graph.nodes:
            if n.op == "placeholder":
                self._placeholder(n, next(specs))
            elif n.op == "call_function":
                self._call(n)
            elif n.op == "output":
                out_node = n
        outputs = self._rename(self._outputs(out_node))
        outputs = _sink_outputs(self.vertices, outputs)
        return Graph(vertices=tuple(self.vertices), inputs=tuple(self.inputs), outputs=tuple(outputs),
                     params=self.params, constants=self.constants, param_names=tuple(self.params))

    # -- classification ---------------------------------------------------------------------------
    def _placeholder(self, n: fx.Node, spec) -> None:
        value = self.values[n]
        if spec.kind == InputKind.PARAMETER:
            self.kind[n] = ParamArg(spec.target)
        elif spec.kind == InputKind.USER_INPUT:
            name = self.namer.take(n.name)
            self.vertices.append(Vertex(name, INPUT_OP, tuple(value.shape), value.dtype, source="input"))
            self.inputs.append(name)
            self.kind[n] = name
        else:
            self.kind[n] = self._const(spec.target, value)

    def _const(self, name: str, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        key = name
        while key in self.constants and self.constants[key] is not value:
            key += "_"
        self.constants[key] = value.detach()
        return ConstArg(key)

    def _reads(self, n: fx.Node) -> set[str]:
        """What the node's arguments depend on: 'vertex', 'param'."""
        found: set[str] = set()

        def look(a: fx.Node) -> None:
            k = self.kind[a]
            if isinstance(k, str | _Multi | _Folded):
                found.add("vertex")
            elif isinstance(k, ParamArg | Computed):
                found.add("param")
        fx.node.map_arg((n.args, n.kwargs), look)
        return found

    def _call(self, n: fx.Node) -> None:
        value, reads = self.values[n], self._reads(n)
        if n.target is operator.getitem and isinstance(self.kind[n.args[0]], _Multi):
            self._item(n, self.kind[n.args[0]], n.args[1], value)
            return
        spec = entry(n.target)
        fn = spec.replace or n.target
        if "vertex" not in reads:
            if "param" in reads:  # a parameter function: recomputed inside each reading vertex's call
                self.kind[n] = self._computed(n, [])
            else:  # nothing that varies: a constant of the graph, specialised to the example
                self.kind[n] = self._const(n.name, value)
            return
        parents: list[str] = []
        args, kwargs = self._template(n.args, parents), self._template(dict(n.kwargs), parents)
        if isinstance(value, torch.Tensor) and not value.dtype.is_floating_point and self._moves(args, kwargs, parents):
            self.kind[n] = _Folded(n)
            return
        if isinstance(value, torch.Tensor):
            self._vertex(n, fn, args, kwargs, parents, value)
        elif isinstance(value, tuple | list) and all(isinstance(v, torch.Tensor) for v in value):
            self.kind[n] = _Multi(fn, args, kwargs, parents, n)
        else:
            raise UnsupportedOpError(f"{where(n)} returns {type(value).__name__}, not tensors")

    def _item(self, n: fx.Node, multi: _Multi, index: Any, value: Any) -> None:
        if not isinstance(index, int) or not isinstance(value, torch.Tensor):
            raise UnsupportedOpError(f"{where(n)} picks {index!r} of a tuple-valued call; pcsim needs one "
                                     "integer index per tensor")
        self._vertex(n, multi.fn, multi.args, multi.kwargs, multi.parents, value, select=index, origin=multi.node)

    def _vertex(self, n: fx.Node, fn, args, kwargs, parents: list[str], value: torch.Tensor, select=None,
                origin: fx.Node | None = None) -> None:
        origin = origin or n
        is_latent = self._moves(args, kwargs, parents)
        if is_latent and not value.dtype.is_floating_point:  # a tuple item: cannot be recomputed by its readers
            raise UnsupportedOpError(f"{where(origin)} computes a {value.dtype} tensor from populations or "
                                     "parameters, and a PC population must be floating point")
        name = self.namer.name(origin, select)
        if fn is identity:
            args = args[:1]
            kwargs = {}
        self.vertices.append(Vertex(name, op_name(origin.target), tuple(value.shape), value.dtype,
                                    parents=tuple(parents), fn=fn, args=tuple(args), kwargs=tuple(kwargs.items()),
                                    select=select, source=where(origin)))
        if is_latent:
            self.latent.add(name)
        self.kind[n] = name

    def _moves(self, args, kwargs, parents: list[str]) -> bool:
        """Whether a call with these arguments reads a latent vertex or a parameter (else it is clamped)."""
        return any(p in self.latent for p in parents) or any(isinstance(s, ParamArg) for s in _slots(args, kwargs))

    def _computed(self, n: fx.Node, parents: list[str]) -> Computed:
        """The node's call as a slot of its reader's call (`parents`: the reader's parent list)."""
        return Computed(entry(n.target).replace or n.target, self._template(n.args, parents),
                        tuple(self._template(dict(n.kwargs), parents).items()),
                        label=f"{op_name(n.target)}('{n.name}')")

    def _template(self, arg: Any, parents: list[str]) -> Any:
        if isinstance(arg, fx.Node):
            k = self.kind[arg]
            if isinstance(k, str):
                if k not in parents:
                    parents.append(k)
                return ParentArg(parents.index(k))
            if isinstance(k, _Multi):
                raise UnsupportedOpError(f"{where(arg)} passes a whole tuple of populations to another op")
            if isinstance(k, _Folded):
                return self._computed(k.node, parents)
            return k
        if isinstance(arg, tuple | list):
            return type(arg)(self._template(a, parents) for a in arg)
        if isinstance(arg, dict):
            return {key: self._template(a, parents) for key, a in arg.items()}
        return arg

    # -- outputs -------------------------------------------------------------------------------------
    def _outputs(self, n: fx.Node) -> list[str]:
        specs = self.program.graph_signature.output_specs
        names: list[str] = []
        for i, (spec, node) in enumerate(zip(specs, n.args[0], strict=True)):
            if spec.kind != OutputKind.USER_OUTPUT:
                continue  # a buffer's new value (BatchNorm's running statistics): pcsim never writes it
            k = self.kind.get(node) if isinstance(node, fx.Node) else None
            if not isinstance(k, str) or k not in self.latent:
                raise TraceError(f"output #{i} is not computed from the parameters, so it has no error to "
                                 "learn from")
            if k in names:
                raise TraceError(f"vertex '{k}' is returned twice; return each output once")
            names.append(k)
        return names

    def _rename(self, outputs: list[str]) -> list[str]:
        """Give every vertex its readable name (`names.py`); returns the outputs' new names."""
        new = self.namer.final()
        for name in self.inputs:
            new.setdefault(name, name)
        self.vertices = [dataclasses.replace(v, name=new[v.name], parents=tuple(new[p] for p in v.parents))
                         for v in self.vertices]
        self.inputs = [new[n] for n in self.inputs]
        self.latent = {new[n] for n in self.latent}
        return [new[n] for n in outputs]


def _slots(args, kwargs):
    return template_slots((args, kwargs))


def _sink_outputs(vertices: list[Vertex], outputs: list[str]) -> list[str]:
    """Outputs that also feed other vertices get an identity child that carries the loss."""
    used = {p for v in vertices for p in v.parents}
    names = {v.name for v in vertices}
    result = []
    for o in outputs:
        if o in used:
            sink = o + "__output"
            while sink in names:
                sink += "_"
            src = next(v for v in vertices if v.name == o)
            vertices.append(Vertex(sink, "identity", src.shape, src.dtype, parents=(o,), fn=identity,
                                   args=(ParentArg(0),), source=f"loss carrier for output '{o}'"))
            names.add(sink)
            o = sink
        result.append(o)
    return result
