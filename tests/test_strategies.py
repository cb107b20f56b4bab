"""Sanity checks for the random-DAG generator in tests/strategies.py (not for pcsim itself)."""

import random
from collections import Counter

import pytest
import torch
from hypothesis import given, settings

from tests.strategies import (
    DagCase,
    autograd_reference,
    build_random_dag,
    live_fraction,
    plan_features,
    random_dag_modules,
    total_loss,
)


def _as_tuple(outputs):
    return outputs if isinstance(outputs, tuple) else (outputs,)


@settings(max_examples=50, deadline=None)
@given(case=random_dag_modules())
def test_forward_trace_and_reference_grads(case: DagCase):
    outputs = _as_tuple(case.module(*case.inputs))
    assert 1 <= len(outputs) <= 3
    assert len(outputs) == len(case.targets) == len(case.losses)
    assert len(case.inputs) in (1, 2)
    for out, y, loss in zip(outputs, case.targets, case.losses, strict=True):
        assert out.dtype == torch.float64 and torch.isfinite(out).all()
        if loss == "ce":
            assert out.shape[1] >= 2 and y.dtype == torch.int64 and y.shape == out.shape[:1]
            assert 0 <= y.min() and y.max() < out.shape[1]
        else:
            assert loss == "mse" and y.shape == out.shape and y.dtype == out.dtype

    # fx must see the whole plan (Python loops unrolled) and reproduce it bit for bit
    traced = torch.fx.symbolic_trace(case.module)
    traced_outputs = _as_tuple(traced(*case.inputs))
    assert len(traced_outputs) == len(outputs)
    for a, b in zip(outputs, traced_outputs, strict=True):
        assert torch.equal(a, b), case.description
    assert dict(traced.named_parameters()).keys() <= dict(case.module.named_parameters()).keys()

    grads = autograd_reference(case)
    params = dict(case.module.named_parameters())
    assert grads.keys() == params.keys()
    for name, grad in grads.items():
        assert grad.shape == params[name].shape and torch.isfinite(grad).all(), name
    # the reference must not leave .grad behind (pcsim tests may compare against .grad)
    assert all(p.grad is None for p in params.values())
    assert case.description.count("|") == 3 and "outputs=" in case.description


@settings(max_examples=10, deadline=None)
@given(case=random_dag_modules(dtype=torch.float32))
def test_dtype_parameter(case: DagCase):
    assert all(p.dtype == torch.float32 for p in case.module.parameters())
    assert all(x.dtype == torch.float32 for x in case.inputs)
    assert all(o.dtype == torch.float32 for o in _as_tuple(case.module(*case.inputs)))


def test_builder_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    first, second = build_random_dag(random.Random(7)), build_random_dag(random.Random(7))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first.description == second.description
    for a, b in zip(first.module.parameters(), second.module.parameters(), strict=True):
        assert torch.equal(a, b)


def test_reference_matches_finite_differences():
    case = build_random_dag(random.Random(3))
    grads = autograd_reference(case)
    name, param = next(iter(case.module.named_parameters()))
    eps, index = 1e-6, (0,) * param.dim()
    with torch.no_grad():
        param[index] += eps
        up = total_loss(case, case.module(*case.inputs))
        param[index] -= 2 * eps
        down = total_loss(case, case.module(*case.inputs))
        param[index] += eps
    assert (up - down) / (2 * eps) == pytest.approx(grads[name][index].item(), rel=1e-5, abs=1e-7)


def test_feature_coverage_over_seed_sweep():
    counts, n_seeds = Counter(), 200
    live = []
    for seed in range(n_seeds):
        case = build_random_dag(random.Random(seed))
        counts.update(plan_features(case))
        live.append(live_fraction(case))
        # a case whose gradient is identically zero would make a Z-IL comparison vacuous
        assert any(g.abs().max() > 0 for g in autograd_reference(case).values()), case.description
    for feature in ("skip_edge", "mul", "shared_params", "multi_output", "cat", "add", "ce_loss",
                    "output_feeds_later", "two_inputs", "no_bias_linear"):
        assert counts[feature] >= 0.25 * n_seeds, (feature, counts)
    assert counts["act_relu"] >= 0.1 * n_seeds, counts
    assert sum(live) / n_seeds > 0.95 and min(live) >= 0.5
    assert counts["shared"] == counts["shared_params"]  # a shared Linear is never used only once
