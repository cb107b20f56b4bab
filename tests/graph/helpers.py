"""Oracles shared by the graph tests: autograd on the module itself, and a gradient comparison.

Everything runs in float64; tolerances come from `pcsim.tolerance`. Modules and data are built
under a forked RNG with a fixed seed, so tests neither depend on nor disturb the global RNG.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

import pcsim

DT = torch.float64
TOL = pcsim.tolerance(DT)


@contextlib.contextmanager
def seeded(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def as_tuple(x) -> tuple:
    return x if isinstance(x, tuple) else (x,)


class Net(nn.Module):
    """A module whose forward is `body(self, x)`: fx traces straight through the body."""

    def __init__(self, body: Callable, **children):
        super().__init__()
        self.body = body
        for name, child in children.items():
            setattr(self, name, child)

    def forward(self, x):
        return self.body(self, x)


class Net2(Net):
    def forward(self, x, z):
        return self.body(self, x, z)


def mse(outputs, targets) -> torch.Tensor:
    return sum(0.5 * ((o - y) ** 2).sum() for o, y in zip(as_tuple(outputs), targets, strict=True))


def random_targets(module: nn.Module, inputs: tuple, seed: int = 1) -> tuple[torch.Tensor, ...]:
    """One float64 target per output, shaped like what the module returns."""
    with torch.no_grad():
        outs = as_tuple(module(*inputs))
    with seeded(seed):
        return tuple(torch.randn(o.shape, dtype=DT) for o in outs)


def module_grads(module: nn.Module, inputs: tuple, targets: tuple) -> dict[str, torch.Tensor]:
    """The oracle: autograd of 0.5 * sum((out - y)^2) on the module itself."""
    params = dict(module.named_parameters())
    with torch.enable_grad():
        loss = mse(module(*inputs), targets)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g
            for (n, p), g in zip(params.items(), grads, strict=True)}


def assert_grads_match(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(ref), f"parameter names differ: {sorted(got)} vs {sorted(ref)}"
    scale = max((r.abs().max().item() for r in ref.values() if r.numel()), default=0.0)
    assert scale > 0, "the reference gradient is identically zero: the test would prove nothing"
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=TOL, atol=TOL * scale,
                                   msg=lambda m, name=name: f"gradient of '{name}': {m}")


def trace_and_compare(module: nn.Module, inputs: tuple, seed: int = 1, fused=False) -> pcsim.Graph:
    """Trace, then check that pcsim.bp on the graph gives the module's own autograd gradients."""
    graph = pcsim.trace(module, *inputs, fused=fused)
    targets = random_targets(module, inputs, seed)
    ref = module_grads(module, inputs, targets)
    got = pcsim.bp(graph, inputs, targets if len(targets) > 1 else targets[0])
    assert_grads_match(got, ref)
    return graph
