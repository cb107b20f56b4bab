"""A vertex's local vector-Jacobian product: its prediction `mu = g(parents; theta)`, the pullback
of a cotangent (its error) to its parents (`J^T err`, their feedback) and to its parameters
(`(d mu / d theta)^T err`, the Hebbian term). Nothing outside the vertex is touched.

One strategy per vertex, all exact:
- `Autograd`: autograd on the vertex's one call, for every op. Only the parents whose feedback
  is used are tracked (a clamped input's cotangent is a matmul backprop does not make either),
  parameters only when a Hebbian term is wanted; absent terms stay None. `pull_back` pulls many
  vertices back in one engine call (their local graphs share nothing, so each gets its own terms).
- `Placement`: a vertex that is a strict view of its one tracked parent (chunk, split, basic
  index): its feedback is its error put back in that place (`Placed`), with no autograd, which
  would pad every part to the parent's size for the parent to add up.
- IL's per-vertex ops (`local_op`): closed forms for the hot ops (`Linear`, `Elementwise`,
  `Add`: the kernel autograd itself would run, into buffers reused from step to step), else
  `Op` (autograd). Each also has a pure form (`traced`, `traced_vjp`) that the compiled IL step
  records with `make_fx`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from pcsim.graph.ir import ParamArg, ParentArg, Vertex
from pcsim.ops.table import entry, op_name

Params = Mapping[str, torch.Tensor]


def call(vertex: Vertex, parents: Sequence[torch.Tensor], params: Params, constants: Params) -> torch.Tensor:
    """The vertex's prediction from its parents' values."""
    args, kwargs = vertex.bind(parents, params, constants)
    out = vertex.fn(*args, **kwargs)
    return out if vertex.select is None else out[vertex.select]


# -- one-shot pullbacks: the synchronous sweeps, the analysis, the capture's probe ----------------
_FREED = object()  # an output already pulled back without `retain`


class Autograd:
    """`mu` of one vertex, and the pullback of a cotangent to the tracked parents and parameters.

    `track[i]`: pull back to parent i (default: every floating parent; never an integer one).
    The recorded output is kept until its pullback; it shares `mu`'s storage, so that costs no memory.
    """

    __slots__ = ("mu", "_out", "_tracked", "_parent_leaves", "_param_names", "_param_leaves")

    def __init__(self, vertex: Vertex, parents: Sequence[torch.Tensor], params: Params, constants: Params,
                 track: Sequence[bool] | None = None, wrt_params: bool = True):
        if track is None:
            track = [p.is_floating_point() or p.is_complex() for p in parents]
        self._tracked = tuple(track)
        self._parent_leaves = [p.detach().requires_grad_(True) for p, t in zip(parents, track, strict=True) if t]
        names = vertex.params if wrt_params else ()
        self._param_names = names
        self._param_leaves = [params[n].detach().requires_grad_(True) for n in names]
        if names:
            params = {**params, **dict(zip(names, self._param_leaves, strict=True))}
        if not self._parent_leaves and not names:
            out = call(vertex, parents, params, constants)
        else:
            with torch.enable_grad():
                leaves = iter(self._parent_leaves)
                out = call(vertex, [next(leaves) if t else p for p, t in zip(parents, track, strict=True)],
                           params, constants)
        self._out = out if out.requires_grad else None
        self.mu = out.detach()

    def _results(self, grads: Sequence[torch.Tensor | None], n_parents: int
                 ) -> tuple[list[torch.Tensor | None], dict[str, torch.Tensor]]:
        param_cots = {n: g for n, g in zip(self._param_names, grads[n_parents:], strict=False) if g is not None}
        it = iter(grads[:n_parents])
        return [next(it) if t and n_parents else None for t in self._tracked], param_cots

    def pullback(self, cotangent: torch.Tensor, hebbian: bool = True, feedback: bool = True, retain: bool = False
                 ) -> tuple[list[torch.Tensor | None], dict[str, torch.Tensor]]:
        """(J^T cot per parent, None where untracked or unused; (d mu/d theta)^T cot per parameter reached).

        `hebbian=False` skips the parameter terms, `feedback=False` the parents'. Without `retain`
        the recorded call is freed: a second pullback raises.
        """
        return pull_back([(self, cotangent, hebbian, feedback)], retain)[0]


class Where(NamedTuple):
    """Where a part sits inside its parent: the parent's shape, and the part's view geometry."""

    parent_shape: tuple[int, ...]
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int


class Placed(NamedTuple):
    """A term that is `value` at `where` inside the parent and exactly zero elsewhere."""

    value: torch.Tensor
    where: Where


class Placement:
    """A vertex whose value is a strict view into its one tracked parent's storage."""

    __slots__ = ("mu", "_slot", "_n_parents", "_where")

    def __init__(self, mu: torch.Tensor, slot: int, n_parents: int, where: Where):
        self.mu, self._slot, self._n_parents, self._where = mu, slot, n_parents, where

    @classmethod
    def of(cls, vertex: Vertex, parents: Sequence[torch.Tensor], track: Sequence[bool],
           params: Params, constants: Params) -> Placement | None:
        """The vertex as a `Placement`, or None where it is not a strict view of one tracked parent."""
        if not entry(vertex.op).selection or vertex.params or sum(bool(t) for t in track) != 1:
            return None
        slot = [bool(t) for t in track].index(True)
        parent = parents[slot]
        if not parent.is_contiguous():
            return None
        out = call(vertex, parents, params, constants)
        if (not isinstance(out, torch.Tensor) or not 0 < out.numel() < parent.numel()
                or out.untyped_storage().data_ptr() != parent.untyped_storage().data_ptr()):
            return None  # a copy (advanced indexing) or the whole parent: autograd's pullback is the right one
        where = Where(tuple(parent.shape), tuple(out.shape), tuple(out.stride()),
                      out.storage_offset() - parent.storage_offset())
        return cls(out, slot, len(parents), where)

    def placed(self, cotangent: torch.Tensor) -> Placed:
        """The feedback to the parent: `cotangent` in this vertex's place, zero elsewhere."""
        return Placed(cotangent, self._where)

    def pullback(self, cotangent: torch.Tensor, hebbian: bool = True, feedback: bool = True, retain: bool = False
                 ) -> tuple[list[Placed | None], dict[str, torch.Tensor]]:
        place = self.placed(cotangent) if feedback else None
        return [place if i == self._slot else None for i in range(self._n_parents)], {}


def linearise(vertex: Vertex, parents: Sequence[torch.Tensor], params: Params, constants: Params,
              track: Sequence[bool] | None = None, wrt_params: bool = True) -> Autograd | Placement:
    """A `Placement` where the vertex selects part of a tracked parent, else `Autograd` on its call."""
    return ((track is not None and Placement.of(vertex, parents, track, params, constants))
            or Autograd(vertex, parents, params, constants, track, wrt_params))


def pull_back(items: Sequence[tuple[Autograd | Placement, torch.Tensor, bool, bool]], retain: bool = False
              ) -> list[tuple[list, dict[str, torch.Tensor]]]:
    """`pullback` of many (vertex, cotangent, hebbian, feedback) in one autograd call."""
    outs, cots, inputs, spans = [], [], [], []
    for lin, cot, hebbian, feedback in items:
        if isinstance(lin, Placement):
            spans.append(None)
            continue
        out = lin._out
        if out is _FREED:
            raise RuntimeError("this vertex's recorded call was already pulled back (pass retain=True to reuse it)")
        if not retain:
            lin._out = _FREED
        parents = lin._parent_leaves if feedback else []
        wanted = parents + (lin._param_leaves if hebbian else [])
        if out is None or not wanted:
            wanted, parents = [], []
        else:
            outs.append(out)
            cots.append(cot)
        spans.append((len(inputs), len(wanted), len(parents)))
        inputs.extend(wanted)
    grads = torch.autograd.grad(outs, inputs, cots, retain_graph=retain, allow_unused=True) if outs else ()
    return [lin.pullback(cot, feedback=feedback) if span is None
            else lin._results(grads[span[0]:span[0] + span[1]], span[2])
            for (lin, cot, _, feedback), span in zip(items, spans, strict=True)]


# -- IL's per-vertex ops: moved from point to point, pulled back at every step ---------------------
class Op:
    """Autograd on the vertex's call, for every op; subclasses are closed forms of hot ops.

    `at(parents, mu=None)` moves the linearisation point, `vjp(cot)` gives `J^T cot` per parent
    (None where not `wanted`), `hebbian(cot)` the parameter terms, fresh tensors. The closed forms
    write `mu` and feedback into `_buffer`s: valid until the op's next such call, not to be written.
    `traced`/`traced_vjp` are the same computations as pure functions of their arguments.
    """

    closed = False  # True: `traced` needs no linearisation point beyond the parents' values

    def __init__(self, vertex: Vertex, params: Params, constants: Params, wanted: Sequence[bool]):
        self.vertex, self.params, self.constants = vertex, params, constants
        self.wanted = tuple(wanted)
        self.parents: list[torch.Tensor] = []
        self.mu: torch.Tensor | None = None
        self._lin: Autograd | None = None
        self._bufs: dict[str, torch.Tensor] = {}

    def _buffer(self, kind: str, shape, like: torch.Tensor) -> torch.Tensor:
        """This op's own buffer for `kind`, reused from call to call (fresh 1 MB tensors cost page faults)."""
        buf = self._bufs.get(kind)
        if buf is None:
            buf = self._bufs[kind] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def at(self, parents: Sequence[torch.Tensor], mu: torch.Tensor | None = None) -> torch.Tensor:
        """Move the linearisation point to `parents`; `mu` is the prediction there if already known."""
        self.parents, self._lin = list(parents), None
        self.mu = self._predict() if mu is None else mu
        return self.mu

    def _record(self) -> Autograd:
        self._lin = Autograd(self.vertex, self.parents, self.params, self.constants, self.wanted, wrt_params=False)
        return self._lin

    def _predict(self) -> torch.Tensor:
        return self._record().mu

    def vjp(self, cot: torch.Tensor) -> list[torch.Tensor | None]:
        lin = self._lin or self._record()  # a point adopted with a known mu is recorded now
        return lin.pullback(cot, hebbian=False, retain=True)[0]

    def hebbian(self, cot: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.vertex.params:
            return {}
        lin = Autograd(self.vertex, self.parents, self.params, self.constants, [False] * len(self.parents))
        own = lin.pullback(cot, feedback=False)[1]
        return {n: own[n] if n in own else torch.zeros_like(self.params[n]) for n in self.vertex.params}

    def traced(self, parents, params, constants):
        """(mu, pullback) at `parents`: `torch.func.vjp` of the call in the wanted parents."""
        wanted = [i for i, w in enumerate(self.wanted) if w]

        def local(*moving):
            ps = list(parents)
            for i, m in zip(wanted, moving, strict=True):
                ps[i] = m
            return call(self.vertex, ps, params, constants)

        return torch.func.vjp(local, *[parents[i] for i in wanted])

    def traced_vjp(self, e, mu, pullback, params) -> list[torch.Tensor | None]:
        if not any(self.wanted):
            return [None] * len(self.wanted)
        cots = iter(pullback(e))
        return [next(cots) if w else None for w in self.wanted]


class Linear(Op):
    """`F.linear(x, W, b)`: feedback `cot @ W`, Hebbian `cot^T x` and `sum(cot)` over leading dims."""

    closed = True

    def __init__(self, vertex, params, constants, wanted):
        super().__init__(vertex, params, constants, wanted)
        self.weight_name = vertex.args[1].name
        self.bias_name = vertex.args[2].name if len(vertex.args) > 2 and vertex.args[2] is not None else None
        self.weight = params[self.weight_name].detach()
        self.bias = None if self.bias_name is None else params[self.bias_name].detach()

    def _predict(self):
        x = self.parents[0]
        if x.dim() != 2:
            return F.linear(x, self.weight, self.bias)
        out = self._buffer("mu", (x.shape[0], self.weight.shape[0]), x)  # the kernel F.linear runs on 2-D inputs
        if self.bias is None:
            return torch.mm(x, self.weight.t(), out=out)
        return torch.addmm(self.bias, x, self.weight.t(), out=out)

    def vjp(self, cot):
        if not self.wanted[0]:
            return [None]
        if cot.dim() != 2:
            return [cot.matmul(self.weight)]
        return [torch.mm(cot, self.weight, out=self._buffer("fb", (cot.shape[0], self.weight.shape[1]), cot))]

    def hebbian(self, cot):
        x = self.parents[0]
        cot2 = cot.reshape(-1, cot.shape[-1])
        out = {self.weight_name: cot2.t().mm(x.reshape(-1, x.shape[-1]))}
        if self.bias_name is not None:
            out[self.bias_name] = cot2.sum(0)
        return out

    def traced(self, parents, params, constants):
        x, w = parents[0], params[self.weight_name]
        b = None if self.bias_name is None else params[self.bias_name]
        if x.dim() != 2:
            return F.linear(x, w, b), None
        return (x @ w.t() if b is None else x @ w.t() + b), None

    def traced_vjp(self, e, mu, pullback, params):
        return [e.matmul(params[self.weight_name]) if self.wanted[0] else None]


class Elementwise(Op):
    """An activation whose derivative is a function of its output: tanh, sigmoid, relu (op table)."""

    closed = True
    _FORWARD = {"tanh": torch.tanh, "sigmoid": torch.sigmoid}

    def __init__(self, vertex, params, constants, wanted):
        super().__init__(vertex, params, constants, wanted)
        self._forward = self._FORWARD.get(vertex.op)
        self._kernel, self._backward_args = entry(vertex.op).backward
        self._grad_input = self._kernel.overloadpacket.grad_input  # the same kernel, writing into a buffer

    def _predict(self):
        if self._forward is None:
            return call(self.vertex, self.parents, self.params, self.constants)
        x = self.parents[0]
        return self._forward(x, out=self._buffer("mu", x.shape, x))

    def vjp(self, cot):
        if not self.wanted[0]:
            return [None]
        fb = self._buffer("fb", cot.shape, cot)
        return [self._grad_input(cot, self.mu, *self._backward_args, grad_input=fb)]

    def traced(self, parents, params, constants):
        return (self._forward(parents[0]) if self._forward else call(self.vertex, parents, params, constants)), None

    def traced_vjp(self, e, mu, pullback, params):
        return [self._kernel(e, mu, *self._backward_args) if self.wanted[0] else None]


class Add(Op):
    """`a + b` of two parents of the vertex's own shape: the error passes to both unchanged."""

    closed = True

    def _predict(self):
        return call(self.vertex, self.parents, self.params, self.constants)

    def vjp(self, cot):
        return [cot if w else None for w in self.wanted]

    def traced(self, parents, params, constants):
        return call(self.vertex, parents, params, constants), None

    def traced_vjp(self, e, mu, pullback, params):
        return self.vjp(e)


def is_linear(v: Vertex) -> bool:
    """`F.linear(parent, W[, b])` with parameters W and b: an affine map of its one parent."""
    a = v.args
    return (op_name(v.fn) == "linear" and not v.kwargs and len(v.parents) == 1 and len(a) in (2, 3)
            and a[0] == ParentArg(0) and isinstance(a[1], ParamArg)
            and (len(a) == 2 or a[2] is None or isinstance(a[2], ParamArg)))


def is_add(v: Vertex, parent_shapes: Sequence[tuple[int, ...]]) -> bool:
    """`a + b` of two parents of the vertex's own shape (no broadcasting)."""
    return (op_name(v.fn) == "add" and v.args == (ParentArg(0), ParentArg(1)) and not v.kwargs
            and len(v.parents) == 2 and all(tuple(s) == tuple(v.shape) for s in parent_shapes))


def _is_elementwise(v: Vertex) -> bool:
    kwargs_ok = not v.kwargs or dict(v.kwargs) == {"inplace": False}
    return (op_name(v.fn) == v.op and entry(v.op).backward is not None and v.args == (ParentArg(0),) and kwargs_ok
            and len(v.parents) == 1)


def local_op(vertex: Vertex, params: Params, constants: Params, wanted: Sequence[bool],
             parent_shapes: Sequence[tuple[int, ...]]) -> Op:
    """IL's op for `vertex`: a closed form where one is known, else autograd on its call."""
    if vertex.select is None:
        if is_linear(vertex):
            return Linear(vertex, params, constants, wanted)
        if _is_elementwise(vertex):
            return Elementwise(vertex, params, constants, wanted)
        if is_add(vertex, parent_shapes):
            return Add(vertex, params, constants, wanted)
    return Op(vertex, params, constants, wanted)
