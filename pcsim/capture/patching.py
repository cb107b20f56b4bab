"""Stand-ins for torch functions while a capture runs, in the capturing thread alone.

The capture replaces torch functions process-wide for its duration (`Function.apply`, `Tensor.register_hook`,
autograd's backward engine, `inference_mode`'s entry and exit). Another thread running meanwhile (a rule on
another graph, the user's own training step) must get torch's own: a `.backward()` there was refused as a
derivative taken in forward(), and an `inference_mode` entered before the capture and left during it stopped
with a KeyError. Captures themselves run one at a time (`export._CAPTURING`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def patched(owner, attr: str, patch: Callable, original: Callable, wrap: Callable = lambda f: f) -> Iterator[None]:
    """`owner.attr` is `wrap(patch)` in this thread while inside, and `wrap(original)` in every other and after.

    `original` is torch's own, taken once at import: a run restores it, never another run's stand-in."""
    thread = threading.get_ident()

    def either(*args, **kwargs):
        return (patch if threading.get_ident() == thread else original)(*args, **kwargs)
    setattr(owner, attr, wrap(either))
    try:
        yield
    finally:
        setattr(owner, attr, wrap(original))
