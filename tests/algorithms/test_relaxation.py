"""IL's fast inference loop (pcsim.il, il_path) is IL: the literal sweep/advance loop is the oracle.

The literal loop below linearises every vertex at every step and applies `advance` as written;
the fast loop skips what is exactly unchanged and uses explicit VJPs. They must agree to float64
rounding. Where the literal loop itself loses digits (a linear vertex's error as the difference
of two large predictions, in LSTMs), float32 runs are measured against the float64 literal loop.
"""

import pytest
import torch

import pcsim
from pcsim.algorithms.il import il, il_path
from pcsim.algorithms.problem import Problem
from pcsim.algorithms.relaxation import Relaxation
from pcsim.numerics import relative_difference, rounding_floor, tolerance
from tests.algorithms.sweep_reference import SweepState, accumulate, advance_values, linearise, sweep
from tests.equivalence.archs import ARCHS

TOL = tolerance(torch.float64)


def literal_il(graph, inputs, target, loss="mse", *, gamma=0.1, steps=100, fixed_prediction=False,
               output_precision=1.0, params=None):
    """IL as first written: sweep every vertex, advance, Hebbian terms of the final sweep."""
    problem = Problem.build(graph, inputs, target, loss, params)
    x = SweepState.feedforward(problem)
    fixed = {n: linearise(problem, n, x.base) for n in graph.latent} if fixed_prediction else None
    path = []
    for _ in range(steps):
        s = sweep(problem, x, precision=output_precision, fixed=fixed, plastic=())
        path.append(s.eps)
        x = advance_values(problem, x, s, gamma)
    s = sweep(problem, x, precision=output_precision, fixed=fixed)
    path.append(s.eps)
    grads = problem.complete({})
    for name in graph.latent:
        accumulate(grads, s.hebbian[name], scale=output_precision)
    return grads, path


def _worst(got: dict, ref: dict, dtype=torch.float64) -> float:
    floor = rounding_floor(max(float(r.abs().max()) for r in ref.values()), dtype)
    return max(relative_difference(got[n].double(), ref[n].double(), floor) for n in ref)


VARIANTS = {
    "plain": dict(gamma=0.1, steps=8),
    "fixed_prediction": dict(gamma=0.3, steps=5, fixed_prediction=True),
    "output_precision": dict(gamma=0.2, steps=6, output_precision=0.1),
    "no_steps": dict(steps=0),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("arch", ["mlp_tanh_bias", "mlp_sigmoid_nobias", "mlp_relu_bias", "residual_block",
                                  "cnn_pools", "rnn_manual", "rnn_shared", "gru"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_fast_il_equals_the_literal_loop(arch, variant, loss, captured):
    _, inputs, target, graph = captured(arch, torch.float64, loss)
    ref, _ = literal_il(graph, inputs, target, loss, **VARIANTS[variant])
    got = il(graph, inputs, target, loss, **VARIANTS[variant])
    assert list(got) == list(ref)
    assert _worst(got, ref) <= TOL


@pytest.mark.parametrize("width", [3, 40])  # a classifier's narrow logits, a wide regression output
def test_fast_il_equals_the_literal_loop_for_narrow_and_wide_outputs(width):
    """The output's prediction is moved by a product whose layout depends on its width (`_shifted`)."""
    torch.manual_seed(7)
    module = torch.nn.Sequential(torch.nn.Linear(5, 9), torch.nn.Tanh(), torch.nn.Linear(9, width)).double()
    x, target = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, width, dtype=torch.float64)
    graph = pcsim.trace(module, x)
    ref, _ = literal_il(graph, (x,), target, gamma=0.3, steps=5)
    assert _worst(il(graph, (x,), target, gamma=0.3, steps=5), ref) <= TOL


@pytest.mark.parametrize("arch", ["mlp_tanh_bias", "residual_block", "rnn_manual"])
@pytest.mark.parametrize("fixed_prediction", [False, True])
def test_il_path_equals_the_literal_loop_at_every_step(arch, fixed_prediction):
    module, inputs, target = ARCHS[arch](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    _, ref = literal_il(graph, inputs, target, gamma=0.2, steps=6, fixed_prediction=fixed_prediction)
    got = il_path(graph, inputs, target, gamma=0.2, steps=6, fixed_prediction=fixed_prediction)
    assert len(got) == len(ref) == 7
    for g, r in zip(got, ref, strict=True):
        assert set(g) == set(r)
        for name in r:
            assert relative_difference(g[name], r[name], rounding_floor(1.0, torch.float64)) <= TOL, name


@pytest.mark.parametrize("arch", ["lstm", "lstm_manual"])
def test_fast_il_loses_no_more_digits_than_the_literal_loop(arch):
    """Oracle: the literal loop in float64. In float32 the fast loop is at least as close to it."""
    module, inputs, target = ARCHS[arch](torch.float64, "ce")
    graph = pcsim.trace(module, *inputs)
    oracle, _ = literal_il(graph, inputs, target, "ce", gamma=0.1, steps=7)
    inputs32 = tuple(i.float() if i.is_floating_point() else i for i in inputs)
    torch.set_default_dtype(torch.float32)
    graph32 = pcsim.trace(module.float(), *inputs32)
    literal32, _ = literal_il(graph32, inputs32, target, "ce", gamma=0.1, steps=7)
    fast32 = il(graph32, inputs32, target, "ce", gamma=0.1, steps=7)
    assert _worst(fast32, oracle, torch.float32) <= _worst(literal32, oracle, torch.float32)
    assert _worst(fast32, oracle, torch.float32) <= 1e-2


def test_the_first_layer_is_never_recomputed_and_clamped_inputs_get_no_feedback():
    """From the feed-forward start the wave reaches a vertex's parents only after its depth."""
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    problem = Problem.build(pcsim.trace(module, *inputs), inputs, target)
    relax = Relaxation(problem, gamma=0.1)
    first, *_, out = problem.graph.latent
    eps = relax.errors()
    assert set(eps) == {out}, "only the output has an error at the feed-forward state"
    assert set(relax.feedback(eps)) == set(problem.graph[out].parents)
    relax.run(10)
    assert first in relax.at_feedforward, "its only parent is the clamped input"
    assert relax.ops[first].vjp(relax.errors()[first]) == [None]


def test_steps_and_precision_are_validated_by_il_path_too():
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    with pytest.raises(ValueError, match="steps"):
        il_path(graph, inputs, target, steps=-1)
    with pytest.raises(ValueError, match="output_precision"):
        il_path(graph, inputs, target, output_precision=-1.0)


class _CausalAttention(torch.nn.Module):
    """One causal self-attention head whose mask fills with `fill` (HF's SDPA path fills with -inf)."""

    def __init__(self, fill: float):
        super().__init__()
        torch.manual_seed(0)
        self.fill = fill
        self.qkv, self.out = torch.nn.Linear(4, 12), torch.nn.Linear(4, 3)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
        scores = (q @ k.transpose(1, 2)).masked_fill(mask, self.fill)
        return self.out((scores.softmax(-1) @ v).mean(1))


def test_a_minus_infinity_mask_is_the_mask_it_stands_for():
    """A -inf in a feed-forward value (a masked score) makes base - mu inf - inf; where the prediction has not
    left it the error is exactly zero, as with the most negative finite fill, where the literal loop is exact."""
    x, y = torch.randn(2, 5, 4), torch.randn(2, 3)
    graph = pcsim.trace(_CausalAttention(-float("inf")).double(), x)
    assert any(torch.isinf(v).any() for v in Problem.build(graph, (x,), y).feedforward().values())
    finite = _CausalAttention(torch.finfo(torch.float64).min).double()
    want, _ = literal_il(pcsim.trace(finite, x), (x,), y, gamma=0.2, steps=30)
    got = il(graph, (x,), y, gamma=0.2, steps=30)
    for n in want:
        assert torch.isfinite(got[n]).all(), n
        assert relative_difference(got[n], want[n]) <= TOL, n


class _RMSNorm(torch.nn.Module):
    """h / sqrt(mean(h^2) + eps): the variance is a value population, which a large step can push below zero."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(h * ((h * h).mean(-1, keepdim=True) + 1e-3).rsqrt())


def test_a_diverging_run_is_refused_naming_the_first_vertex_to_leave_finite_values():
    """The literal loop is the oracle for where and when; rsqrt is the one op here that makes a NaN of finite
    values, so iPC, which moves the weights too, must name it as well."""
    graph = pcsim.trace(_RMSNorm().double(), x := 0.1 * torch.randn(2, 3))
    y = 10 * torch.randn(2, 2)
    _, path = literal_il(graph, (x,), y, gamma=0.1, steps=20)
    step, first = next((t, [n for n, e in eps.items() if not torch.isfinite(e).all()]) for t, eps in enumerate(path)
                       if not all(torch.isfinite(e).all() for e in eps.values()))
    assert first == ["rsqrt"]
    with pytest.raises(pcsim.DivergenceError, match=f"IL diverged at gamma = 0.1: at step {step} the error of "
                                                    "vertex 'rsqrt' .*became NaN"):
        il(graph, (x,), y, gamma=0.1, steps=20)
    with pytest.raises(pcsim.DivergenceError, match="iPC diverged at gamma = 0.1: at step .* vertex 'rsqrt'"):
        pcsim.ipc(graph, (x,), y, gamma=0.1, steps=20, lr=0.01)
    assert all(torch.isfinite(g).all() for g in il(graph, (x,), y, gamma=1e-4, steps=20).values())


@pytest.mark.parametrize("gamma", [0.0, -0.1, float("nan")])
def test_il_refuses_an_inference_rate_that_is_not_positive(gamma):
    # before: gamma -0.1 ran IL uphill on the energy and returned its "gradients" without a word
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    x, y = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="gamma .* must be > 0"):
        pcsim.il(pcsim.trace(module, x), (x,), y, "mse", gamma=gamma, steps=3)
