"""The graph IR: frozen vertices, a frozen graph, validation, order and distances to the outputs.

A vertex is one value population (and, unless it is an input, one error population). Its
prediction is `fn(*args, **kwargs)` where the call template `args`/`kwargs` holds literals and
four kinds of slot: `ParentArg`, `ParamArg`, `ConstArg` and `Computed`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import torch

from pcsim.errors import GraphError
from pcsim.graph.portable import portable, resolved
from pcsim.graph.ties import ModuleTies

INPUT_OP = "input"
# Python values a forward() argument may take instead of a tensor (and None): a constant of the program
LITERALS = (bool, int, float)


@dataclass(frozen=True)
class ParentArg:
    """Slot filled with the value of the vertex's `index`-th parent."""

    index: int


@dataclass(frozen=True)
class ParamArg:
    """Slot filled with the parameter called `name` (a key of `module.named_parameters()`: sharing is by name)."""

    name: str


@dataclass(frozen=True)
class ConstArg:
    """Slot filled with the constant tensor `graph.constants[name]` (a buffer, or a folded value)."""

    name: str


class _PortableFn:
    """Pickled (or copied) with an op overload by name (`portable`) and without what is cached from the fields
    (`Vertex.bind`, a closure)."""

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("bind", "params", "constants")}
        return {**state, "fn": portable(self.fn)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({**state, "fn": resolved(state["fn"])})


@dataclass(frozen=True)
class Computed(_PortableFn):
    """Slot filled with a call of other slots, computed inside the vertex's own call; never a population.

    Parameter functions (a weight's transpose, a tied `W.T`, a weight-normed `g * v / ||v||`): autograd
    on the vertex's call runs through them, so the Hebbian term reaches the parameters themselves.
    Integer and boolean functions of populations (`scores == -inf`): they have no derivative, so
    they are recomputed where they are read instead of being populations.
    """

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    label: str = ""  # what it computes, for messages (`permute(fc1.weight)`)


def template_slots(template: Any):
    """Yield every slot object inside a nested call template (and the slots inside parameter functions)."""
    if isinstance(template, ParentArg | ParamArg | ConstArg):
        yield template
    elif isinstance(template, Computed):
        yield template
        yield from template_slots(template.args)
        yield from template_slots(dict(template.kwargs))
    elif isinstance(template, tuple | list | dict):
        for item in template.values() if isinstance(template, dict) else template:
            yield from template_slots(item)


def compile_template(template: Any) -> Callable[[Any, Any, Any], Any]:
    """The template as a function `(parents, params, constants) -> filled template`.

    The structure is walked once here rather than at every call: the hot loops (one forward pass
    per update, one relinearisation per inference step) fill the same templates thousands of times.
    """
    if isinstance(template, ParentArg):
        i = template.index
        return lambda parents, params, constants: parents[i]
    if isinstance(template, ParamArg):
        name = template.name
        return lambda parents, params, constants: params[name]
    if isinstance(template, ConstArg):
        name = template.name
        return lambda parents, params, constants: constants[name]
    if isinstance(template, Computed):
        fn, args, kwargs = template.fn, compile_template(template.args), compile_template(dict(template.kwargs))
        return lambda parents, params, constants: fn(*args(parents, params, constants),
                                                     **kwargs(parents, params, constants))
    if isinstance(template, tuple) and not any(True for _ in template_slots(template)):
        return lambda parents, params, constants: template  # literals only: immutable, shared
    if isinstance(template, tuple | list):
        kind, items = type(template), [compile_template(t) for t in template]
        return lambda parents, params, constants: kind([f(parents, params, constants) for f in items])
    if isinstance(template, dict):
        entries = [(k, compile_template(t)) for k, t in template.items()]
        return lambda parents, params, constants: {k: f(parents, params, constants) for k, f in entries}
    return lambda parents, params, constants: template


@dataclass(frozen=True)
class Vertex(_PortableFn):
    """One population: an input (clamped to data) or a latent vertex with a prediction."""

    name: str
    op: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    parents: tuple[str, ...] = ()
    fn: Callable[..., Any] | None = None
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    select: int | None = None  # index into a tuple-valued call (chunk, split, recurrent cells)
    inserted: bool = False  # an identity vertex added by `level()`
    source: str = ""  # what the vertex came from, for messages

    @property
    def is_input(self) -> bool:
        return self.op == INPUT_OP

    @cached_property
    def params(self) -> tuple[str, ...]:
        """Names of the parameters this vertex reads, in first-use order, without repeats."""
        slots = template_slots((self.args, dict(self.kwargs)))
        return tuple(dict.fromkeys(s.name for s in slots if isinstance(s, ParamArg)))

    @cached_property
    def constants(self) -> tuple[str, ...]:
        slots = template_slots((self.args, dict(self.kwargs)))
        return tuple(dict.fromkeys(s.name for s in slots if isinstance(s, ConstArg)))

    @cached_property
    def bind(self) -> Callable[[Any, Any, Any], tuple[tuple, dict]]:
        """`(parents, params, constants) -> (args, kwargs)` of this vertex's call (see `compile_template`)."""
        args = compile_template(self.args)
        kwargs = compile_template(dict(self.kwargs))
        return lambda parents, params, constants: (args(parents, params, constants),
                                                   kwargs(parents, params, constants))

    def describe(self) -> str:
        return f"vertex '{self.name}' (op {self.op}, shape {tuple(self.shape)})"


@dataclass(frozen=True, eq=False)
class Graph:
    """A DAG of vertices in topological order, with its parameters and constants.

    `params` holds the module's live parameter tensors (updates made by an optimiser are seen);
    `param_names` lists every parameter of the module, used or not, in `named_parameters()` order.
    """

    vertices: tuple[Vertex, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: Mapping[str, torch.Tensor] = field(default_factory=dict)
    constants: Mapping[str, torch.Tensor] = field(default_factory=dict)
    param_names: tuple[str, ...] = ()
    # forward() arguments given as Python values (None, a number, a flag) at the trace, by position among all the
    # example inputs: torch.export specialises the program to them, so the graph holds for those values only
    literal_inputs: tuple[tuple[int, Any], ...] = ()
    # how forward() nests its outputs (torch's pytree TreeSpec; None: not known): a dict of targets is matched to
    # the outputs by key through it, not by the order the user wrote the keys in
    output_spec: Any = field(default=None, compare=False, repr=False)
    # what ties the graph to the module it was traced from, checked at every rule call (`pcsim.graph.ties`;
    # None: not traced)
    ties: ModuleTies | None = field(default=None, compare=False, repr=False)
    # Python numbers the program took from the inputs' values (`pcsim.graph.guards`): each rule recomputes them
    number_guards: tuple = field(default=(), compare=False, repr=False)
    # what `derived` computed from this graph's structure, by key (not part of the graph's value)
    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.validate()

    def __getstate__(self) -> dict:
        # What was worked out from its structure is left behind (it holds closures), and worked out again. (The
        # ties drop their weak references themselves.)
        return {**self.__dict__, "_derived": {}}

    def derived(self, key: Hashable, build: Callable[[Graph], Any]) -> Any:
        """`build(self)`, computed on the first call for `key` and kept: a graph never changes, so
        neither does anything worked out from its structure (its levelled copy, a wave's plan)."""
        if key not in self._derived:
            self._derived[key] = build(self)
        return self._derived[key]

    # -- lookup ---------------------------------------------------------------------------
    @cached_property
    def by_name(self) -> dict[str, Vertex]:
        return {v.name: v for v in self.vertices}

    def __getitem__(self, name: str) -> Vertex:
        try:
            return self.by_name[name]
        except KeyError:
            raise KeyError(f"no vertex named '{name}' in the graph") from None

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def __len__(self) -> int:
        return len(self.vertices)

    @cached_property
    def clamped(self) -> frozenset[str]:
        """Inputs, and vertices computed from inputs alone without parameters (e.g. a flattened
        input): their values are fixed by the data, so they have no error population."""
        fixed: set[str] = set()
        for v in self.vertices:
            if v.is_input or (not v.params and v.parents and all(p in fixed for p in v.parents)):
                fixed.add(v.name)
        return frozenset(fixed)

    @cached_property
    def latent(self) -> tuple[str, ...]:
        """Vertices with a value and an error population, in topological order."""
        return tuple(v.name for v in self.vertices if v.name not in self.clamped)

    @cached_property
    def children(self) -> dict[str, tuple[str, ...]]:
        kids: dict[str, list[str]] = {v.name: [] for v in self.vertices}
        for v in self.vertices:
            for p in v.parents:
                kids[p].append(v.name)
        return {k: tuple(c) for k, c in kids.items()}

    @cached_property
    def identity_vertices(self) -> tuple[str, ...]:
        """Identity vertices inserted by `level()`."""
        return tuple(v.name for v in self.vertices if v.inserted)

    @property
    def n_identity(self) -> int:
        return len(self.identity_vertices)

    @cached_property
    def users(self) -> dict[str, tuple[str, ...]]:
        """Parameter name -> the vertices that read it (more than one means a shared parameter)."""
        found: dict[str, list[str]] = {n: [] for n in self.param_names}
        for v in self.vertices:
            for p in v.params:
                found.setdefault(p, []).append(v.name)
        return {k: tuple(u) for k, u in found.items()}

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> None:
        seen: set[str] = set()
        for v in self.vertices:
            if v.name in seen:
                raise GraphError(f"two vertices are named '{v.name}'")
            if v.shape is None or any(not isinstance(s, int) or s < 0 for s in v.shape):
                raise GraphError(f"{v.describe()} has no known shape")
            for p in v.parents:
                if p not in seen:
                    why = "comes later (a cycle, or not in topological order)" if p in self else "does not exist"
                    raise GraphError(f"{v.describe()}: parent '{p}' {why}")
            if v.is_input and v.parents:
                raise GraphError(f"input vertex '{v.name}' cannot have parents")
            if not v.is_input and v.fn is None:
                raise GraphError(f"{v.describe()} has no function")
            for s in template_slots((v.args, dict(v.kwargs))):
                if isinstance(s, ParentArg) and not 0 <= s.index < len(v.parents):
                    raise GraphError(f"{v.describe()}: argument refers to parent #{s.index}")
                if isinstance(s, ParamArg) and s.name not in self.params:
                    raise GraphError(f"{v.describe()} reads unknown parameter '{s.name}'")
                if isinstance(s, ConstArg) and s.name not in self.constants:
                    raise GraphError(f"{v.describe()} reads unknown constant '{s.name}'")
            seen.add(v.name)
        if not self.outputs:
            raise GraphError("the graph has no output vertex")
        for name in self.inputs:
            if name not in seen or not self.by_name[name].is_input:
                raise GraphError(f"input '{name}' is not an input vertex of the graph")
        for name in self.outputs:
            if name not in seen:
                raise GraphError(f"output '{name}' is not a vertex of the graph")
            if name in self.clamped:
                raise GraphError(f"output '{name}' depends on no parameter: there is nothing to learn")
            if self.children[name]:
                raise GraphError(f"output '{name}' feeds other vertices {self.children[name]}; "
                                 "outputs must be sinks (trace() adds an identity vertex for this)")

    # -- distances to the outputs -----------------------------------------------------------
    def _distances(self, pick) -> dict[str, int]:
        """Edges from each latent vertex to an output, combined over children with `pick` (min/max).

        Vertices from which no output can be reached are left out, and so are clamped ones.
        """
        dist: dict[str, int] = {o: 0 for o in self.outputs}
        for v in reversed(self.vertices):
            if v.name in self.clamped or v.name in dist:
                continue
            below = [dist[c] + 1 for c in self.children[v.name] if c in dist]
            if below:
                dist[v.name] = pick(below)
        return dist

    @cached_property
    def min_distance(self) -> dict[str, int]:
        """Length of the shortest path to an output: the step the error wave first reaches a vertex."""
        return self._distances(min)

    @cached_property
    def max_distance(self) -> dict[str, int]:
        """Length of the longest path to an output."""
        return self._distances(max)

    @cached_property
    def is_levelled(self) -> bool:
        """Every path from each latent vertex to any output has the same length."""
        return self.min_distance == self.max_distance

    @property
    def depth(self) -> int:
        """The longest distance from a latent vertex to an output (number of Z-IL steps minus one)."""
        return max(self.max_distance.values(), default=0)

    def level(self) -> Graph:
        """A levelled graph with identity vertices on edges that skip levels (see `level.py`); `self`
        when it is levelled already. Computed once per graph."""
        from pcsim.graph.level import level

        return self.derived("level", level)

    def pruned(self) -> Graph:
        """This graph without the latent vertices that reach no output (an LSTM's unused `c_n`, say).

        From the feed-forward start such a vertex's error stays zero until a parent has moved, so
        its feedback reaches each vertex only after that vertex's error wave has passed: Z-IL's
        and Fa-Z-IL's updates are the same without it, and its forward call is not paid for.
        Returns `self` when every latent vertex reaches an output. Computed once per graph.
        """
        return self.derived("pruned", Graph._pruned)

    def _pruned(self) -> Graph:
        dead = {n for n in self.latent if n not in self.min_distance}
        if not dead:
            return self
        return replace(self, vertices=tuple(v for v in self.vertices if v.name not in dead))

    # -- display ----------------------------------------------------------------------------
    def summary(self) -> str:
        dist = self.max_distance
        lines = [f"{'vertex':<28} {'op':<16} {'shape':<18} {'dist':>4}  parents"]
        for v in self.vertices:
            lines.append(f"{v.name:<28} {v.op:<16} {str(tuple(v.shape)):<18} {dist.get(v.name, ''):>4}  "
                         f"{', '.join(v.parents)}{' (inserted)' if v.inserted else ''}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Graph({len(self.latent)} latent vertices, inputs={list(self.inputs)}, "
                f"outputs={list(self.outputs)}, levelled={self.is_levelled}, "
                f"identity={self.n_identity})")
