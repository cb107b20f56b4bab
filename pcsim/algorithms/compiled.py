"""Compiling a rule's work once per graph and layout: `il(compile=True)`, `fa_zil(compile=True)`.

A rule hands over a function of tensors only (every value it reads is an argument) and example arguments.
It is recorded as a graph of ATen ops (`make_fx` on fake tensors: nothing runs) and compiled by inductor,
which fuses element-wise work into loops around the matrix products and convolutions.

Inductor is called directly: dynamo's guards would cost per call about a small step's time. What they would
check (shapes, strides, offsets, dtypes, devices, aliasing) is `layout_key`, under which the caller keeps the
compiled function on its graph (`Graph.derived`), so no call runs code compiled for another layout.
Inductor's pattern matcher is off: in torch 2.13 it rewrites `add(x, mm(a, b), alpha=g)` into an addmm that
drops the alpha. Any failure returns None with a warning, and the caller runs its eager code.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from pcsim.graph.provenance import user_stacklevel

INDUCTOR_OPTIONS = {"pattern_matcher": False}
aten = torch.ops.aten


Parts = dict[str, dict[str, torch.Tensor]]  # kind -> name -> tensor: what a traced function reads


def flatten(parts: Parts) -> tuple[tuple[tuple[str, str], ...], tuple[torch.Tensor, ...]]:
    """A traced function's flat argument list from `parts`, and each argument's (kind, name), in `parts`' order."""
    names = tuple((kind, n) for kind, values in parts.items() for n in values)
    return names, tuple(parts[kind][n] for kind, n in names)


def unflatten(names: Sequence[tuple[str, str]], tensors: Sequence[torch.Tensor], kinds: Sequence[str] = ()) -> Parts:
    """`flatten`'s inverse: the arguments `tensors`, named by `names`, as parts (every one of `kinds`, even empty)."""
    parts: Parts = {kind: {} for kind in kinds}
    for (kind, n), t in zip(names, tensors, strict=True):
        parts.setdefault(kind, {})[n] = t
    return parts


def layout_key(tensors: Sequence[torch.Tensor]) -> tuple:
    """What compiled code assumes about its arguments: their layouts and which ones share memory."""
    first: dict[int, int] = {}
    aliases = tuple(first.setdefault(t.untyped_storage().data_ptr(), i) for i, t in enumerate(tensors))
    return tuple((tuple(t.shape), t.stride(), t.storage_offset(), t.dtype, t.device) for t in tensors), aliases


def fold_products(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """`add(acc, mm(a, b))`, the product up to transposes and used nowhere else, as `addmm(acc, a, b)`, in place.

    What autograd records for a weight shared over time steps is such a sum, one product per use. Left as
    adds, inductor fuses the sum into one loop that keeps every step's product (and error) alive at once;
    as addmm chains, each product accumulates where it is made. Only a plain add (no alpha) whose operands
    and result share one shape and dtype; `t(mm(a, b))` is `mm(t(b), t(a))`.
    """
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not aten.add.Tensor or node.kwargs or len(node.args) != 2:
            continue
        for acc, term in (node.args, node.args[::-1]):
            product, flips = _strip_transposes(term)
            if not (_is(product, aten.mm.default) and len(product.users) == 1 and isinstance(acc, torch.fx.Node)
                    and _same_layout(acc, term, node)):
                continue
            a, b = product.args
            with graph.inserting_before(node):
                if flips % 2:
                    a, b = graph.call_function(aten.t.default, (b,)), graph.call_function(aten.t.default, (a,))
                folded = graph.call_function(aten.addmm.default, (acc, a, b))
            folded.meta = dict(node.meta)
            node.replace_all_uses_with(folded)
            graph.erase_node(node)
            break
    graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _is(node, target) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target is target


def _strip_transposes(node):
    """The node under a chain of single-use `t`, and how many there were."""
    flips = 0
    while _is(node, aten.t.default) and len(node.users) == 1:
        node, flips = node.args[0], flips + 1
    return node, flips


def _same_layout(*nodes: torch.fx.Node) -> bool:
    vals = [n.meta.get("val") for n in nodes]
    return all(isinstance(v, torch.Tensor) and v.dim() == 2 and v.shape == vals[0].shape and v.dtype == vals[0].dtype
               for v in vals)


def compile_function(fn: Callable, example: Sequence[torch.Tensor], what: str, *, mutated: int = 0,
                     fold: bool = False, options: dict | None = None) -> Callable | None:
    """`fn` compiled for arguments laid out as `example`, or None (warned) where that fails.

    `mutated`: the first `mutated` arguments are written in place by `fn`; the compiling call runs
    on copies of them, so that compiling changes no state. `fold`: apply `fold_products` first.
    `options`: inductor options on top of `INDUCTOR_OPTIONS`.
    """
    import torch._inductor  # here: importing the compiler took as long as importing torch, for every user

    try:
        traced = make_fx(fn, tracing_mode="fake")(*example)
        if any(n.op == "get_attr" for n in traced.graph.nodes):  # a value not passed in would go stale
            raise RuntimeError("the traced function captured a tensor constant")
        if fold:
            traced = fold_products(traced)
        compiled = torch._inductor.compile(traced, list(example), options={**INDUCTOR_OPTIONS, **(options or {})})
        compiled(*(t.clone() for t in example[:mutated]), *example[mutated:])  # compiles now, in this try
        return compiled
    except Exception as exc:  # noqa: BLE001 - the optional compiler's failures all fall back
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        warnings.warn(f"pcsim: compiling {what} failed ({type(exc).__name__}: {first}); it runs eagerly",
                      RuntimeWarning, stacklevel=user_stacklevel())
        return None
