"""The module's tensors as they were before the capture's run of forward().

torch.export restores a module's plain attributes after its one run of forward() on fake tensors, but not its
registered tensors: a buffer that forward() registers or re-registers itself (a lazily built cache, as
x-transformers' ALiBi bias, `self.register_buffer('bias', ...)`) was left in the user's module as a fake tensor,
and the next call of the module (autograd's, in `check`) stopped inside torch ('Could not guard on data-dependent
expression'). forward() builds such a tensor again when it runs for real, as it did in the capture's run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

# the dicts of a module that hold its registered tensors, and the set that says which buffers are not saved
_REGISTRIES = ("_parameters", "_buffers")


@contextlib.contextmanager
def registered_tensors_kept(module: nn.Module, registered: list[str]) -> Iterator[None]:
    """Put back every submodule's parameters and buffers (which names, which tensors) as they were on entry, and
    list in `registered` the buffers of `module` itself that were registered meanwhile, where there was none."""
    saved = [(sub, {r: dict(sub.__dict__[r]) for r in _REGISTRIES}, set(sub._non_persistent_buffers_set))
             for sub in module.modules()]
    try:
        yield
    finally:
        before = saved[0][1]["_buffers"]
        registered.extend(k for k, v in module._buffers.items() if v is not None and before.get(k) is None)
        for sub, registries, non_persistent in saved:
            for r, before in registries.items():
                now = sub.__dict__[r]
                if now.keys() != before.keys() or any(now[k] is not v for k, v in before.items()):
                    now.clear()
                    now.update(before)
            if sub._non_persistent_buffers_set != non_persistent:
                sub._non_persistent_buffers_set.clear()
                sub._non_persistent_buffers_set.update(non_persistent)
