"""One learning problem: a graph with its data, targets and losses, validated at the boundary.

Everything the algorithms share lives here: the clamped values, the feed-forward pass, each
vertex's prediction from the current state, and the output errors. Results are returned in
autograd's sign convention (`dL/dtheta`) keyed by `module.named_parameters()` names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.utils import _pytree as pytree  # the flattening torch.export applies to a module's outputs

from pcsim.algorithms.losses import LOSSES, Loss, get_loss
from pcsim.errors import InputError
from pcsim.graph.guards import refuse_moved_numbers
from pcsim.graph.ir import Graph
from pcsim.ops.local import call


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _fresh(t: torch.Tensor, taken: set[int]) -> torch.Tensor:
    """`t` detached, in its own allocator-aligned contiguous storage (never a view): kept as it is where it owns
    such storage, shared with no tensor in `taken` (storage pointers), rather than copied to the same bits."""
    t = t.detach()
    owns = (t.is_contiguous() and t.storage_offset() == 0
            and t.untyped_storage().nbytes() == t.numel() * t.element_size())
    return t if owns and t.numel() and _storage(t) not in taken else t.clone(memory_format=torch.contiguous_format)


def aligned(t: torch.Tensor) -> torch.Tensor:
    """`t` itself when it owns contiguous storage from its start, else a fresh contiguous copy.

    MKL and the vectorised element-wise kernels can round differently on views that start inside
    a storage; every value a child reads must therefore start at an allocator-aligned address.
    """
    if t.is_contiguous() and t.storage_offset() == 0:
        return t
    return t.detach().clone(memory_format=torch.contiguous_format)


# What `simulate(target=None)` builds its Problem with: a simulation that never shows a target.
NO_TARGET = object()


def as_tuple(x, what: str) -> tuple:
    """`x` as a tuple of tensors (one tensor, or a sequence of them); `what` names it in the error."""
    if isinstance(x, torch.Tensor):
        return (x,)
    if isinstance(x, Sequence) and not isinstance(x, str):
        return tuple(x)
    raise InputError(f"{what} must be a tensor or a tuple of tensors, got {type(x).__name__}")


def _tensor_inputs(graph: Graph, inputs: tuple) -> tuple:
    """The inputs that are populations' data: those given as Python values at the trace (None, a number, a flag;
    `Graph.literal_inputs`) are left out of all the inputs, once checked to be the values the graph holds for."""
    if not graph.literal_inputs or len(inputs) != len(graph.inputs) + len(graph.literal_inputs):
        return inputs
    for i, traced in graph.literal_inputs:
        given = inputs[i]
        if type(given) is not type(traced) or given != traced:
            raise InputError(f"input #{i} is {given!r}; the graph was traced with {traced!r} there, and holds for "
                             "that value only (trace again for another)")
    literal = {i for i, _ in graph.literal_inputs}
    return tuple(x for i, x in enumerate(inputs) if i not in literal)


def as_targets(target, spec: pytree.TreeSpec | None = None) -> tuple:
    """One target per output: a tensor, a tuple of them, or tensors nested as the module's outputs are (an
    LSTM's `(y, (h, c))`, a dict), flattened in the order the outputs are (torch's pytree, None left out).
    `spec`, the outputs' TreeSpec where known, matches a dict of targets to dict outputs by key."""
    if isinstance(target, torch.Tensor):
        return (target,)
    if isinstance(target, str) or not isinstance(target, Sequence | Mapping):
        raise InputError(f"target must be a tensor or a tuple of tensors, got {type(target).__name__}")
    if spec is not None:
        target = _arranged(target, spec)
    leaves = tuple(t for t in pytree.tree_leaves(target) if t is not None)
    numbers = [t for t in leaves if isinstance(t, int | float | complex)]  # bool is an int
    if numbers:  # a list of labels was counted as one target per output: 'the graph has 1 output(s), got 6'
        raise InputError(f"target holds Python numbers ({len(numbers)} of {len(leaves)} entries, e.g. "
                         f"{numbers[0]!r}); give each output's target as one tensor (torch.tensor(labels))")
    return leaves


def as_losses(loss, n_outputs: int, spec: pytree.TreeSpec | None = None) -> tuple:
    """One loss per output: a name or Loss for all of them, a tuple of them in the outputs' order, or, as targets
    are, a dict matched to dict outputs by key (`spec`, the outputs' TreeSpec)."""
    if isinstance(loss, str | Loss):  # one loss for every output
        return (loss,) * n_outputs
    if isinstance(loss, Mapping) and spec is not None:  # by key: `tuple(loss)` would be the keys
        return tuple(lo for lo in pytree.tree_leaves(_arranged(loss, spec, "loss")) if lo is not None)
    if isinstance(loss, Sequence):  # one per output
        return tuple(loss)
    raise InputError(f"loss must be a name ({', '.join(sorted(LOSSES))}), a Loss, or a tuple of them (one per "
                     f"output; a dict for dict outputs), got {type(loss).__name__}")


def _arranged(target, spec: pytree.TreeSpec, where: str = "target"):
    """`target` with every mapping's entries in the order of the output's keys at the same place: pytree
    flattens a dict in its insertion order, so `{"a": ya, "z": yz}` for outputs `{"z": .., "a": ..}` would
    pair each output with the other's target (silently, where their shapes agree)."""
    if spec.is_leaf():
        return target
    keys = spec.context if isinstance(spec.context, list | tuple) else getattr(spec.context, "_fields", None)
    if isinstance(target, Mapping) and keys is not None and all(isinstance(k, str) for k in keys):
        extra = [k for k in target if k not in keys]
        if extra:
            raise InputError(f"{where} has key(s) {extra} that the module's output has not (its keys: {list(keys)})")
        # a key left out stands for an output returned as None (a missing target is counted later)
        return {k: _arranged(target[k], spec.child(i), f"{where}[{k!r}]") if k in target else None
                for i, k in enumerate(keys)}
    if isinstance(target, Sequence) and not isinstance(target, str) and len(target) == spec.num_children:
        return [_arranged(t, spec.child(i), f"{where}[{i}]") for i, t in enumerate(target)]
    return target  # flat already, or nested otherwise: flattened as given


@dataclass(frozen=True, eq=False)
class Problem:
    """A graph, its parameters, the clamped values, and a target and loss per output.

    Built with target `NO_TARGET`, it has none (a simulation that never shows one): each output's error is
    then zero, and what reads a target's value (the loss, its gradient, a shown output's energy) raises
    InputError. A user's empty target is refused: it would make every update silently zero.
    """

    graph: Graph
    params: Mapping[str, torch.Tensor]
    clamped: Mapping[str, torch.Tensor]  # inputs and values computed from inputs alone
    targets: Mapping[str, torch.Tensor]  # output vertex -> target; empty: none given
    losses: Mapping[str, Loss]  # output vertex -> loss

    @staticmethod
    def build(graph: Graph, inputs, target, loss="mse",
              params: Mapping[str, torch.Tensor] | None = None) -> Problem:
        inputs = _tensor_inputs(graph, as_tuple(inputs, "inputs"))
        if len(inputs) != len(graph.inputs):
            raise InputError(f"the graph takes {len(graph.inputs)} input(s) {list(graph.inputs)}, "
                             f"got {len(inputs)}")
        values: dict[str, torch.Tensor] = {}
        for name, x in zip(graph.inputs, inputs, strict=True):
            v = graph[name]
            if not isinstance(x, torch.Tensor):
                raise InputError(f"input '{name}' must be a tensor, got {type(x).__name__}")
            if tuple(x.shape) != tuple(v.shape):
                raise InputError(f"input '{name}' has shape {tuple(x.shape)}; the graph was traced with "
                                 f"{tuple(v.shape)} (trace again for another shape)")
            if x.dtype != v.dtype:
                kind = "floating" if x.is_floating_point() else "complex" if x.is_complex() else "integer"
                same_kind = x.is_floating_point() == v.dtype.is_floating_point
                fix = (f"convert the input, or trace the module in {x.dtype}" if same_kind
                       else f"convert the input to {v.dtype}" if v.dtype.is_floating_point
                       else "this input takes integer values, such as token ids")
                raise InputError(f"input '{name}' has {kind} dtype {x.dtype}; the graph was traced with "
                                 f"{v.dtype} ({fix})")
            values[name] = x.detach()
        if params is None:
            refuse_changed(graph)
        params = {n: p.detach() for n, p in (graph.params if params is None else params).items()}
        why = graph.ties.retyped(params) if graph.ties is not None else None
        if why:
            raise InputError(why)
        read, computed = graph.derived(_fixed, _fixed)
        missing = read.difference(params)
        if missing:
            raise InputError(f"no value given for parameter(s) {sorted(missing)}")
        device = next(iter(params.values())).device if params else None
        for name in graph.inputs:  # torch said 'Tensor on device cpu is not on the expected device ...', in a vertex
            _same_device(f"input '{name}'", values[name], device)
        for v in computed:  # clamped non-input vertices: computed once from the data
            values[v.name] = traced_shape(v, call(v, [values[p] for p in v.parents], params, graph.constants))
        refuse_moved_numbers(graph.number_guards, values, params, graph.constants)

        targets = () if target is NO_TARGET else as_targets(target, graph.output_spec)
        if not targets and target is not NO_TARGET:
            raise InputError(f"target is empty; give one target per output {list(graph.outputs)}")
        losses = as_losses(loss, len(graph.outputs), graph.output_spec)
        if targets and len(targets) != len(graph.outputs):
            raise InputError(f"the graph has {len(graph.outputs)} output(s) {_where_returned(graph)}, got "
                             f"{len(targets)} target(s): give one for every output")
        if len(losses) != len(graph.outputs):
            raise InputError(f"the graph has {len(graph.outputs)} output(s), got {len(losses)} losses")
        lmap = {name: get_loss(lo) for name, lo in zip(graph.outputs, losses, strict=True)}
        tmap = {}
        for name, y in zip(graph.outputs, targets, strict=False):
            if not isinstance(y, torch.Tensor):
                raise InputError(f"target for output '{name}' must be a tensor, got {type(y).__name__}")
            lmap[name].check_target(name, graph[name].shape, y)
            _same_device(f"target for output '{name}'", y, device)
            if y.is_floating_point() and y.dtype != graph[name].dtype:
                raise InputError(f"target for output '{name}' has dtype {y.dtype}, the output is "
                                 f"{graph[name].dtype}")
            lmap[name] = lmap[name].for_target(y)
            tmap[name] = lmap[name].as_target(y.detach())
        _refuse_nan({f"input '{n}'": values[n] for n in graph.inputs},
                    {f"the target for output '{n}'": y for n, y in tmap.items()})
        return Problem(graph, params, values, tmap, lmap)

    # -- local computations ---------------------------------------------------------------------
    def parent_values(self, name: str, x: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        return [x[p] if p in x else self.clamped[p] for p in self.graph[name].parents]

    def feedforward(self, kernel: Callable[[str, list[torch.Tensor]], torch.Tensor | None] | None = None
                    ) -> dict[str, torch.Tensor]:
        """Every latent vertex's value after the forward pass (all hidden errors zero: C1), each in its
        own aligned storage as every later state is (see `aligned`): recomputing a prediction from
        unchanged parents must give the same bits for errors to be exactly zero. `kernel(name, parents)`,
        where given and not None, computes a vertex's value in place of its call (IL's packed products)."""
        x: dict[str, torch.Tensor] = {}
        taken = {_storage(t) for t in (*self.params.values(), *self.graph.constants.values(), *self.clamped.values())}
        for name in self.graph.latent:
            v, parents = self.graph[name], self.parent_values(name, x)
            value = None if kernel is None else kernel(name, parents)
            if value is None:
                value = call(v, parents, self.params, self.graph.constants)
            x[name] = _fresh(traced_shape(v, value), taken)
            taken.add(_storage(x[name]))
        return x

    def output_error(self, name: str, mu: torch.Tensor, precision: float = 1.0,
                     target: torch.Tensor | None = None) -> torch.Tensor:
        """The output's error; `target` stands in for its own (a compiled step passes it as an argument).
        Without a target (never shown) it is zero."""
        if target is None and not self.targets:
            return torch.zeros_like(mu)
        e = self.losses[name].error(mu, self.targets[name] if target is None else target)
        return e if precision == 1.0 else precision * e  # 1.0 * e is e: no pass over the output for it

    def output_gradient(self, name: str, mu: torch.Tensor) -> torch.Tensor:
        """dL/dmu at output `name`: `-output_error(name, mu)` bit for bit, in one pass."""
        return self.losses[name].gradient(mu, self.target(name))

    def loss_value(self, mu: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.losses[o].value(mu[o], self.target(o)) for o in self.graph.outputs)

    def target(self, name: str) -> torch.Tensor:
        """Output `name`'s target; `InputError` where none was given."""
        if name not in self.targets:
            raise InputError(f"output '{name}' has no target: the rules need one (only `simulate` runs without)")
        return self.targets[name]

    def energy(self, mu: Mapping[str, torch.Tensor], eps: Mapping[str, torch.Tensor], shown: bool = True,
               precision: float = 1.0, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """The energy F per latent population (or those in `names`), each a float64 scalar tensor: the
        loss at an output whose target is shown (times the output precision), else 1/2 ||eps||^2 (an
        absent error is exactly zero). The one definition the rules, the ODEs and the analysis read."""
        outputs = set(self.graph.outputs)
        device = next(iter((self.targets or self.clamped).values())).device  # the data's
        out = {}
        for n in self.graph.latent if names is None else names:
            if n in outputs and shown:
                out[n] = precision * self.losses[n].value(mu[n], self.target(n)).double()
            elif n in eps:  # the norm upcasts as it reduces: no float64 copy of the error
                out[n] = 0.5 * torch.linalg.vector_norm(eps[n], dtype=torch.float64) ** 2
            else:
                out[n] = torch.zeros((), dtype=torch.float64, device=device)
        return out

    def complete(self, grads: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`grads` for every parameter of the module, in its order, zero where no term arrived; dense where autograd
        gave a sparse one (`nn.Embedding(sparse=True)`)."""
        return {n: (grads[n].to_dense() if grads[n].is_sparse else grads[n]) if n in grads
                else torch.zeros_like(self.params.get(n, p)) for n, p in self.graph.params.items()}


def traced_shape(v, value: torch.Tensor) -> torch.Tensor:
    """`value`, checked to have the shape `v` was traced with: an op whose size depends on the inputs' values
    (a boolean mask's selection, `nonzero`) gives another size on other inputs, where the graph does not hold."""
    if value.shape != v.shape:  # a torch.Size is a tuple: no tuple() of each, at every vertex of every call
        raise InputError(f"{v.describe()} has shape {tuple(value.shape)} on these inputs: its size depends on "
                         "the inputs' values, and the graph holds only where it is the traced one (trace again "
                         "on these inputs)")
    return value


def refuse_changed(graph: Graph) -> None:
    """A graph whose module changed since the trace no longer computes what the module does (`ModuleTies`)."""
    why = graph.ties.changed(graph.params) if graph.ties is not None else None
    if why:
        raise InputError(why)


def _same_device(what: str, t: torch.Tensor, device: torch.device | None) -> None:
    if device is not None and t.device != device:
        raise InputError(f"{what} is on {t.device}, the graph's parameters on {device}: move it with "
                         f".to({str(device)!r}) (or the module, and trace again)")


def _where_returned(graph: Graph) -> str:
    """The outputs as the module returns them (`out['h'] (vertex 'fc1__output')`): the vertex names alone (a
    carrier's `__output`) say little to someone who wrote a dict of targets."""
    spec = graph.output_spec
    if spec is None or spec.num_leaves != len(graph.outputs):
        return str(list(graph.outputs))
    paths = [pytree.keystr(p) for p, _ in pytree.tree_flatten_with_path(pytree.tree_unflatten(
        [0] * spec.num_leaves, spec))[0]]
    return ", ".join(f"out{p} (vertex '{n}')" if p else f"vertex '{n}'" for p, n in zip(paths, graph.outputs,
                                                                                        strict=True))


def _fixed(graph: Graph) -> tuple[frozenset[str], tuple]:
    """What `Problem.build` reads of a graph's structure, worked out once per graph: the parameters its vertices
    read, and its clamped vertices other than the inputs (in order)."""
    read = frozenset(n for v in graph.vertices for n in v.params)
    return read, tuple(v for v in graph.vertices if v.name in graph.clamped and not v.is_input)


def _refuse_nan(inputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> None:
    """A NaN in the data would run to NaN updates far from its cause; an inf in a target (not in an input: an
    additive -inf mask is meant) to an infinite output error. Every rule call pays this check, so it costs one sum
    per tensor and one synchronisation: a NaN or inf makes a sum non-finite, and only then are masks looked at."""
    floating = [(k, v, k in targets) for k, v in {**inputs, **targets}.items() if v.is_floating_point()]
    if not floating:
        return
    sums = ([floating[0][1].sum().item()] if len(floating) == 1
            else torch.stack([v.sum() for _, v, _ in floating]).tolist())
    for (what, v, target), s in zip(floating, sums, strict=True):
        if not (math.isnan(s) or target and math.isinf(s)):  # finite (or an inf in an input)
            continue
        if torch.isnan(v).any():
            at = tuple(torch.isnan(v).nonzero()[0].tolist())
            raise InputError(f"{what} holds NaN (the first at index {at}); pcsim needs numbers there")
        if target and torch.isinf(v).any():
            at = tuple(torch.isinf(v).nonzero()[0].tolist())
            raise InputError(f"{what} holds {v[at].item()} (the first at index {at}): its loss and output error are "
                             "infinite, and every update would be inf or NaN; pcsim needs finite targets")

