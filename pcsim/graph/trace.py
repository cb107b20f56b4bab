"""`trace(module, *example_inputs) -> Graph`: a torch.fx program as a graph of populations.

Each fx node is classified once, from what it computed on the example inputs:
- placeholder: an input vertex (clamped to data);
- a parameter (`get_attr`): a `ParamArg` slot of the vertices that read it, never a vertex;
- anything that does not depend on inputs or parameters (buffers, shapes, `torch.zeros(...)`):
  folded to a constant, so the graph is specialised to the example's shapes;
- a tensor computed from inputs or parameters by a supported op: a vertex;
- a tuple of tensors (chunk, split, a fused LSTM's `(output, (h_n, c_n))`, nested or not): each
  `getitem` that picks one tensor of it becomes a vertex.

Modules whose type is in `fused` (`ops/fused.py`) stay one call each instead of being expanded.
"""

from __future__ import annotations

import dataclasses
import inspect
import operator
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from pcsim.errors import InputError, PcsimError, TraceError, UnsupportedOpError
from pcsim.graph.fx_tracer import Recorder, Tracer, describe, line_detail, line_suffix
from pcsim.graph.ir import INPUT_OP, ConstArg, Graph, ParamArg, ParentArg, Vertex
from pcsim.graph.provenance import example_calls, exception_user_line
from pcsim.graph.tuples import TupleCall, leaves, nested
from pcsim.ops.fused import FUSED_CONVERTERS, fused_types
from pcsim.ops.modules import MODULE_CONVERTERS, MODULE_EXPANSIONS, NEEDS_EXAMPLE, ModuleCall
from pcsim.ops.registry import (
    DROPOUT,
    FUNCTIONS,
    INPLACE_KWARG,
    METHODS,
    SHAPE_ONLY_FUNCTIONS,
    SHAPE_ONLY_METHODS,
    identity,
    method_function,
    supported_summary,
)


class _Builder:
    def __init__(self, module: nn.Module, gm: fx.GraphModule, values: dict[fx.Node, Any], fused: frozenset[type]):
        self.module, self.gm, self.values = module, gm, values
        self.converters = {**MODULE_CONVERTERS, **{t: FUSED_CONVERTERS[t] for t in fused}}
        self.param_names = {id(p): n for n, p in module.named_parameters()}
        self.params = dict(module.named_parameters())
        self.constants: dict[str, torch.Tensor] = {}
        self.kind: dict[fx.Node, Any] = {}  # node -> vertex name | ParamArg | ConstArg | TupleCall | literal
        self.vertices: list[Vertex] = []
        self.inputs: list[str] = []
        self._item_vertices: dict[fx.Node, list[tuple[tuple[int, ...], str]]] = {}  # see _items

    # -- Context for module converters --
    def param(self, m: nn.Module, attr: str):
        t = getattr(m, attr, None)
        if t is None:
            return None
        if id(t) in self.param_names:
            return ParamArg(self.param_names[id(t)])
        return self._const(f"{self._path(m)}.{attr}", t)

    def const(self, m: nn.Module, attr: str):
        t = getattr(m, attr, None)
        return None if t is None else self._const(f"{self._path(m)}.{attr}", t)

    def _path(self, m: nn.Module) -> str:
        return next((n for n, sub in self.module.named_modules() if sub is m), type(m).__name__)

    def _const(self, name: str, value: torch.Tensor) -> ConstArg:
        self.constants[name] = value.detach()
        return ConstArg(name)

    # -- templates --
    def template(self, arg: Any, parents: list[str], node: fx.Node) -> Any:
        if isinstance(arg, fx.Node):
            k = self.kind[arg]
            if isinstance(k, str):
                return self._parent_slot(k, parents)
            if isinstance(k, TupleCall):  # a tuple passed on whole (an LSTM's (h_n, c_n) to a decoder)
                return nested([(rest, self._parent_slot(name, parents)) for rest, name in self._items(arg, k)])
            return k
        if isinstance(arg, tuple | list):
            return tuple(self.template(a, parents, node) for a in arg)
        if isinstance(arg, dict):
            return {key: self.template(a, parents, node) for key, a in arg.items()}
        if isinstance(arg, slice):
            return slice(*(self.values[a] if isinstance(a, fx.Node) else a for a in (arg.start, arg.stop, arg.step)))
        return arg

    @staticmethod
    def _parent_slot(name: str, parents: list[str]) -> ParentArg:
        if name not in parents:
            parents.append(name)
        return ParentArg(parents.index(name))

    @staticmethod
    def _depends(arg: Any, kind: dict) -> bool:
        found = []
        fx.node.map_arg(arg, lambda n: found.append(isinstance(kind[n], str | ParamArg | TupleCall)))
        return any(found)

    def run(self) -> Graph:
        outputs: list[str] = []
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                self._placeholder(n)
            elif n.op == "get_attr":
                self._get_attr(n)
            elif n.op == "output":
                outputs = self._outputs(n)
            else:
                self._call(n)
        return Graph(vertices=tuple(self.vertices), inputs=tuple(self.inputs), outputs=tuple(outputs),
                     params=self.params, constants=self.constants, param_names=tuple(self.params))

    def _placeholder(self, n: fx.Node) -> None:
        value = self.values[n]
        if not isinstance(value, torch.Tensor):
            raise InputError(f"input '{n.name}' must be a tensor, got {type(value).__name__}")
        self.vertices.append(Vertex(n.name, INPUT_OP, tuple(value.shape), value.dtype, source="placeholder"))
        self.inputs.append(n.name)
        self.kind[n] = n.name

    def _get_attr(self, n: fx.Node) -> None:
        value = self.values[n]
        if isinstance(value, torch.Tensor) and id(value) in self.param_names:
            self.kind[n] = ParamArg(self.param_names[id(value)])
        elif isinstance(value, torch.Tensor):
            self.kind[n] = self._const(str(n.target), value)
        else:
            self.kind[n] = value

    def _call(self, n: fx.Node) -> None:
        value = self.values[n]
        if not self._depends((n.args, n.kwargs), self.kind):
            self.kind[n] = self._const(n.name, value) if isinstance(value, torch.Tensor) else value
            return
        if n.op == "call_function" and n.target is operator.getitem and isinstance(self.kind[n.args[0]], TupleCall):
            self._pick(n, self.kind[n.args[0]], value)
            return
        if not _contains_tensor(value) or _shape_only(n):
            # a shape, a Python number, or a tensor built from shapes alone (zeros_like):
            # fixed by the example inputs, so the graph is specialised to their shapes
            self.kind[n] = self._const(n.name, value) if isinstance(value, torch.Tensor) else value
            return
        parents: list[str] = []
        call = self._convert(n, parents)
        if isinstance(value, torch.Tensor):
            self._vertex(n, call, tuple(parents), value, describe(n, self.gm))
            mutated = n.args[0] if n.args and _mutates_first_argument(n, self.gm) else None
            if isinstance(mutated, fx.Node) and isinstance(self.kind.get(mutated), str):
                self.kind[mutated] = n.name  # later reads of the mutated tensor see the new value
        elif all(isinstance(v, torch.Tensor) for _, v in leaves(value)):
            self.kind[n] = TupleCall.of(call, tuple(parents), describe(n, self.gm), value)
        else:
            raise UnsupportedOpError(f"fx node '{n.name}' ({describe(n, self.gm)}){line_suffix(n)} returns "
                                     f"{type(value).__name__} mixing tensors and other values{line_detail(n)}")

    def _pick(self, n: fx.Node, multi: TupleCall, value: Any) -> None:
        path = multi.pick(n.args[1])
        if path is None:
            raise UnsupportedOpError(f"fx node '{n.name}'{line_suffix(n)} indexes the tuple returned by "
                                     f"'{n.args[0].name}' with {n.args[1]!r}; pcsim needs one integer index per "
                                     f"item (or unpacking){line_detail(n)}")
        if path in multi.index:
            self._vertex(n, multi.call, multi.parents, value, multi.source, select=multi.index[path])
        else:  # a nested tuple (an LSTM's (h_n, c_n)): its items are picked in turn
            self.kind[n] = dataclasses.replace(multi, prefix=path)

    def _convert(self, n: fx.Node, parents: list[str]) -> ModuleCall:
        def unsupported() -> UnsupportedOpError:
            return UnsupportedOpError(
                f"fx node '{n.name}' ({describe(n, self.gm)}){line_suffix(n)} is not supported by pcsim."
                f"{line_detail(n)}\n"
                f"Supported:\n{supported_summary()}")
        if n.op == "call_module":
            m = self.gm.get_submodule(n.target)
            convert = self.converters.get(type(m))
            if convert is None:
                raise unsupported()
            args = self.template(n.args, parents, n)
            kwargs = self.template(dict(n.kwargs), parents, n)
            try:
                return convert(m, self, *args, **kwargs)
            except UnsupportedOpError as e:
                raise UnsupportedOpError(f"fx node '{n.name}' ({describe(n, self.gm)}){line_suffix(n)}: {e}"
                                         f"{line_detail(n)}") from None
        if n.op == "call_method":
            if n.target not in METHODS:
                raise unsupported()
            op, fn = METHODS[n.target], method_function(n.target)
        elif n.target in FUNCTIONS:
            op, fn = FUNCTIONS[n.target], n.target
        else:
            raise unsupported()
        args = self.template(n.args, parents, n)
        kwargs = self.template(dict(n.kwargs), parents, n)
        if n.op == "call_function" and n.target in DROPOUT:
            return ModuleCall("identity", identity, args[:1])
        if n.op == "call_function" and n.target in INPLACE_KWARG:
            kwargs.pop("inplace", None)
            position = INPLACE_KWARG[n.target]
            if len(args) > position:  # inplace passed positionally
                args = args[:position] + (False,) + args[position + 1:]
        return ModuleCall(op, fn, args, tuple(kwargs.items()))

    def _vertex(self, n, call: ModuleCall, parents, value, source: str, select=None) -> None:
        if not isinstance(value, torch.Tensor):
            raise UnsupportedOpError(f"fx node '{n.name}' ({source}){line_suffix(n)} does not produce a tensor"
                                     f"{line_detail(n)}")
        self.vertices.append(Vertex(n.name, call.op, tuple(value.shape), value.dtype, parents=tuple(parents),
                                    fn=call.fn, args=tuple(call.args), kwargs=tuple(call.kwargs),
                                    select=select, source=source))
        self.kind[n] = n.name

    def _items(self, n: fx.Node, multi: TupleCall) -> list[tuple[tuple[int, ...], str]]:
        """(path, vertex) for each tensor of the tuple `n` stands for: one selecting vertex each, named
        `n_i` (`n_i_j` when nested), made on the first use of the whole tuple."""
        if n in self._item_vertices:
            return self._item_vertices[n]
        taken = {v.name for v in self.vertices}
        names = self._item_vertices[n] = []
        for rest, position, value in multi.items(self.values[n]):
            name = "_".join([n.name, *map(str, rest)])
            while name in taken:
                name += "_"
            taken.add(name)
            self.vertices.append(Vertex(name, multi.call.op, tuple(value.shape), value.dtype, parents=multi.parents,
                                        fn=multi.call.fn, args=tuple(multi.call.args),
                                        kwargs=tuple(multi.call.kwargs), select=position, source=multi.source))
            names.append((rest, name))
        return names

    def _outputs(self, n: fx.Node) -> list[str]:
        found: list[fx.Node] = []
        fx.node.map_arg(n.args[0], found.append)
        names = []
        for i, node in enumerate(found):
            k = self.kind.get(node)
            if isinstance(k, TupleCall):  # a tuple returned whole (a bare fused LSTM's result): each tensor an output
                names += [name for _, name in self._items(node, k)]
                continue
            if not isinstance(k, str):
                raise TraceError(f"output #{i} ('{node.name}') is not computed from the inputs and "
                                 "parameters, so it has no error to learn from")
            if k in names:
                raise TraceError(f"vertex '{k}' is returned twice; return each output once")
            names.append(k)
        return _sink_outputs(self.vertices, names)


def _contains_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, tuple | list):
        return any(_contains_tensor(v) for v in value)
    return False


def _shape_only(n: fx.Node) -> bool:
    """Calls whose result depends on their argument's shape and dtype, never its values."""
    return ((n.op == "call_function" and n.target in SHAPE_ONLY_FUNCTIONS)
            or (n.op == "call_method" and n.target in SHAPE_ONLY_METHODS))


def _mutates_first_argument(n: fx.Node, gm: nn.Module) -> bool:
    """In-place calls: x.relu_(), F.relu(x, inplace=True), nn.ReLU(inplace=True)(x)."""
    if n.op == "call_method":
        return str(n.target).endswith("_")
    if n.op == "call_function" and n.target in INPLACE_KWARG:
        position = INPLACE_KWARG[n.target]
        return bool(n.kwargs.get("inplace", False)) or (len(n.args) > position and n.args[position] is True)
    if n.op == "call_module":
        return bool(getattr(gm.get_submodule(n.target), "inplace", False))
    return False


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


def _restore(module: nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, b in module.named_buffers():
            b.copy_(buffers[name])


def _expanded_root(module: nn.Module, n_inputs: int) -> nn.Module:
    """fx traces the root's own forward, so a root whose type is expanded (a bare nn.LSTM, say) is
    wrapped in a module that calls it with the same argument names: its call then goes through
    the expansion. Parameters keep their names (the builder names them by identity)."""
    params = [p.name for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if n_inputs > len(params):
        raise InputError(f"{type(module).__name__}.forward takes {len(params)} input(s), "
                         f"got {n_inputs} example input(s)")
    args = ", ".join(params[:n_inputs])
    namespace: dict = {}
    exec(f"def forward(self, {args}):\n    return self.inner({args})\n", namespace)  # noqa: S102
    root = type(type(module).__name__, (nn.Module,), {"forward": namespace["forward"]})()
    root.inner = module
    return root


def trace(module: nn.Module, *example_inputs: torch.Tensor,
          fused: bool | Iterable[type[nn.Module]] = False) -> Graph:
    """Trace `module` with torch.fx on `example_inputs` (one tensor per forward argument).

    `fused`: module types (of `pcsim.RECURRENT_LAYERS`: nn.RNN, nn.LSTM, nn.GRU), or True for all
    of them, kept as one vertex per call running torch's fused kernel, instead of one vertex per
    gate and time step (see `pcsim.ops.fused`).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"trace() needs a torch.nn.Module, got {type(module).__name__}")
    fused = fused_types(fused)
    for i, x in enumerate(example_inputs):
        if not isinstance(x, torch.Tensor):
            raise InputError(f"example input #{i} must be a tensor, got {type(x).__name__}")
    # the example run must leave the module as it found it (BatchNorm in training mode would
    # update its running statistics)
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
    try:
        examples = example_calls(module, example_inputs, NEEDS_EXAMPLE)
    except Exception as e:  # noqa: BLE001 - the user's module failed on the example inputs
        line = exception_user_line(e)
        raise TraceError(f"{type(module).__name__} failed on the example inputs"
                         f"{f' at {line.short}' if line else ''}: {type(e).__name__}: {e}"
                         f"{f'{chr(10)}{line}' if line else ''}") from e
    finally:
        _restore(module, buffers)
    tracer = Tracer(examples, fused)
    try:
        wrap = type(module) in MODULE_EXPANSIONS or type(module) in fused
        root = _expanded_root(module, len(example_inputs)) if wrap else module
        fx_graph = tracer.trace(root)
    except PcsimError:
        raise
    except Exception as e:  # noqa: BLE001 - fx's own message, with the user's line and what to do about it
        line = exception_user_line(e)
        raise TraceError(f"torch.fx could not trace {type(module).__name__}"
                         f"{f' at {line.short}' if line else ''}: {type(e).__name__}: {e}\n"
                         f"{f'{line}{chr(10)}' if line else ''}"
                         "pcsim needs a forward() without data-dependent Python control flow; loops over "
                         "fixed Python ranges are fine.") from e
    gm = fx.GraphModule(tracer.root, fx_graph)
    n_placeholders = sum(1 for n in gm.graph.nodes if n.op == "placeholder")
    if n_placeholders != len(example_inputs):
        raise InputError(f"{type(module).__name__}.forward takes {n_placeholders} input(s), "
                         f"got {len(example_inputs)} example input(s)")
    recorder = Recorder(gm)
    try:
        with torch.no_grad():
            recorder.run(*example_inputs)
    finally:
        _restore(module, buffers)
    graph = _Builder(module, gm, recorder.values, fused).run()
    for v in graph.vertices:
        if v.name in graph.latent and not v.dtype.is_floating_point:
            raise UnsupportedOpError(f"{v.describe()} holds {v.dtype} values computed from parameters or "
                                     "latent vertices; a PC population must be floating point")
    return graph
