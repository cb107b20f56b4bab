"""Z-IL and both Fa-Z-IL modes give torch autograd's gradients, on every test architecture.

Oracle: autograd on the module itself (pcsim.check computes it independently of pcsim's graph).
Bound: relative deviation per parameter <= pcsim.numerics.tolerance(dtype) (1e-12 in float64,
1e-5 in float32), for both losses.
"""

import pytest
import torch

import pcsim
from pcsim.numerics import tolerance
from tests.equivalence.archs import ARCHS

EXACT_RULES = ["zil", "fa-zil-wavefront", "fa-zil-autonomous"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_exact_rules_match_autograd(arch, loss, dtype):
    module, inputs, target = ARCHS[arch](dtype, loss)
    # the three rules on one capture and one oracle (capturing is most of the time)
    reports = pcsim.check_rules(module, inputs, target, EXACT_RULES, loss=loss, dtype=dtype)
    assert [r.rule for r in reports] == EXACT_RULES
    for report in reports:
        assert set(report.per_param) == {n for n, _ in module.named_parameters()}, report.rule
        assert report.max_rel_diff <= tolerance(dtype), report.table(arch)
        assert report.passed, report.table(arch)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_gradients_are_not_trivially_zero(arch):
    """The comparison means something only if the reference gradients are non-zero."""
    module, inputs, target = ARCHS[arch](torch.float64, "mse")
    report = pcsim.check(module, inputs, target, rule="zil")
    norms = [float(g.norm()) for g in report.reference.values()]
    assert sum(n > 0 for n in norms) >= len(norms) - 1, norms


def test_zil_levels_skip_connections_itself():
    module, inputs, target = ARCHS["resnet_conv_block"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    assert not graph.is_levelled
    report = pcsim.check(module, inputs, target, rule="zil")
    assert report.identity_vertices > 0 and report.passed


def test_modes_agree_bitwise_on_an_mlp():
    """Wavefront and autonomous Fa-Z-IL do the same arithmetic as synchronous Z-IL."""
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    ref = pcsim.zil(graph, inputs, target)
    for mode in ("wavefront", "autonomous"):
        got = pcsim.fa_zil(graph, inputs, target, mode=mode)
        for name in ref:
            assert torch.equal(got[name], ref[name]), (mode, name)


class _UnalignedView(torch.nn.Module):
    """A prediction read from a view 120 bytes into its storage: MKL rounds such inputs differently."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = torch.nn.Linear(3, 10), torch.nn.Linear(5, 5), torch.nn.Linear(5, 2)

    def forward(self, x):
        h = self.a(x).reshape(-1, 2, 5).transpose(0, 1)
        return self.c(torch.tanh(self.b(h[1])))


@pytest.mark.parametrize("rule", EXACT_RULES)
def test_views_at_unaligned_offsets_do_not_fire_errors_early(rule):
    """Regression: unchanged populations must keep bit-identical predictions (state in fresh storage)."""
    torch.manual_seed(0)
    net = _UnalignedView().double()
    x, y = torch.randn(3, 3, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    report = pcsim.check(net, (x,), y, rule=rule)
    assert report.max_rel_diff <= tolerance(torch.float64), report.table()
