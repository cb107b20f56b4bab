"""Planted mutations: each broken Z-IL condition must fail the same check, far above rounding.

Each test also runs the unmutated rule on the same problem and asserts it passes, so a failure
is caused by the mutation alone.
"""

import pytest
import torch

import pcsim
from pcsim.numerics import tolerance
from tests.equivalence.archs import ARCHS

TOL = tolerance(torch.float64)
FAR = 1e-6  # a million times the float64 bound


def _problem(arch, loss="mse"):
    module, inputs, target = ARCHS[arch](torch.float64, loss)
    return module, inputs, target, pcsim.trace(module, *inputs)


def test_gamma_below_one_breaks_equality():
    module, inputs, target, _ = _problem("mlp_tanh_bias")
    assert pcsim.check(module, inputs, target, rule="zil").passed
    report = pcsim.check(module, inputs, target, rule="zil", gamma=0.99999)
    assert not report.passed and report.max_rel_diff > 1e-6 * 0.99  # ~ (1 - gamma) * depth


RULES = {"zil": pcsim.zil, "wavefront": lambda *a, **k: pcsim.fa_zil(*a, mode="wavefront", **k),
         "autonomous": lambda *a, **k: pcsim.fa_zil(*a, mode="autonomous", **k)}


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.99999])
def test_gamma_scales_each_level_by_gamma_to_the_distance(gamma, rule):
    """Closed form: without C3, the update of a vertex at distance d is gamma^d times BP's."""
    _, inputs, target, graph = _problem("mlp_sigmoid_bias")
    bp = pcsim.bp(graph, inputs, target)
    got = RULES[rule](graph, inputs, target, gamma=gamma)
    for name, users in graph.users.items():
        (vertex,) = users
        expected = gamma ** graph.min_distance[vertex] * bp[name]
        assert torch.allclose(got[name], expected, rtol=TOL, atol=0), name


def _nearest_hidden_parametric_vertex(graph):
    """The parametric vertex closest to the output, below it (its update step is 1 or more)."""
    candidates = [v.name for v in graph.vertices if v.params and graph.min_distance.get(v.name, 0) >= 1]
    return min(candidates, key=graph.min_distance.get)


@pytest.mark.parametrize("arch", ["mlp_tanh_bias", "cnn_pools", "residual_block"])
def test_one_vertex_updated_one_step_late(arch):
    module, inputs, target, graph = _problem(arch)
    levelled = graph.level()
    late = _nearest_hidden_parametric_vertex(levelled)
    ok = pcsim.check(module, inputs, target, rule="zil")
    assert ok.passed
    report = pcsim.check(module, inputs, target, rule="zil", schedule={late: levelled.min_distance[late] + 1})
    assert report.max_rel_diff > FAR, report.table(arch)
    bad = [n for n, d in report.per_param.items() if d.rel > FAR]
    assert set(bad) <= set(levelled[late].params) | set(levelled.users) and bad


@pytest.mark.parametrize("arch", ["residual_block", "resnet_conv_block"])
def test_residual_graph_without_levelling(arch):
    module, inputs, target, graph = _problem(arch)
    assert not graph.is_levelled
    assert pcsim.check(module, inputs, target, rule="zil").passed
    report = pcsim.check(module, inputs, target, rule="zil", level=False)
    assert report.max_rel_diff > FAR, report.table(arch)


def test_shared_updates_applied_during_inference():
    module, inputs, target, graph = _problem("rnn_shared")
    assert any(len(u) > 1 for u in graph.users.values()), "the RNN must share its weights"
    assert pcsim.check(module, inputs, target, rule="zil", update_timing="deferred").passed
    report = pcsim.check(module, inputs, target, rule="zil", update_timing="immediate", lr=1e-2)
    assert report.max_rel_diff > FAR, report.table("rnn_shared")


def test_immediate_updates_are_harmless_without_sharing():
    """Control for the test above: Song et al. apply updates at once, which is exact on an MLP."""
    module, inputs, target, _ = _problem("mlp_tanh_bias")
    report = pcsim.check(module, inputs, target, rule="zil", update_timing="immediate", lr=1e-2)
    assert report.passed, report.table("mlp")


@pytest.mark.parametrize("arch", ["mlp_tanh_bias", "lstm_manual"])
def test_random_initial_values(arch):
    module, inputs, target, _ = _problem(arch)
    report = pcsim.check(module, inputs, target, rule="zil", init="random", seed=3)
    assert report.max_rel_diff > FAR, report.table(arch)


def test_mutation_options_are_validated():
    _, inputs, target, graph = _problem("mlp_tanh_bias")
    with pytest.raises(ValueError, match="update_timing"):
        pcsim.zil(graph, inputs, target, update_timing="sometimes")
    with pytest.raises(ValueError, match="init"):
        pcsim.zil(graph, inputs, target, init="zeros")
    with pytest.raises(ValueError, match="schedule names vertices not in the graph"):
        pcsim.zil(graph, inputs, target, schedule={"nope": 1})
    with pytest.raises(ValueError, match="mode"):
        pcsim.fa_zil(graph, inputs, target, mode="fast")
