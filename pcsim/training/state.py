"""A module's buffers across a training step: one forward a step moves them, as in a plain torch loop.

A train-mode forward moves state that is not a parameter: BatchNorm's running statistics, spectral
norm's power-iteration vectors (which then change the weight the next forward uses). A torch loop
runs one such forward per step, on the batch, before the optimiser's step. The training loop runs
the module more often than that (autograd's oracle for `bp` and `--check-every`, the train metrics,
the test evaluation) and PC rules run the traced graph instead, so every one of those calls leaves
the buffers as it found them, and `advance` makes the one forward that moves them.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from pcsim.check import DropoutAsIdentity


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
