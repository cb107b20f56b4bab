"""Model files: the zoo in `models/` and any user file that follows the same convention.

A model file defines `build(seed: int = 0, **dims) -> (module, inputs, target)` and may set
`LOSS = "ce"` (default `"mse"`). Files are imported by path under a name derived from their
resolved path, so two files with the same stem never share a module and sys.path is untouched.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn
from torch.nn import functional as F

from pcsim import paths
from pcsim.errors import PcsimError
from pcsim.graph.provenance import exception_user_line

LOSSES = ("mse", "ce")

# build() dims per shipped zoo model: the same architecture (ResNet-18 keeps its 8 blocks) at a size
# that checks in a second or two; used by `pcsim demo`, the zil_zoo notebook and the tests.
SMALL_DIMS: dict[str, dict] = {
    "alexnet": dict(channels=(4, 6, 8, 8, 8), hidden=16, batch=2),
    "cnn": dict(batch=4),
    "densenet_block": dict(input_shape=(3, 8, 8), stem=4, num_layers=3, growth=3, bn_size=2, batch=2),
    "gru": dict(input_shape=(4, 3), hidden_size=5, batch=2),
    "lstm": dict(input_shape=(4, 3), hidden_size=5, num_layers=2, batch=2),
    "mlp": dict(input_shape=(20,), hidden=(16, 12), batch=4),
    "residual_mlp": dict(batch=4),
    "resnet18": dict(input_shape=(3, 8, 8), width=4, batch=2),
    "rnn": dict(input_shape=(10, 3), hidden_size=5, batch=4),
    "tied_autoencoder": dict(input_shape=(12,), code=5, batch=4),
    "transformer": dict(input_shape=(6,), vocab=20, d_model=8, nhead=2, dim_feedforward=16, batch=2),
}


class ModelFileError(PcsimError, ValueError):
    """A model file is missing, cannot be imported, or does not follow the build() convention."""


def zoo_dir(*, must_exist: bool = False) -> Path:
    """The zoo folder: `--models-dir DIR`, else $PCSIM_MODELS, else ./models (see pcsim.paths)."""
    return paths.folder("models", must_exist=must_exist)


def zoo_names() -> list[str]:
    """The zoo's model names: its *.py files without a leading underscore, sorted. A missing zoo
    folder is a FolderNotFound naming the setting to use."""
    folder = zoo_dir(must_exist=True)
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))


def _listing() -> str:
    """What the zoo holds, for an error message (which must not fail itself on a missing folder)."""
    try:
        return f"zoo models: {', '.join(zoo_names()) or 'none'}"
    except paths.FolderNotFound:
        return f"no zoo folder at {zoo_dir()} (set PCSIM_MODELS=DIR or pass --models-dir DIR)"


@dataclass(frozen=True)
class ModelSpec:
    """A loaded model file: its name (the file's stem), path, build function and loss."""

    name: str
    path: Path
    build: Callable
    loss: str

    def build_model(self, seed: int = 0, **dims) -> tuple[nn.Module, tuple[torch.Tensor, ...], object]:
        """Call the file's build() and check its result; inputs always come back as a tuple."""
        try:  # a build() without the dims asked for (training fits a model to its data) is the file's signature,
            inspect.signature(self.build).bind(seed=seed, **dims)  # not an error raised inside it
        except TypeError as e:
            call = ", ".join(f"{k}={v!r}" for k, v in {"seed": seed, **dims}.items())
            raise ModelFileError(f"{self.path}: build() cannot be called as build({call}): {e}; give it these "
                                 "arguments (or **dims)") from None
        except ValueError:  # no signature to read (a builtin): let the call say
            pass
        try:
            result = self.build(seed=seed, **dims)
        except Exception as e:  # a user's bug: say which file, keep the original error chained
            raise ModelFileError(f"{self.path}: build() raised {type(e).__name__}{_where(e)}") from e
        return _validated(result, self.path)


def one_hot_for_mse(module: nn.Module, inputs, target, loss: str):
    """(target, note): for MSE on a classification model's class indices, their one-hot encoding along the
    output's class dimension (1, as cross-entropy reads it) and a note saying so; otherwise (target, None)."""
    if loss != "mse" or not isinstance(target, torch.Tensor) or target.is_floating_point():
        return target, None
    with torch.no_grad():
        out = module(*inputs)
    fits = (isinstance(out, torch.Tensor) and out.is_floating_point() and out.dim() == target.dim() + 1
            and out.shape[0] == target.shape[0] and tuple(out.shape[2:]) == tuple(target.shape[1:]))
    if not fits:  # not class indices for this output: the loss's own check refuses it, naming the output
        return target, None
    classes = out.shape[1]
    if int(target.min()) < 0 or int(target.max()) >= classes:
        raise ModelFileError(f"--loss mse: the target holds class indices outside 0..{classes - 1}, "
                             f"the output's {classes} classes")
    encoded = F.one_hot(target, classes).movedim(-1, 1).to(out.dtype)
    return encoded, f"--loss mse on class indices: the target is one-hot encoded over {classes} classes"


def _is_tensors(x) -> bool:
    """A tensor, or a non-empty sequence of tensors."""
    return isinstance(x, torch.Tensor) or (isinstance(x, Sequence) and not isinstance(x, str) and len(x) > 0
                                            and all(isinstance(t, torch.Tensor) for t in x))


def _validated(result, path: Path) -> tuple[nn.Module, tuple[torch.Tensor, ...], object]:
    expected = "build() must return (module, inputs, target)"
    if not isinstance(result, tuple | list) or len(result) != 3:
        raise ModelFileError(f"{path}: {expected}, got {type(result).__name__}")
    module, inputs, target = result
    if not isinstance(module, nn.Module):
        raise ModelFileError(f"{path}: {expected}; the module is a {type(module).__name__}, not an nn.Module")
    for what, value in (("inputs", inputs), ("target", target)):
        if not _is_tensors(value):
            raise ModelFileError(f"{path}: {expected}; {what} must be a tensor or a tuple of tensors")
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    target = target if isinstance(target, torch.Tensor) else tuple(target)
    return module, inputs, target


def _resolve(spec: str) -> Path:
    """A zoo name ("mlp") or a path to a .py file -> the file's path."""
    as_path = Path(spec).expanduser()
    looks_like_path = spec.endswith(".py") or os.sep in spec or (os.altsep is not None and os.altsep in spec)
    if looks_like_path:
        if not as_path.is_file():
            raise ModelFileError(f"model file {spec} not found; {_listing()}")
        return as_path.resolve()
    folder = zoo_dir(must_exist=True)  # a missing zoo folder: say which setting finds it
    zoo_file = folder / f"{spec}.py"
    if spec.startswith("_") or not zoo_file.is_file():
        raise ModelFileError(f"no zoo model named '{spec}' (no file {zoo_file}); "
                             f"{_listing()}; or pass a path to a .py file")
    return zoo_file.resolve()


def _import(path: Path) -> ModuleType:
    # A name unique to the resolved path: same-stem files never collide, reloading a path replaces it.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"_pcsim_model_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelFileError(f"{path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    # Registered while executing so dataclasses and typing in the file can find their own module.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise ModelFileError(f"{path}: importing the file raised {type(e).__name__}{_where(e)}") from e
    return module


def _where(e: Exception) -> str:
    """': message', then the user's line the exception came from, if it came from the user's code."""
    line = exception_user_line(e)
    return f": {e}" + (f"\n{line}" if line else "")


def load_model_file(spec: str | os.PathLike) -> ModelSpec:
    """Load a zoo model by name or any model file by path; errors name the file."""
    path = _resolve(os.fspath(spec))
    module = _import(path)
    build = getattr(module, "build", None)
    if not callable(build):
        raise ModelFileError(f"{path}: defines no build(seed=0, **dims) function returning (module, inputs, target)")
    loss = getattr(module, "LOSS", "mse")
    if loss not in LOSSES:
        raise ModelFileError(f"{path}: LOSS must be one of {list(LOSSES)}, got {loss!r}")
    return ModelSpec(name=path.stem, path=path, build=build, loss=loss)
