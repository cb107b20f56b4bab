"""Compiling a rule's work once per graph and layout: `il(compile=True)`, `fa_zil(compile=True)`.

A rule hands over a function of tensors only (every value it reads is an argument) and example
arguments. The function is recorded as a graph of ATen ops (`make_fx` on fake tensors: nothing
runs), and that graph is compiled by inductor, which fuses element-wise work into loops around
the matrix products and convolutions it leaves to MKL and oneDNN.

Inductor is called directly, without dynamo. Dynamo would check each call's arguments against
guards, at 0.5 ms per call on the IL step of the 784-1000-1000-10 MLP. Here, what those guards
would check (shapes, strides, offsets, dtypes, devices, which arguments share memory) is part of
`layout_key`, under which the caller keeps the compiled function on its graph
(`Graph.derived`). Each new layout compiles once, and no call runs code compiled for another.

Inductor's pattern matcher is off: in torch 2.13 it rewrites `add(x, mm(a, b), alpha=g)` into
an addmm that drops the alpha. Any failure (no C++ compiler, an op inductor cannot lower) returns
None with a warning, and the caller runs its eager code, which computes the same result.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
import torch._inductor
from torch.fx.experimental.proxy_tensor import make_fx

INDUCTOR_OPTIONS = {"pattern_matcher": False}


def layout_key(tensors: Sequence[torch.Tensor]) -> tuple:
    """What compiled code assumes about its arguments: their layouts and which ones share memory."""
    first: dict[int, int] = {}
    aliases = tuple(first.setdefault(t.untyped_storage().data_ptr(), i) for i, t in enumerate(tensors))
    return tuple((tuple(t.shape), t.stride(), t.storage_offset(), t.dtype, t.device) for t in tensors), aliases


def compile_function(fn: Callable, example: Sequence[torch.Tensor], what: str, *, mutated: int = 0,
                     stacklevel: int = 2) -> Callable | None:
    """`fn` compiled for arguments laid out as `example`, or None (warned) where that fails.

    `mutated`: the first `mutated` arguments are written in place by `fn`; the compiling call runs
    on copies of them, so that compiling changes no state.
    """
    try:
        traced = make_fx(fn, tracing_mode="fake")(*example)
        if any(n.op == "get_attr" for n in traced.graph.nodes):  # a value not passed in would go stale
            raise RuntimeError("the traced function captured a tensor constant")
        compiled = torch._inductor.compile(traced, list(example), options=INDUCTOR_OPTIONS)
        compiled(*(t.clone() for t in example[:mutated]), *example[mutated:])  # compiles now, in this try
        return compiled
    except Exception as exc:  # noqa: BLE001 - the optional compiler's failures all fall back
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        warnings.warn(f"pcsim: compiling {what} failed ({type(exc).__name__}: {first}); it runs eagerly",
                      RuntimeWarning, stacklevel=stacklevel + 1)
        return None
