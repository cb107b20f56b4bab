"""What several commands share: the `--fused` and `--models-dir` flags, dtypes, and building a model file's model."""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch

from pcsim import paths
from pcsim.errors import PcsimError
from pcsim.zoo import one_hot_for_mse


def add_fused_flag(parser: argparse.ArgumentParser) -> None:
    """`--fused`, as `pcsim.trace(..., fused=True)`, for every command that traces a model."""
    parser.add_argument("--fused", action="store_true",
                        help="trace nn.RNN/LSTM/GRU as one vertex per layer call, on torch's fused kernel")


def add_models_dir_flag(parser: argparse.ArgumentParser) -> None:
    """`--models-dir DIR`, the zoo folder, for every command that takes a MODEL or runs zoo models."""
    parser.add_argument("--models-dir", metavar="DIR", default=None,
                        help="the zoo folder that MODEL names are looked up in (default: $PCSIM_MODELS, else ./models)")


def with_models_dir(handler, args: argparse.Namespace) -> int:
    """Run a command's handler with its `--models-dir` (when it has one and it is given) as the zoo folder."""
    with paths.using(models=getattr(args, "models_dir", None)):
        return handler(args)


@contextlib.contextmanager
def in_model_file(spec):
    """pcsim's errors on a model say which model file it came from."""
    try:
        yield
    except (PcsimError, ValueError) as e:
        raise PcsimError(f"{spec.path}: {e}") from None


def build_spec(spec, args: argparse.Namespace, dtype: torch.dtype | None):
    """The model file's module, inputs, target (one-hot for --loss mse on classes, said on stderr) and loss."""
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
    return module, inputs, target, loss
