"""`pcsim.il(compile=True)`'s steady step as traced (make_fx), run eagerly instead of through inductor: fast, so that
the pure functions the trace records (`Op.traced`, `Op.traced_vjp`) are checked without the slow compiler.

Before: test_il_compiled.py, every case of which is marked slow, was the only test that ran them; tanh's traced VJP
off by a factor 1.001 passed the fast suite. Oracle: the literal sweep/advance loop of test_relaxation."""

import warnings

import pytest
import torch

import pcsim
from tests.algorithms.test_relaxation import TOL, _worst, literal_il
from tests.equivalence.archs import ARCHS

CASES = {  # arch: (loss, IL options): tanh, sigmoid (with an output precision), relu at fixed prediction
    "mlp_tanh_bias": ("ce", dict(gamma=0.1, steps=12)),
    "mlp_sigmoid_nobias": ("mse", dict(gamma=0.2, steps=10, output_precision=0.1)),
    "mlp_relu_bias": ("ce", dict(gamma=0.3, steps=8, fixed_prediction=True)),
}


@pytest.mark.parametrize("arch", list(CASES))
def test_the_traced_steady_step_run_eagerly_equals_the_literal_loop(arch, monkeypatch):
    ran = []

    def eager(gm, example, options=None):  # inductor's stand-in: the traced graph itself
        def run(*args):
            ran.append(1)
            return gm(*args)
        return run

    monkeypatch.setattr("torch._inductor.compile", eager)
    loss, kw = CASES[arch]
    module, inputs, target = ARCHS[arch](torch.float64, loss)
    graph = pcsim.trace(module, *inputs)
    ref, _ = literal_il(graph, inputs, target, loss, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to the eager loop must not pass for the trace
        got = pcsim.il(graph, inputs, target, loss, compile=True, **kw)
    assert len(ran) > 1, "the traced steady step ran"
    assert list(got) == list(ref)
    assert _worst(got, ref) <= TOL
