"""What several commands share: MODEL and its flags, `--models-dir`, and building a model file's model."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import torch

from pcsim.errors import PcsimError
from pcsim.zoo import load_model_file, one_hot_for_mse


def add_model_flags(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    """MODEL, `--seed`, `--models-dir` and `--fused` (as `pcsim.trace(..., fused=True)`): every command that
    traces a model file."""
    parser.add_argument("model", metavar="MODEL", nargs="?" if optional else None,
                        help="a zoo model name (e.g. mlp) or the path of a model .py file")
    parser.add_argument("--seed", type=int, default=0, help="the seed the model file's build() gets (default: 0)")
    parser.add_argument("--fused", action="store_true",
                        help="trace nn.RNN/LSTM/GRU as one vertex per layer call, on torch's fused kernel")
    add_models_dir_flag(parser)


def add_models_dir_flag(parser: argparse.ArgumentParser) -> None:
    """`--models-dir DIR`, the zoo folder, for every command that takes a MODEL or runs zoo models."""
    parser.add_argument("--models-dir", metavar="DIR", default=None,
                        help="the zoo folder that MODEL names are looked up in (default: $PCSIM_MODELS, else ./models)")


@contextlib.contextmanager
def in_model_file(spec):
    """pcsim's errors on a model say which model file it came from."""
    try:
        yield
    except (PcsimError, ValueError) as e:
        raise PcsimError(f"{spec.path}: {e}") from None


def positive_int(text: str) -> int:
    """An argparse type: an integer > 0 (check's --threads 0 is the flag's fault, not the model's)."""
    value = int(text)  # argparse reports a ValueError as "invalid positive_int value"
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _finite(zero: bool):
    """An argparse type: a finite number > 0, or >= 0 with `zero` (a time, or an error time constant where 0 is
    instantaneous). Checked as a flag: simulate's --dt 0 was reported as the model file's fault."""
    def parse(text: str) -> float:
        value = float(text)
        if not (0 <= value if zero else 0 < value) or not value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>=' if zero else '>'} 0, got {text}")
        return value
    parse.__name__ = "non_negative_float" if zero else "positive_float"  # argparse's "invalid ... value"
    return parse


positive_float, non_negative_float = _finite(zero=False), _finite(zero=True)


def output_file(path: str, flag: str) -> Path:
    """An output file's path, checked before the work that fills it (a simulation may take minutes): not a folder,
    and its nearest existing folder is a writable folder. Writing it may still fail: see `writing`."""
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"{flag} {path} is a folder: name a file in it")
    _writable(flag, path, out.absolute().parents)
    return out


def figure_file(path: str, flag: str, *, also: tuple[str, ...] = ()) -> Path:
    """An output file that matplotlib writes (or one of `also`'s suffixes), its format read from its suffix and
    checked before the work: a format matplotlib lacks failed only after the run it was to draw."""
    from matplotlib.figure import Figure

    out = output_file(path, flag)
    formats = sorted({*Figure().canvas.get_supported_filetypes(), *(s.lstrip(".") for s in also)})
    if out.suffix.lstrip(".").lower() not in formats:
        given = f"'{out.suffix}' is not a format pcsim can write" if out.suffix else "it has none"
        raise ValueError(f"{flag} {path}: the format is read from the file's suffix, and {given}; use one of "
                         f"{', '.join('.' + f for f in formats)}")
    return out


def output_folder(path: str, flag: str) -> Path:
    """An output folder's path, checked before the work that fills it (training may take hours): not a file,
    and its nearest existing folder is a writable folder."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {path} is a file: name a folder")
    _writable(flag, path, [out.absolute(), *out.absolute().parents])
    return out


def _writable(flag: str, path: str, candidates) -> None:
    """The first existing path of `candidates` (the output's folders, nearest first) is a writable folder."""
    nearest = next(p for p in candidates if p.exists())
    if not nearest.is_dir() or not os.access(nearest, os.W_OK):
        what = "read-only" if nearest.is_dir() else "a file"
        raise ValueError(f"cannot write {flag} {path}: {nearest} is {what}")


@contextlib.contextmanager
def writing(path, flag: str):
    """A failed write of an output file is the user's path, not the model's error: one line naming the file."""
    try:
        yield
    except OSError as e:
        raise PcsimError(f"cannot write {flag} {path}: {e.strerror or e}") from None


def build_spec(args: argparse.Namespace, dtype: torch.dtype | None):
    """MODEL's spec, module, inputs, target (one-hot for --loss mse on classes, said on stderr) and loss."""
    spec = load_model_file(args.model)
    module, inputs, target = spec.build_model(seed=args.seed)
    if dtype is not None:
        module = module.to(dtype)
        inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
        target = target.to(dtype) if target.is_floating_point() else target
    loss = args.loss or spec.loss
    with in_model_file(spec):
        target, note = one_hot_for_mse(module, inputs, target, loss)
    if note:
        print(f"pcsim: {note}", file=sys.stderr)
    return spec, module, inputs, target, loss
