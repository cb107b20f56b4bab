"""A core ATen program as pcsim's Graph: which nodes are populations, and which are not.

Each node of the exported program is classified once, from what it reads and what it computed
on the example inputs (the program is run once, on the real parameters, by `_ValueInterpreter`):
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
  that runs the call and selects (`Vertex.select`);
- a call on a structural zero (`W_hh @ h0` from a zero initial state): what its op-table `zero` rule
  makes of it, a constant zero, its bias or its other operand (`zeros.py`).
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

from pcsim.capture import tidy
from pcsim.capture.names import VertexNamer, module_path, where
from pcsim.capture.ties import module_ties
from pcsim.capture.zeros import Rewrite, StructuralZeros, split_of_broadcast
from pcsim.errors import TraceError, UnsupportedOpError, first_line
from pcsim.graph.guards import NumberGuard, warn_numbers
from pcsim.graph.ir import INPUT_OP, Computed, ConstArg, Graph, ParamArg, ParentArg, Vertex, template_slots
from pcsim.graph.level import fresh_name
from pcsim.ops.local import Autograd
from pcsim.ops.table import DROPOUTS, OPS, draws_random, entry, identity, op_name

aten = torch.ops.aten


class _Multi:
    """A tuple-valued call depending on vertices, before `getitem` picks its items."""

    def __init__(self, fn, args, kwargs, parents: list[str], node: fx.Node):
        self.fn, self.args, self.kwargs, self.parents, self.node = fn, args, kwargs, parents, node


class _Folded:
    """An integer or boolean function of latent vertices, templated afresh inside each reader's call."""

    def __init__(self, node: fx.Node):
        self.node = node


def _value_sized(n: fx.Node, select: int | None) -> bool:
    """Whether export gave the call's result a size it could only learn from tensor values (an unbacked
    symbol: a boolean selection, `nonzero`)."""
    val = n.meta.get("val")
    if select is not None and isinstance(val, tuple | list):
        val = val[select]
    return isinstance(val, torch.Tensor) and any(isinstance(d, torch.SymInt) for d in val.shape)


class _ValueInterpreter(fx.Interpreter):
    """Runs the program once on the real inputs, parameters and buffers, keeping every node's value."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}
        self.current: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self.current = n
        self.values[n] = out = super().run_node(n)
        return out

    def call_function(self, target, args, kwargs) -> Any:
        # dropout as every rule runs it, the identity: a train-mode draw here advanced the user's RNG, and a
        # dropout of a buffer was folded into a constant with that one random mask in it
        if op_name(target) in DROPOUTS:
            return entry(target).replace(*args, **kwargs)
        return super().call_function(target, args, kwargs)


class Builder:
    def __init__(self, module: nn.Module, program: torch.export.ExportedProgram, inputs: tuple[torch.Tensor, ...],
                 counters: frozenset = frozenset()):
        self.module, self.program, self.example, self.counters = module, program, inputs, counters
        self.params = dict(module.named_parameters())
        # every name a parameter is reachable by (a tied weight, a module registered twice) -> its own name
        canonical = {id(p): n for n, p in self.params.items()}
        self.param_alias = {n: canonical[id(p)] for n, p in module.named_parameters(remove_duplicate=False)}
        self.constants: dict[str, torch.Tensor] = {}
        self.kind: dict[fx.Node, Any] = {}  # node -> vertex name | ParamArg | ConstArg | Computed | _Multi | literal
        self.vertices: list[Vertex] = []
        self.inputs: list[str] = []
        self.literal_inputs: list[tuple[int, Any]] = []  # (position among the example inputs, value)
        self.latent: set[str] = set()
        self.namer = VertexNamer()
        self.probed: set = set()  # calls without a table entry whose derivative has been tried
        self.vertex_values: dict[str, torch.Tensor] = {}
        self.number_guards: list[NumberGuard] = []  # Python numbers taken from input values (sizes, .item())
        self.dropouts: list[str] = []  # dropouts the module runs (train mode, or forced): identities here, a warning

    # -- running the program ---------------------------------------------------------------------
    def _placeholder_values(self) -> list[Any]:
        sig, values, user = self.program.graph_signature, [], iter(self.example)
        buffers = dict(self.module.named_buffers(remove_duplicate=False))
        for spec in sig.input_specs:
            if spec.kind == InputKind.PARAMETER:
                values.append(self.params[self.param_alias[spec.target]])
            elif spec.kind in (InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                buffer = spec.kind == InputKind.BUFFER and spec.target in buffers
                values.append(buffers[spec.target] if buffer else self.program.constants[spec.target])
            elif spec.kind == InputKind.USER_INPUT:
                values.append(next(user))
            else:
                raise UnsupportedOpError(f"the captured program takes a {spec.kind.name} input, which pcsim "
                                         "does not support")
        return values

    def run(self) -> Graph:
        gm = self.program.graph_module
        interpreter = _ValueInterpreter(gm)
        try:
            with torch.no_grad():
                interpreter.run(*self._placeholder_values())
        except Exception as e:  # noqa: BLE001 - the model's own failure on the example inputs, at the user's line
            first = first_line(e)
            at = where(interpreter.current, f"{type(e).__name__}: {first}") if interpreter.current else first
            raise TraceError(f"the module failed on the example inputs at {at}") from None
        self.values = interpreter.values
        self.zeros = StructuralZeros(self.values)
        specs = iter(self.program.graph_signature.input_specs)
        out_node = next(n for n in gm.graph.nodes if n.op == "output")
        live = self._live(out_node)
        for n in gm.graph.nodes:
            if n.op == "placeholder":
                self._placeholder(n, next(specs))
            elif n.op == "call_function" and n in live:
                self._call(n)
        outputs = self._rename(self._outputs(out_node))
        self.vertices = tidy.upstream(self.vertices, outputs)
        outputs = tidy.sink_outputs(self.vertices, outputs)
        warn_numbers(self.number_guards)
        tidy.warn_dropouts(self.dropouts)
        return Graph(vertices=tuple(self.vertices), inputs=tuple(self.inputs), outputs=tuple(outputs),
                     params=self.params, constants=self.constants, param_names=tuple(self.params),
                     literal_inputs=tuple(self.literal_inputs), output_spec=self.program.call_spec.out_spec,
                     number_guards=tuple(g.renamed(self.renamed) for g in self.number_guards),
                     ties=module_ties(self.module, self.program, self.kind, self.values, self.counters))

    def _live(self, out_node: fx.Node) -> set[fx.Node]:
        """The nodes the user's outputs are computed from; the rest (a training BatchNorm's new running
        statistics, which export returns as buffer updates) are never populations."""
        specs = self.program.graph_signature.output_specs
        return tidy.computed_from([a for s, a in zip(specs, out_node.args[0], strict=True)
                                   if s.kind == OutputKind.USER_OUTPUT and isinstance(a, fx.Node)])

    # -- classification ---------------------------------------------------------------------------
    def _placeholder(self, n: fx.Node, spec) -> None:
        value = self.values[n]
        if spec.kind == InputKind.PARAMETER and value.requires_grad:
            self.kind[n] = ParamArg(self.param_alias[spec.target])
        elif spec.kind != InputKind.USER_INPUT:  # a buffer, or a frozen parameter: a constant, as backprop has it
            self.kind[n] = self._const(spec.target, value)
        elif not isinstance(value, torch.Tensor):  # None, a number, a flag
            self.kind[n] = value
            self.literal_inputs.append((len(self.inputs) + len(self.literal_inputs), value))
        else:
            name = self.namer.take(n.name)
            self.vertices.append(Vertex(name, INPUT_OP, tuple(value.shape), value.dtype, source="input"))
            self.inputs.append(name)
            self.vertex_values[name] = value  # what a probed reader's call is pulled back on
            self.kind[n] = name

    def _const(self, name: str, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        key = fresh_name(name, set(self.constants))  # a stored constant is a detached copy: never `value` itself
        self.constants[key] = value.detach()
        return ConstArg(key)

    def _call(self, n: fx.Node) -> None:
        value = self.values[n]
        if value is None:  # an assertion on metadata (`_assert_tensor_metadata`): checked when it ran
            self.kind[n] = None
            return
        if not isinstance(value, torch.Tensor | tuple | list):  # a size or a Python number computed from tensors
            self._number(n, value)
            return
        if n.target is operator.getitem and isinstance(self.kind[n.args[0]], _Multi):
            self._item(n, self.kind[n.args[0]], n.args[1], value)
            return
        rewrite = self.zeros.rewrite(n)
        if rewrite is not None and self._rewritten(n, rewrite, value):
            return
        spec = entry(n.target)
        if draws_random(n.target, n.args, n.kwargs):
            raise UnsupportedOpError(where(n, "draws random numbers. pcsim evaluates the forward pass many times "
                                              "from one captured program, so it can neither keep one draw nor "
                                              "redraw as the module does: run the module in eval mode (dropout "
                                              "runs as the identity), or pass the noise in as an input"))
        if op_name(n.target) in DROPOUTS and len(n.args) > 2 and n.args[1] and n.args[2]:  # (input, p, train)
            inside = f" in module '{module_path(n)}'" if module_path(n) else ""
            self.dropouts.append(where(n, f"p = {n.args[1]:g} in train mode{inside}", frame=False))
        if spec.passthrough and tidy.unchanged(n, value, self.values):
            self.kind[n] = self.kind[n.args[0]]
            return
        fn = spec.replace or spec.call or n.target
        reads = [self.kind[a] for a in n.all_input_nodes]
        if not any(isinstance(k, str | _Multi | _Folded) for k in reads):  # no vertex
            if any(isinstance(k, ParamArg | Computed) for k in reads):  # a parameter function: recomputed by readers
                source = self.kind[n.args[0]] if n.args and isinstance(n.args[0], fx.Node) else None
                self.kind[n] = split_of_broadcast(n, source) or self._computed(n, [])
            else:  # nothing that varies: a constant of the graph, specialised to the example
                self.kind[n] = self._const(n.name, value)
                self.zeros.constant(n)
            return
        parents: list[str] = []
        args, kwargs = self._template(tidy.without_dropout(n), parents), self._template(dict(n.kwargs), parents)
        if isinstance(value, torch.Tensor) and not value.dtype.is_floating_point and self._moves(args, kwargs, parents):
            self.kind[n] = _Folded(n)
            return
        if isinstance(value, torch.Tensor):
            self._vertex(n, fn, args, kwargs, parents, value)
        elif isinstance(value, tuple | list) and all(isinstance(v, torch.Tensor) for v in value):
            self.kind[n] = _Multi(fn, args, kwargs, parents, n)
        else:
            raise UnsupportedOpError(where(n, f"returns {type(value).__name__}, not tensors"))

    def _rewritten(self, n: fx.Node, rewrite: Rewrite, value: torch.Tensor) -> bool:
        """Classify `n` by its structural-zero rewrite; False where it does not apply after all."""
        if rewrite.kind == "zero":
            self.kind[n] = self._const(n.name, value)
            self.zeros.fixed.add(n)
            self.zeros.zero.add(n)
        elif rewrite.kind == "alias":
            self.kind[n] = self.kind[rewrite.keep]
        else:  # the bias, broadcast: a parameter function (or a constant)
            bias = self.kind[rewrite.keep] if isinstance(rewrite.keep, fx.Node) else None
            if isinstance(bias, ParamArg | Computed):
                self.kind[n] = Computed(aten.expand.default, (bias, tuple(value.shape)),
                                        label=f"{op_name(n.target)}('{n.name}') of a zero input: its bias")
            elif isinstance(bias, ConstArg):
                self.kind[n] = self._const(n.name, value)
            else:  # a bias computed from populations: the call stays as captured
                return False
        return True

    def _number(self, n: fx.Node, value: Any) -> None:
        """A number computed from tensor values (a data-dependent size): folded to the example's value where
        it depends on inputs alone (the graph is then specialised to those values), refused otherwise."""
        parents: list[str] = []
        args, kwargs = self._template(n.args, parents), self._template(dict(n.kwargs), parents)
        if self._moves(args, kwargs, parents):
            raise UnsupportedOpError(where(n, f"computes the Python value {value!r} from populations or "
                                              "parameters; pcsim captures one program, so what it computes may not "
                                              "depend on their values"))
        if parents:  # recomputed from each batch by the rules, which refuse one where it moved
            number = Vertex(n.name, op_name(n.target), (), torch.float64, parents=tuple(parents), fn=n.target,
                            args=tuple(args), kwargs=tuple(kwargs.items()), source=where(n, frame=False))
            chain = tuple(v for v in tidy.upstream(self.vertices, number.parents) if not v.is_input)
            self.number_guards.append(NumberGuard(chain, number, value))
        self.kind[n] = value

    def _item(self, n: fx.Node, multi: _Multi, index: Any, value: Any) -> None:
        if isinstance(value, torch.Tensor) and not value.dtype.is_floating_point:  # `max`'s indices, say
            self.kind[n] = _Folded(n)
            return
        if not isinstance(index, int) or not isinstance(value, torch.Tensor):
            raise UnsupportedOpError(where(n, f"picks {index!r} of a tuple-valued call; pcsim needs one integer "
                                              "index per tensor"))
        self._vertex(n, multi.fn, multi.args, multi.kwargs, multi.parents, value, select=index, origin=multi.node)

    def _vertex(self, n: fx.Node, fn, args, kwargs, parents: list[str], value: torch.Tensor, select=None,
                origin: fx.Node | None = None) -> None:
        origin = origin or n
        is_latent = self._moves(args, kwargs, parents)
        if is_latent and not value.dtype.is_floating_point:  # a tuple item: cannot be recomputed by its readers
            raise UnsupportedOpError(where(origin, f"computes a {value.dtype} tensor from populations or "
                                                   "parameters, and a PC population must be floating point"))
        if is_latent and _value_sized(origin, select) and any(isinstance(self.kind.get(a), _Folded)
                                                              for a in origin.all_input_nodes):
            raise UnsupportedOpError(where(origin, "has a size that depends on the values of a population (a mask or "
                                                   "indices computed from it): inference moves those values, and "
                                                   "the graph has one shape per vertex. Compute the mask from the "
                                                   "inputs, or keep the size fixed (torch.where instead of a "
                                                   "boolean selection)"))
        name = self.namer.name(origin, select)
        if fn is identity:
            args, kwargs = args[:1], {}
        self.vertices.append(Vertex(name, op_name(origin.target), tuple(value.shape), value.dtype,
                                    parents=tuple(parents), fn=fn, args=tuple(args), kwargs=tuple(kwargs.items()),
                                    select=select, source=where(origin, frame=False)))
        self.vertex_values[name] = value
        if is_latent:
            self.latent.add(name)
            self._probe(self.vertices[-1], origin)
        self.kind[n] = name

    def _probe(self, vertex: Vertex, origin: fx.Node) -> None:
        """An op without a table entry is pulled back once here, on the example's values, so that one
        without a derivative is refused at the user's line now rather than deep inside a rule."""
        if vertex.op in OPS or vertex.fn in self.probed:
            return
        self.probed.add(vertex.fn)
        try:
            lin = Autograd(vertex, [self.vertex_values[p] for p in vertex.parents], self.params, self.constants)
            lin.pullback(torch.ones_like(lin.mu))
        except (NotImplementedError, RuntimeError) as e:
            why = f"{first_line(e, type(e).__name__)} pcsim pulls each error back through its vertex's call, " \
                  "so an op that reads a population needs a derivative"
            raise UnsupportedOpError(where(origin, why)) from None

    def _moves(self, args, kwargs, parents: list[str]) -> bool:
        """Whether a call with these arguments reads a latent vertex or a parameter (else it is clamped)."""
        slots = template_slots((args, kwargs))
        return any(p in self.latent for p in parents) or any(isinstance(s, ParamArg) for s in slots)

    def _computed(self, n: fx.Node, parents: list[str]) -> Computed:
        """The node's call as a slot of its reader's call (`parents`: the reader's parent list)."""
        spec = entry(n.target)
        return Computed(spec.replace or spec.call or n.target, self._template(n.args, parents),
                        tuple(self._template(dict(n.kwargs), parents).items()),
                        label=f"{op_name(n.target)}('{n.name}')")

    def _template(self, arg: Any, parents: list[str]) -> Any:
        if isinstance(arg, fx.Node):
            k = self.kind[arg]
            if isinstance(k, str):
                if k not in parents:
                    parents.append(k)
                return ParentArg(parents.index(k))
            if isinstance(k, _Multi | _Folded):  # read inside a recomputed call (the indices of `max`): the call
                return self._computed(k.node, parents)
            return k
        if isinstance(arg, tuple | list):  # a tuple: templates hash, so the wave shares one call among its items
            return tuple(self._template(a, parents) for a in arg)
        if isinstance(arg, dict):
            return {key: self._template(a, parents) for key, a in arg.items()}
        return arg

    # -- outputs -------------------------------------------------------------------------------------
    def _outputs(self, n: fx.Node) -> list[str]:
        specs = self.program.graph_signature.output_specs
        names: list[str] = []
        for i, (spec, node) in enumerate(zip(specs, n.args[0], strict=True)):
            if spec.kind != OutputKind.USER_OUTPUT or node is None:
                continue  # a buffer's new value (BatchNorm's running statistics), which pcsim never writes; a None
            k = self.kind.get(node) if isinstance(node, fx.Node) else None
            value = self.values.get(node) if isinstance(node, fx.Node) else node
            if isinstance(value, torch.Tensor) and not value.dtype.is_floating_point:
                raise TraceError(f"output #{i} is a {value.dtype} tensor: it has no derivative, so no error to learn "
                                 "from; return floating-point outputs only")
            if isinstance(k, ParamArg | Computed) and isinstance(value, torch.Tensor):
                # a parameter, or a function of parameters alone (a policy's `log_std.expand_as(mean)`), returned:
                # readers recompute those, so the output is a vertex of its own that reads them
                self._vertex(node, identity, [k], {}, [], value)
                k = self.kind[node]
            if not isinstance(k, str) or k not in self.latent:
                raise TraceError(tidy.not_an_output(i, k))
            names.append(k)
        return names

    def _rename(self, outputs: list[str]) -> list[str]:
        """Give every vertex its readable name (`names.py`); returns the outputs' new names."""
        self.renamed = new = self.namer.final()
        for name in self.inputs:
            new.setdefault(name, name)
        self.vertices = [dataclasses.replace(v, name=new[v.name], parents=tuple(new[p] for p in v.parents))
                         for v in self.vertices]
        self.inputs = [new[n] for n in self.inputs]
        self.latent = {new[n] for n in self.latent}
        return [new[n] for n in outputs]
