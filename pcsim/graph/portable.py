"""ATen op overloads kept by name where a graph is pickled: torch's `OpOverload` objects do not pickle (pickle
stopped in a pybind11 function record: 'is not pickleable'), and a captured vertex calls one wherever the op
table names no torch function for it (conv2d, max_pool2d, abs, amax, ...)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch


class AtenOp(NamedTuple):
    """An op overload by name: `torch.ops.<namespace>.<name>.<overload>`."""

    namespace: str
    name: str
    overload: str

    def resolve(self) -> Any:
        return getattr(getattr(getattr(torch.ops, self.namespace), self.name), self.overload)


def portable(fn: Any) -> Any:
    """`fn`, an op overload given by name (`AtenOp`); anything else as it is."""
    if isinstance(fn, torch._ops.OpOverload):
        namespace, name = fn._schema.name.split("::", 1)
        return AtenOp(namespace, name, fn._overloadname)
    return fn


def resolved(fn: Any) -> Any:
    """The op overload an `AtenOp` names; anything else as it is."""
    return fn.resolve() if isinstance(fn, AtenOp) else fn
