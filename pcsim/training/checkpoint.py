"""Checkpoints: tensors and plain data only, written atomically, read with weights_only=True.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the previous one, so a run killed mid-write leaves the previous checkpoint intact; loading
never unpickles code, so opening someone else's checkpoint is safe.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from pcsim.errors import PcsimError, first_line

FORMAT = "pcsim-checkpoint-1"


class CheckpointError(PcsimError):
    """A checkpoint is missing, corrupted, or not a pcsim checkpoint."""


def save_atomic(obj: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_checkpoint(state: dict, path: Path) -> Path:
    return save_atomic({"format": FORMAT, **state}, path)


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        why = first_line(e, type(e).__name__)
        if "Weights only load failed" in str(e):
            # torch's first line advises weights_only=False, which would run the file's code: give its reason
            reason = str(e).partition("WeightsUnpickler error:")[2].strip().split("\n")[0].strip()
            why = f"not tensors and plain data, the only kind pcsim loads; torch: {reason or 'unpickling failed'}"
        raise CheckpointError(f"{path} is not a readable pcsim checkpoint ({why})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a pcsim checkpoint (format {FORMAT} expected)")
    return state


def check_fits(saved: dict, module: torch.nn.Module, path: Path) -> None:
    """The checkpoint's weights fit the module they are loaded into, or a CheckpointError naming the first tensor
    that differs (a model file edited since the run), rather than torch's load_state_dict error on the model."""
    own = module.state_dict()
    for name in sorted(saved.keys() ^ own.keys()):  # a layer added or removed, before the shapes it shifts
        where = "the model has no" if name not in own else "the checkpoint has no"
        raise CheckpointError(f"{path} does not fit the model: {where} tensor '{name}' (was the model file "
                              "changed since the run?)")
    for name in sorted(own):
        if saved[name].shape != own[name].shape:
            raise CheckpointError(f"{path} does not fit the model: '{name}' has shape {tuple(saved[name].shape)} "
                                  f"there and {tuple(own[name].shape)} in the model (was the model file changed "
                                  "since the run?)")
