"""Another checkout of pcsim imported beside this one: old and new code timed interleaved in one process."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def import_pcsim_from(src: str | os.PathLike, submodules=("pcsim.dynamics.field", "pcsim.backends.torch_adaptive")):
    """The pcsim package in `src` (an older checkout, `--baseline-src`), imported as a second set of module objects
    beside this one, which stays `pcsim`: old and new code timed interleaved in one process."""
    mine = {k: v for k, v in sys.modules.items() if k == "pcsim" or k.startswith("pcsim.")}
    for k in mine:
        del sys.modules[k]
    sys.path.insert(0, str(Path(src).resolve()))
    try:
        import pcsim as other

        for sub in submodules:
            __import__(sub)
    finally:
        sys.path.pop(0)
        for k in [k for k in sys.modules if k == "pcsim" or k.startswith("pcsim.")]:
            del sys.modules[k]
        sys.modules.update(mine)
    return other
