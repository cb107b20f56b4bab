"""A vertex's prediction, feedback and Hebbian terms with explicit kernels for the hot ops.

IL's inference loop pulls every error back through its vertex at every step. For the ops that
dominate real networks (linear layers, element-wise activations, the sum of a residual join)
the vector-Jacobian product is one known kernel, the one autograd itself would run: `cot @ W`
for a linear layer's input, `tanh_backward(cot, mu)` for tanh, and so on. Calling it directly
skips autograd's bookkeeping and, more importantly, lets the caller ask only for what it needs:
feedback only to latent parents (never to a clamped input), Hebbian terms only when wanted.
Every other op falls back to `Linearisation` (autograd on the one call).

`local_op(vertex, ...)` picks the implementation; all share one interface:
`at(parents, mu=None)` moves the linearisation point (computing `mu` unless it is given),
`vjp(cot)` returns `J^T cot` per parent (None where not wanted), `hebbian(cot)` the
`(d mu / d theta)^T cot` per parameter at the current point, in tensors the caller may overwrite.
The explicit ops write `mu` and their feedback into buffers of their own, reused from call to
call (IL runs many steps of the same shapes; fresh 1 MB tensors cost page faults): a returned
tensor is valid until the op's next call of the same method, and the caller must not write into it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from pcsim.graph.ir import ParamArg, ParentArg, Vertex
from pcsim.ops.local import Linearisation, call
from pcsim.ops.table import entry, op_name

_aten = torch.ops.aten


class LocalOp:
    """Autograd on the vertex's one call: correct for every registered op."""

    def __init__(self, vertex: Vertex, params: Mapping[str, torch.Tensor], constants: Mapping[str, torch.Tensor],
                 wanted: Sequence[bool]):
        self.vertex = vertex
        self.params = params
        self.constants = constants
        self.wanted = tuple(wanted)  # pull back to parent i only where wanted[i] (latent parents)
        self.parents: list[torch.Tensor] = []
        self.mu: torch.Tensor | None = None
        self._lin: Linearisation | None = None

    def at(self, parents: Sequence[torch.Tensor], mu: torch.Tensor | None = None) -> torch.Tensor:
        """Move the linearisation point to `parents`; `mu` is the prediction there if already known."""
        self.parents = list(parents)
        self._lin = None
        self.mu = self._predict() if mu is None else mu
        return self.mu

    def _predict(self) -> torch.Tensor:
        self._lin = Linearisation(self.vertex, self.parents, self.params, self.constants,
                                  wrt_params=False, wrt_parents=self.wanted)
        return self._lin.mu

    def vjp(self, cot: torch.Tensor) -> list[torch.Tensor | None]:
        if self._lin is None:  # the point was adopted with a known mu: record the call now
            self._lin = Linearisation(self.vertex, self.parents, self.params, self.constants,
                                      wrt_params=False, wrt_parents=self.wanted)
        cots, _ = self._lin.pullback(cot, retain=True)
        return [c if w else None for c, w in zip(cots, self.wanted, strict=True)]

    def hebbian(self, cot: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.vertex.params:
            return {}
        lin = Linearisation(self.vertex, self.parents, self.params, self.constants, wrt_params=True,
                            wrt_parents=[False] * len(self.parents))
        return lin.pullback(cot)[1]


class LinearOp(LocalOp):
    """`F.linear(x, W, b)`: feedback `cot @ W`, Hebbian `cot^T x` and `sum(cot)` over leading dims."""

    def __init__(self, vertex, params, constants, wanted):
        super().__init__(vertex, params, constants, wanted)
        self.weight_name = vertex.args[1].name
        self.bias_name = vertex.args[2].name if len(vertex.args) > 2 and vertex.args[2] is not None else None
        self.weight = params[self.weight_name].detach()
        self.bias = None if self.bias_name is None else params[self.bias_name].detach()
        self._mu_buf: torch.Tensor | None = None
        self._fb_buf: torch.Tensor | None = None

    def _predict(self):
        x = self.parents[0]
        if x.dim() != 2:
            return F.linear(x, self.weight, self.bias)
        if self._mu_buf is None:  # the kernel F.linear runs on 2-D inputs, into a buffer of our own
            self._mu_buf = torch.empty((x.shape[0], self.weight.shape[0]), dtype=x.dtype, device=x.device)
        if self.bias is None:
            return torch.mm(x, self.weight.t(), out=self._mu_buf)
        return torch.addmm(self.bias, x, self.weight.t(), out=self._mu_buf)

    def vjp(self, cot):
        if not self.wanted[0]:
            return [None]
        if cot.dim() != 2:
            return [cot.matmul(self.weight)]
        if self._fb_buf is None:
            self._fb_buf = torch.empty((cot.shape[0], self.weight.shape[1]), dtype=cot.dtype, device=cot.device)
        return [torch.mm(cot, self.weight, out=self._fb_buf)]

    def hebbian(self, cot):
        x = self.parents[0]
        cot2 = cot.reshape(-1, cot.shape[-1])
        out = {self.weight_name: cot2.t().mm(x.reshape(-1, x.shape[-1]))}
        if self.bias_name is not None:
            out[self.bias_name] = cot2.sum(0)
        return out


def activation_backward(vertex: Vertex) -> tuple:
    """(ATen kernel, extra arguments) giving `J^T cot` from the output `mu`, as autograd computes it (op table)."""
    return entry(vertex.op).backward


class ElementwiseOp(LocalOp):
    """An activation whose derivative is a function of its output: tanh, sigmoid, relu."""

    _FORWARD = {"tanh": torch.tanh, "sigmoid": torch.sigmoid}

    def __init__(self, vertex, params, constants, wanted):
        super().__init__(vertex, params, constants, wanted)
        self._forward = self._FORWARD.get(vertex.op)
        kernel, self._backward_args = activation_backward(vertex)
        self._backward = kernel.overloadpacket
        self._mu_buf: torch.Tensor | None = None
        self._fb_buf: torch.Tensor | None = None

    def _predict(self):
        if self._forward is None:
            return call(self.vertex, self.parents, self.params, self.constants)
        if self._mu_buf is None:
            self._mu_buf = torch.empty_like(self.parents[0], memory_format=torch.contiguous_format)
        return self._forward(self.parents[0], out=self._mu_buf)

    def vjp(self, cot):
        if not self.wanted[0]:
            return [None]
        if self._fb_buf is None:
            self._fb_buf = torch.empty_like(cot, memory_format=torch.contiguous_format)
        return [self._backward.grad_input(cot, self.mu, *self._backward_args, grad_input=self._fb_buf)]


class AddOp(LocalOp):
    """`a + b` of two parents of the vertex's own shape: the error passes to both unchanged."""

    def _predict(self):
        return call(self.vertex, self.parents, self.params, self.constants)

    def vjp(self, cot):
        return [cot if w else None for w in self.wanted]




def is_linear(v: Vertex) -> bool:
    """`F.linear(parent, W[, b])` with parameters W and b: an affine map of its one parent."""
    a = v.args
    return (op_name(v.fn) == "linear" and not v.kwargs and len(v.parents) == 1 and len(a) in (2, 3)
            and a[0] == ParentArg(0) and isinstance(a[1], ParamArg)
            and (len(a) == 2 or a[2] is None or isinstance(a[2], ParamArg)))


def _is_elementwise(v: Vertex) -> bool:
    kwargs_ok = not v.kwargs or dict(v.kwargs) == {"inplace": False}
    return (op_name(v.fn) == v.op and entry(v.op).backward is not None and v.args == (ParentArg(0),) and kwargs_ok
            and len(v.parents) == 1)


def is_add(v: Vertex, parent_shapes: Sequence[tuple[int, ...]]) -> bool:
    """`a + b` of two parents of the vertex's own shape (no broadcasting)."""
    return (op_name(v.fn) == "add" and v.args == (ParentArg(0), ParentArg(1)) and not v.kwargs
            and len(v.parents) == 2 and all(tuple(s) == tuple(v.shape) for s in parent_shapes))


def local_op(vertex: Vertex, params: Mapping[str, torch.Tensor], constants: Mapping[str, torch.Tensor],
             wanted: Sequence[bool], parent_shapes: Sequence[tuple[int, ...]]) -> LocalOp:
    """The fastest exact implementation of `vertex`'s local computations (autograd if no kernel is known)."""
    if vertex.select is None:
        if is_linear(vertex):
            return LinearOp(vertex, params, constants, wanted)
        if _is_elementwise(vertex):
            return ElementwiseOp(vertex, params, constants, wanted)
        if is_add(vertex, parent_shapes):
            return AddOp(vertex, params, constants, wanted)
    return LocalOp(vertex, params, constants, wanted)
