"""Sanity checks of the architecture library itself (shapes, dtypes, gradients, fx traceability)."""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from tests.equivalence.archs import ARCHS, BATCH, N_OUT, RECURRENT_CELL_ARCHS

CELLS = (nn.RNNCell, nn.LSTMCell, nn.GRUCell)


def _loss(out: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "mse":
        return 0.5 * ((out - target) ** 2).sum()
    return F.cross_entropy(out, target, reduction="sum")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("name", sorted(ARCHS))
def test_builder_shapes_and_grads(name: str, loss: str, dtype: torch.dtype) -> None:
    module, inputs, target = ARCHS[name](dtype, loss)
    assert not module.training
    assert all(p.dtype == dtype for p in module.parameters())
    assert all(x.dtype in (dtype, torch.int64) for x in inputs)
    if loss == "mse":
        assert target.shape == (BATCH, N_OUT) and target.dtype == dtype
    else:
        assert target.shape == (BATCH,) and target.dtype == torch.int64
        assert int(target.min()) >= 0 and int(target.max()) < N_OUT

    out = module(*inputs)
    assert out.shape == (BATCH, N_OUT) and out.dtype == dtype
    _loss(out, target, loss).backward()
    for pname, p in module.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


def test_builders_are_deterministic() -> None:
    for name, build in ARCHS.items():
        (m1, x1, y1), (m2, x2, y2) = build(torch.float64, "mse"), build(torch.float64, "mse")
        assert all(torch.equal(a, b) for a, b in zip(x1, x2, strict=True)), name
        assert torch.equal(y1, y2), name
        for (_, p1), (_, p2) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
            assert torch.equal(p1, p2), name


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_symbolic_trace(name: str) -> None:
    module, inputs, _ = ARCHS[name](torch.float64, "mse")
    traced = torch.fx.symbolic_trace(module)
    torch.testing.assert_close(traced(*inputs), module(*inputs), rtol=0, atol=0)
    # plain fx keeps the recurrent cells as leaf call_module nodes
    modules = dict(traced.named_modules())
    cell_calls = [
        n for n in traced.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], CELLS)
    ]
    assert bool(cell_calls) == (name in RECURRENT_CELL_ARCHS)
