"""`pcsim.il(compile=True)`: the steady steps as one compiled function are still IL.

Oracle: the literal sweep/advance loop of test_relaxation (every vertex linearised at every
step). Each case also asserts that the compiled step really ran (an entry on the graph, no
fallback warning), so that a silent fallback to the eager loop cannot pass for it.
"""

import warnings

import pytest
import torch

import pcsim
from pcsim.algorithms import compiled, il_compiled
from tests.algorithms.test_relaxation import TOL, _worst, literal_il
from tests.equivalence.archs import ARCHS

pytestmark = pytest.mark.slow  # each case compiles a step: seconds apiece

CASES = {  # arch: (loss, IL options); enough steps for the error wave to settle in each
    "mlp_tanh_bias": ("ce", dict(gamma=0.1, steps=12)),
    "mlp_sigmoid_nobias": ("mse", dict(gamma=0.2, steps=10, output_precision=0.1)),
    "mlp_relu_bias": ("ce", dict(gamma=0.3, steps=8, fixed_prediction=True)),
    "residual_block": ("mse", dict(gamma=0.1, steps=12)),
    "cnn_pools": ("ce", dict(gamma=0.1, steps=14)),  # convolutions and pools: torch.func.vjp in the step
    "rnn_shared": ("mse", dict(gamma=0.1, steps=40)),  # one weight at every time step (the GRU compiled 4x longer)
    "attention": ("ce", dict(gamma=0.1, steps=40)),  # softmax, layer norm, bmm: torch.func.vjp in the step
    "multi_ops": ("mse", dict(gamma=0.1, steps=40)),  # cat, split, exp, sqrt, division, ...
}


def _compiled(graph) -> list:
    return [v for k, v in graph._derived.items() if isinstance(k, tuple) and k[0] == "il-steady"]


def _build(arch, loss):
    module, inputs, target = ARCHS[arch](torch.float64, loss)
    return pcsim.trace(module, *inputs), inputs, target


def _il_compiled(graph, inputs, target, loss, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback must not pass for the compiled step
        return pcsim.il(graph, inputs, target, loss, compile=True, **kw)


@pytest.mark.parametrize("arch", list(CASES))
def test_compiled_il_equals_the_literal_loop(arch):
    loss, kw = CASES[arch]
    graph, inputs, target = _build(arch, loss)
    ref, _ = literal_il(graph, inputs, target, loss, **kw)
    got = _il_compiled(graph, inputs, target, loss, **kw)
    compiled = _compiled(graph)
    assert len(compiled) == 1 and compiled[0] is not None, "the steady steps ran compiled"
    assert list(got) == list(ref)
    assert _worst(got, ref) <= TOL


def test_a_mutated_compiled_step_fails_the_same_check(monkeypatch):
    """gamma 0.99999 in the compiled steps alone (the eager wave keeps gamma) must be caught."""
    loss, kw = CASES["mlp_tanh_bias"]
    graph, inputs, target = _build("mlp_tanh_bias", loss)
    ref, _ = literal_il(graph, inputs, target, loss, **kw)
    advance = il_compiled.SteadyStep._advance

    def mutated(self, d, e, fb):
        gamma = self.relax.gamma
        self.relax.gamma = gamma * 0.99999
        try:
            return advance(self, d, e, fb)
        finally:
            self.relax.gamma = gamma

    monkeypatch.setattr(il_compiled.SteadyStep, "_advance", mutated)
    got = _il_compiled(graph, inputs, target, loss, **kw)
    assert _worst(got, ref) > 100 * TOL


def test_one_compilation_serves_new_data_of_the_same_shape(monkeypatch):
    """Every value the step reads is an argument: new inputs and targets give their own IL update."""
    traces = []
    make_fx = compiled.make_fx
    monkeypatch.setattr(compiled, "make_fx", lambda *a, **k: traces.append(1) or make_fx(*a, **k))
    loss, kw = CASES["residual_block"]
    graph, inputs, target = _build("residual_block", loss)
    _il_compiled(graph, inputs, target, loss, **kw)
    gen = torch.Generator().manual_seed(3)
    inputs2 = tuple(torch.randn(x.shape, generator=gen, dtype=x.dtype) for x in inputs)
    target2 = torch.randn(target.shape, generator=gen, dtype=target.dtype)
    params2 = {n: p.detach() + 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
               for n, p in graph.params.items()}
    got = _il_compiled(graph, inputs2, target2, loss, params=params2, **kw)
    assert len(traces) == 1, "the second call reused the compiled step"
    ref, _ = literal_il(graph, inputs2, target2, loss, params=params2, **kw)
    assert _worst(got, ref) <= TOL


def test_a_failed_compilation_warns_and_runs_the_eager_loop(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler on this machine")

    monkeypatch.setattr(torch._inductor, "compile", broken)
    loss, kw = CASES["mlp_tanh_bias"]
    graph, inputs, target = _build("mlp_tanh_bias", loss)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler on this machine"):
        got = pcsim.il(graph, inputs, target, loss, compile=True, **kw)
    eager = pcsim.il(graph, inputs, target, loss, **kw)
    assert all(torch.equal(got[n], eager[n]) for n in eager)
    assert _compiled(graph) == [None], "the failure is remembered: no second attempt per call"


def test_steps_before_the_wave_settles_compile_nothing():
    loss, _ = CASES["mlp_tanh_bias"]
    graph, inputs, target = _build("mlp_tanh_bias", loss)
    got = _il_compiled(graph, inputs, target, loss, gamma=0.1, steps=3, progress=True)
    eager = pcsim.il(graph, inputs, target, loss, gamma=0.1, steps=3)
    assert _compiled(graph) == []
    assert all(torch.equal(got[n], eager[n]) for n in eager)


def test_float32_compiled_il_is_as_close_to_the_float64_oracle_as_the_eager_loop():
    """The benchmark's dtype: inductor's fused float32 loops round no worse than the eager kernels."""
    graph64, inputs, target = _build("mlp_tanh_bias", "ce")
    oracle, _ = literal_il(graph64, inputs, target, "ce", gamma=0.1, steps=12)
    torch.set_default_dtype(torch.float32)
    module, inputs32, _ = ARCHS["mlp_tanh_bias"](torch.float32, "ce")
    graph32 = pcsim.trace(module, *inputs32)
    eager = pcsim.il(graph32, inputs32, target, "ce", gamma=0.1, steps=12)
    got = _il_compiled(graph32, inputs32, target, "ce", gamma=0.1, steps=12)
    assert _compiled(graph32) and _compiled(graph32)[0] is not None
    assert _worst(got, oracle, torch.float32) <= max(2 * _worst(eager, oracle, torch.float32), 1e-6)
