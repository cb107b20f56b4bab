"""`VectorField` (IL's step loaded with the state) equals the field written out literally, at random states."""

import pytest
import torch

import pcsim
from pcsim.algorithms.problem import Problem
from pcsim.dynamics.field import VectorField
from pcsim.numerics import relative_difference, tolerance
from tests.dynamics.reference_field import literal_field
from tests.equivalence.archs import ARCHS

# leaky errors and the free output before onset on a spread of ops; the shown target on every architecture
SPREAD = ["mlp_tanh_bias", "cnn_pools", "lstm_manual", "residual_block", "attention", "multi_ops"]
CASES = [(a, False, 1.0) for a in ARCHS] + [(a, leaky, t) for a in SPREAD for leaky, t in ((True, 1.0), (False, 0.0))]


@pytest.mark.parametrize("arch,leaky,t", CASES)
def test_the_field_is_the_literal_equations(arch, leaky, t):
    """t = 1.0: the target shown (t_on = 0.5), every gate open; t = 0: before it, outputs free."""
    module, inputs, target = ARCHS[arch](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    problem = Problem.build(graph, inputs, target, "mse")
    field = VectorField(problem, tau_x=0.7, tau_e=0.3 if leaky else 0.0, t_on=0.5, gate=pcsim.dynamics.Always())
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):  # two states in a row: nothing of the first may leak into the second
        state = {k: 0.1 * torch.randn(field.shapes[k], generator=gen, dtype=torch.float64) for k in field.layout}
        got, ref = field(t, state), literal_field(field, t, state)
        assert set(got) == set(ref)
        for k in ref:
            scale = max(1.0, float(ref[k].abs().max()))
            assert relative_difference(got[k], ref[k], scale=scale) <= 10 * tolerance(torch.float64), k


@pytest.mark.parametrize("tau_e", [0.0, 0.1])
def test_held_populations_follow_the_literal_equations(tau_e):
    """Z-IL's windows hold each population once its window closes: its value stands still and its error, leaky
    or instantaneous, falls silent (sends no feedback), at any state, before and after the holds."""
    module, inputs, target = ARCHS["residual_block"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs).level()
    problem = Problem.build(graph, inputs, target, "mse")
    field = VectorField(problem, tau_x=0.1, tau_e=tau_e,
                        gate=pcsim.dynamics.Windows(pcsim.Schedule.of(graph, tau_e > 0), t_on=0.0, width=0.1))
    holds = sorted(set(field.holds_from.values()))
    late = holds[len(holds) // 2] + 0.05  # the upper levels hold, the lower ones (their parents) still move
    assert field.held(late) and set(field.held(late)) != set(field.latent) - set(graph.outputs)
    gen = torch.Generator().manual_seed(2)
    for t in (0.05, late, late):  # a state before the holds, then two after them
        state = {k: 0.1 * torch.randn(field.shapes[k], generator=gen, dtype=torch.float64) for k in field.layout}
        got, ref = field(t, state), literal_field(field, t, state)
        for k in ref:
            scale = max(1.0, float(ref[k].abs().max()))
            assert relative_difference(got[k], ref[k], scale=scale) <= 10 * tolerance(torch.float64), (t, k)


@pytest.mark.parametrize("solver", [pcsim.RK4(0.1), pcsim.Scipy("RK45"), pcsim.Scipy("Radau"), pcsim.Tsit5(),
                                    pcsim.Dopri5()], ids=lambda s: s.method)
def test_a_gate_that_opens_at_t_end_integrates_nothing(solver):
    """Every stage of a step reads the regime inside the step: a stage at its end, where a gate opens, must not
    integrate plasticity that the gate never let through (the oracle: zero, exactly)."""
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    tr = pcsim.simulate(graph, inputs, target, solver=solver, t_end=1.0, tau_x=0.5, plasticity=pcsim.after(1.0))
    assert tr.updates and all(not u.any() for u in tr.updates.values())


def test_tau_w_defaults_to_the_fastest_value_population():
    """tau_w unset: the smallest tau_x of the populations (simulate's 'tau_x by default' with a tau_x per population).
    Before: no test gave the populations different tau_x with plasticity on; the largest passed as well."""
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    problem = Problem.build(graph, inputs, target, "mse")
    taus = {n: 0.5 + 0.25 * i for i, n in enumerate(graph.latent)}
    default = VectorField(problem, tau_x=taus, gate=pcsim.dynamics.Always())
    explicit = VectorField(problem, tau_x=taus, tau_w=min(taus.values()), gate=pcsim.dynamics.Always())
    gen = torch.Generator().manual_seed(4)
    state = {k: 0.1 * torch.randn(default.shapes[k], generator=gen, dtype=torch.float64) for k in default.layout}
    got, want = default(1.0, state), explicit(1.0, state)
    plastic = [k for k in default.layout if k[0] == "w"]
    assert plastic and all(float(want[k].abs().max()) > 0 for k in plastic)
    for k in plastic:
        assert torch.equal(got[k], want[k]), k
