"""`simulate(plasticity="zil")` levels the graph as `pcsim.zil` does; level=False runs it as traced, and says so."""

import pytest
import torch

import pcsim
from pcsim.check import autograd_gradients
from pcsim.numerics import relative_difference, tolerance
from tests.equivalence.archs import ARCHS

TOL = tolerance(torch.float64)
DT = 0.25


def _run(graph, inputs, target, **kw):
    t_end = (graph.level().depth + 2) * DT
    return pcsim.simulate(graph, inputs, target, solver=pcsim.Euler(DT), t_end=t_end, tau_x=DT, plasticity="zil",
                          **kw)


@pytest.mark.parametrize("arch", ["residual_block", "resnet_conv_block"])
def test_zil_levels_a_graph_with_skip_connections(arch):
    module, inputs, target = ARCHS[arch](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    assert not graph.is_levelled
    tr = _run(graph, inputs, target)
    added = tr.meta["identity_populations"]
    assert added and set(added) == set(graph.level().identity_vertices)
    assert set(added) <= set(tr.values) and not set(added) & set(graph.latent)
    for name, ref in autograd_gradients(module, inputs, target).items():
        assert relative_difference(torch.as_tensor(tr.updates[name]), ref) <= TOL, name


def test_level_false_runs_as_traced_and_warns():
    module, inputs, target = ARCHS["residual_block"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    with pytest.warns(UserWarning, match="not levelled"):
        tr = _run(graph, inputs, target, level=False)
    assert "identity_populations" not in tr.meta and set(tr.values) == set(graph.latent)
    worst = max(relative_difference(torch.as_tensor(tr.updates[n]), r)
                for n, r in autograd_gradients(module, inputs, target).items())
    assert worst > 1e-3  # the skip edge breaks the schedule: not BP's gradient


def test_a_levelled_graph_gains_nothing():
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    tr = _run(pcsim.trace(module, *inputs), inputs, target)
    assert tr.meta["identity_populations"] == []
