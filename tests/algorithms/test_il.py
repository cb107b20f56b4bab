"""IL approaches BP the ways the literature says it does (oracle: autograd via pcsim.check)."""

import pytest
import torch

import pcsim
from pcsim.numerics import tolerance
from tests.equivalence.archs import ARCHS


def _rel(arch, loss="mse", **kw):
    module, inputs, target = ARCHS[arch](torch.float64, loss)
    return pcsim.check(module, inputs, target, rule="il", loss=loss, **kw).max_rel_diff


@pytest.mark.parametrize("arch", ["mlp_tanh_bias", "residual_block"])
def test_fixed_prediction_converges_to_bp_as_steps_grow(arch):
    errors = [_rel(arch, gamma=0.1, steps=t, fixed_prediction=True) for t in (10, 100, 1000)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] <= 1e-10, errors


@pytest.mark.parametrize("arch", ["mlp_sigmoid_bias", "residual_block", "rnn_manual", "cnn_pools"])
def test_fixed_prediction_with_unit_rate_is_exact_after_depth_steps(arch):
    """gamma = 1 and T = the longest path: each error is BP's delta (Rosenbaum's 'exact' setting)."""
    module, inputs, target = ARCHS[arch](torch.float64, "mse")
    depth = pcsim.trace(module, *inputs).depth
    exact = _rel(arch, gamma=1.0, steps=depth, fixed_prediction=True)
    assert exact <= tolerance(torch.float64)
    short = _rel(arch, gamma=1.0, steps=depth - 1, fixed_prediction=True)
    assert short > 1e-6, "one step short of the depth, the deepest errors have not arrived"


def test_strict_il_deviation_falls_with_output_precision():
    """Whittington & Bogacz: weak output feedback (learning rate compensated) approaches BP."""
    errors = [_rel("mlp_tanh_bias", gamma=0.1, steps=400, output_precision=p) for p in (1.0, 0.1, 0.01, 0.001)]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 0.05 * errors[0], errors


def test_zero_steps_updates_only_the_output_layer_exactly():
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    report = pcsim.check(module, inputs, target, rule="il", steps=0)
    graph = pcsim.trace(module, *inputs)
    (out,) = graph.outputs
    for name, diff in report.per_param.items():
        if name in graph[out].params:
            assert diff.rel <= tolerance(torch.float64), name
        else:
            assert torch.count_nonzero(report.grads[name]) == 0, name


def test_il_validates_its_options():
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    with pytest.raises(ValueError, match="steps"):
        pcsim.il(graph, inputs, target, steps=-1)
    with pytest.raises(ValueError, match="output_precision"):
        pcsim.il(graph, inputs, target, output_precision=0.0)
    # before: a DivergenceError telling the user to lower gamma, and a TypeError from inside range()
    with pytest.raises(ValueError, match="output_precision must be > 0 and finite, got inf"):
        pcsim.il(graph, inputs, target, output_precision=float("inf"))
    with pytest.raises(ValueError, match="steps must be an integer, got 2.5"):
        pcsim.il(graph, inputs, target, steps=2.5)
    # a string is truthy: fixed_prediction="no" ran the fixed-prediction variant
    with pytest.raises(ValueError, match="fixed_prediction must be True or False, got 'no'"):
        pcsim.il(graph, inputs, target, fixed_prediction="no")


def test_energy_decreases_during_inference():
    """IL inference is gradient descent on F: with a small step F never increases."""
    from pcsim.algorithms.problem import Problem
    from tests.algorithms.sweep_reference import SweepState, advance_values, sweep

    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    problem = Problem.build(pcsim.trace(module, *inputs), inputs, target)
    state = SweepState.feedforward(problem)
    energies = []
    for _ in range(30):
        s = sweep(problem, state)
        energies.append(s.energy(problem))
        state = advance_values(problem, state, s, gamma=0.05)
    assert all(b <= a + 1e-12 for a, b in zip(energies, energies[1:], strict=False)), energies
    assert energies[-1] < energies[0]
