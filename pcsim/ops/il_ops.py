"""IL's per-vertex ops, moved from point to point and pulled back at every step (`local_op`): closed forms
for the hot ops (`Linear`, `Elementwise`, `Add`: the kernel autograd itself would run), else `Op` (autograd
on the vertex's one call, `ops.local`). Their pure forms (`traced`) are what the compiled IL step records.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pcsim.graph.ir import ParamArg, ParentArg, Vertex
from pcsim.ops.local import Autograd, Params, call
from pcsim.ops.products import gram
from pcsim.ops.table import entry, op_name


class Op:
    """Autograd on the vertex's call, for every op; subclasses are closed forms of hot ops.

    `at(parents, mu=None)` moves the linearisation point, `vjp(cot)` gives `J^T cot` per parent
    (None where not `wanted`), `hebbian(cot)` the parameter terms, fresh tensors. The closed forms
    write `mu` and feedback into `_buffer`s: valid until the op's next such call, not to be written.
    `traced`/`traced_vjp` are the same computations as pure functions of their arguments (for `make_fx`).
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
        out = {self.weight_name: gram(cot2, x.reshape(-1, x.shape[-1]))}
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
