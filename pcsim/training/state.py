"""A module's buffers across a training step: one forward a step moves them, as in a plain torch loop.

A train-mode forward moves state that is not a parameter: BatchNorm's running statistics, spectral
norm's power-iteration vectors (which then change the weight the next forward uses). A torch loop
runs one such forward per step, on the batch, before the optimiser's step. The training loop runs
the module more often than that (autograd's oracle for `bp` and `--check-every`, the train metrics,
the test evaluation) and PC rules run the traced graph instead, so every one of those calls leaves
the buffers as it found them, and `advance` makes the one forward that moves them.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch

from pcsim.check import DropoutAsIdentity
from pcsim.errors import first_line
from pcsim.graph.provenance import exception_user_line, user_stacklevel


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in module.named_buffers()}


def restore(module: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, value in saved.items():
            buffer = module.get_buffer(name)
            if buffer.shape == value.shape:
                buffer.copy_(value)
            else:  # a forward that replaced the buffer with one of another shape: put the old one back
                owner, _, attr = name.rpartition(".")
                setattr(module.get_submodule(owner), attr, value)


@contextmanager
def buffers_kept(module: torch.nn.Module):
    """Whatever runs inside leaves the module's buffers as they were."""
    saved = snapshot(module)
    try:
        yield
    finally:
        restore(module, saved)


def advance(module: torch.nn.Module, inputs: tuple) -> None:
    """The step's one train-mode forward, at the parameters its gradients were taken at (dropout as the
    identity, as every rule has it); nothing to do for a module without buffers."""
    if next(module.buffers(), None) is None:
        return
    with torch.no_grad(), DropoutAsIdentity():
        module(*inputs)


@contextmanager
def evaluating(module: torch.nn.Module):
    """Eval mode (running statistics, no dropout) inside, the module's own mode restored after."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.train(mode)


def check_output_fits(module: torch.nn.Module, data, loss: str, label: str) -> None:
    """The module gives one score per class, shape (batch, classes), as both losses read it against the labels:
    checked on two samples before training, not at the first step inside torch (an autoencoder on digits).
    Buffers and the RNG are left as they were (dropout as the identity)."""
    x = data.x_train[:2]
    try:
        with torch.no_grad(), buffers_kept(module), DropoutAsIdentity():
            out = module(x)
    except Exception as e:  # noqa: BLE001 - the model's own error on the data: said with the data's shape
        raise ValueError(f"{label} cannot run on {data.name}'s samples of shape {data.input_shape}{_failure(e)}"
                         ) from e
    want = (len(x), data.n_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want or not out.is_floating_point():
        got = (f"shape {tuple(out.shape)} ({out.dtype})".replace("torch.", "") if isinstance(out, torch.Tensor)
               else f"a {type(out).__name__}")
        raise ValueError(f"{label} gives {got} for {len(x)} samples of {data.name}; training with loss '{loss}' "
                         f"needs one score per class, a floating tensor of shape {want} ({data.n_classes} classes)")


def check_batch_sizes(module: torch.nn.Module, data, batch_size: int, label: str, world: int = 1,
                      rank: int = 0) -> int:
    """The module runs in train mode on every batch size an epoch gives this process: the full batch and the
    last, partial one (n % batch_size, kept), or their shards under torchrun; checked before the first epoch, not
    at its end (a BatchNorm on a last batch of one sample). Buffers and the RNG are left as they were (dropout as
    the identity). Returns how many dropout calls would have dropped."""
    n, dropped = len(data.x_train), 0
    sizes = {min(batch_size, n): "a full batch"}
    if n > batch_size and n % batch_size:
        sizes.setdefault(n % batch_size, f"the last batch of each epoch ({n} training samples in batches of "
                                         f"{batch_size} leave {n % batch_size})")
    for size, which in sizes.items():
        shard = len(range(rank, size, world))  # this process's every world-th sample
        if not shard:
            continue
        try:
            with torch.no_grad(), buffers_kept(module), torch.random.fork_rng(devices=[]), DropoutAsIdentity() as mode:
                module(data.x_train[:shard])
            dropped = max(dropped, mode.dropped)
        except Exception as e:  # noqa: BLE001 - the model's own error on the batch: said with the batch's size
            part = f", process {rank}'s share of {size}" if world > 1 else ""
            raise ValueError(f"{label} cannot train on a batch of {shard} sample{'s' * (shard != 1)} of "
                             f"{data.name}, {which}{part}{_failure(e)}; choose a batch size that gives no such batch"
                             ) from e
    return dropped


def _failure(e: Exception) -> str:
    """' (at the user's line): Type: message' of the model's own error."""
    line = exception_user_line(e)
    return f"{f' (at {line.short})' if line else ''}: {type(e).__name__}: {first_line(e)}"


def warn_if_eval_mode(module: torch.nn.Module, data, label: str) -> None:
    """A module handed over wholly in eval mode trains in eval mode, as given. Where a train-mode forward would
    move its buffers (BatchNorm, which also normalises by the batch's statistics there, not the running ones) a
    torch loop's `model.train()` trains another function, so say so; a forward that differs by dropout alone (a
    model put in eval mode to turn dropout off) is left be. Buffers and the RNG are left as they were."""
    if any(m.training for m in module.modules()) or next(module.buffers(), None) is None:
        return
    before = snapshot(module)
    with torch.no_grad(), buffers_kept(module), torch.random.fork_rng(devices=[]), DropoutAsIdentity():
        try:
            module.train()
            module(data.x_train[:2])
            moved = [n for n, b in module.named_buffers() if n in before and not torch.equal(b, before[n])]
        except Exception:  # noqa: BLE001 - a module that cannot run in train mode is trained as given
            moved = []
        finally:
            module.eval()
    if moved:
        warnings.warn(f"{label} is in eval mode, and a train-mode forward would move its buffers "
                      f"({', '.join(moved[:3])}{', ...' if len(moved) > 3 else ''}: BatchNorm's running statistics, "
                      "say): it trains as given, in eval mode, where a torch loop's model.train() trains it in train "
                      "mode; call module.train() first unless eval mode is meant", UserWarning,
                      stacklevel=user_stacklevel())
