"""Python numbers the traced program took from the inputs' values (pcsim/graph/guards.py): recomputed by every
rule from its batch, which is refused where such a number moved."""

import copy

import pytest
import torch
from torch import nn

import pcsim
from tests.graph.helpers import assert_grads_match, module_grads, seeded

DT = torch.float64


class _ScaledByItem(nn.Module):
    """A hidden layer scaled by a Python float read off the input (`x.abs().max().item()`): torch.export keeps the
    example's float as a literal of the multiplication."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)) * x.abs().max().item())


def _data():
    with seeded(0):
        net = _ScaledByItem().to(DT)
        x, y = torch.randn(5, 4, dtype=DT), torch.randn(5, 3, dtype=DT)
    same_max = x.clone()
    same_max[x.abs() < x.abs().max()] *= 0.5  # another batch, the same largest magnitude
    return net, x, y, same_max, 2 * x


RULES = {"bp": pcsim.bp, "zil": pcsim.zil, "il": lambda g, x, y: pcsim.il(g, x, y, steps=2),
         "ipc": lambda g, x, y: pcsim.ipc(g, x, y, steps=2),
         "fa-zil-wavefront": lambda g, x, y: pcsim.fa_zil(g, x, y, mode="wavefront"),
         "fa-zil-autonomous": lambda g, x, y: pcsim.fa_zil(g, x, y, mode="autonomous")}


@pytest.mark.parametrize("rule", RULES)
def test_a_batch_moving_a_number_taken_from_the_inputs_is_refused(rule):
    """Traced on x, the graph multiplied by x's max on every batch: on 2x (max doubled) bp, zil and fa_zil (both
    modes) were 0.65 relative off autograd on the module, with a warning about 'sizes'. Now an InputError naming
    the op, its line and both values."""
    net, x, y, _, moved = _data()
    with pytest.warns(UserWarning, match=r"_local_scalar_dense.* at test_guards.py:\d+ takes a number from the "
                                         r"\*values\*"):
        graph = pcsim.trace(net, x)
    with pytest.raises(pcsim.InputError, match=r"op _local_scalar_dense \('_local_scalar_dense'\) at test_guards.py:"
                                               r"\d+ takes the Python number .* at the trace, and .* from these"):
        RULES[rule](graph, (moved,), y)


@pytest.mark.parametrize("rule", ["bp", "zil", "fa-zil-wavefront", "fa-zil-autonomous"])
def test_a_batch_keeping_the_number_runs_and_is_exact(rule):
    """Another batch with the same max, and a copy of the graph: exact against autograd on the module."""
    net, x, y, same_max, _ = _data()
    with pytest.warns(UserWarning):
        graph = pcsim.trace(net, x)
    for g in (graph, copy.deepcopy(graph)):
        for batch in (x, same_max):
            assert_grads_match(RULES[rule](g, (batch,), y), module_grads(net, (batch,), (y,)))
