"""The op table (pcsim/ops/table.py): an entry is what its readers see, and a new one is one line."""

import pytest
import torch
from torch import nn

import pcsim
from pcsim.ops.table import entry, supported_summary
from tests.graph.helpers import seeded


@pytest.mark.parametrize("rule", ["zil", "fa-zil-wavefront", "fa-zil-autonomous"])
def test_hardswish_and_hardsigmoid_are_kept_whole_and_exact(rule):
    """Two entries and `KEPT_WHOLE`: one vertex each, elementwise activations, listed; the exact rules on a
    network of both equal the module's autograd to rounding. Decomposed (clamp, div), they would not: torch's
    hardsigmoid backward rounds 1/6 to float32 in float64, and backprop is the oracle."""
    with seeded(0):
        net = nn.Sequential(nn.Linear(4, 5), nn.Hardswish(), nn.Linear(5, 3), nn.Hardsigmoid(), nn.Linear(3, 2))
        x, y = torch.randn(6, 4), torch.randn(6, 2)
    graph = pcsim.trace(net.double(), x.double())
    assert [v.op for v in graph.vertices if v.op.startswith("hard")] == ["hardswish", "hardsigmoid"]
    for name in ("hardswish", "hardsigmoid"):
        spec = entry(name)
        assert spec.family == "activation" and spec.elementwise and name in supported_summary()
    report = pcsim.check(net, (x,), y, rule=rule)
    assert report.passed, report.table()


class _Assigned(nn.Module):
    """Item assignment into a fresh tensor and into a population: captured as `aten.copy` (no derivative of
    its own in torch) and `slice_scatter`."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(4, 6)

    def forward(self, x):
        out = torch.zeros(2, 3, 8, dtype=x.dtype)
        out[:, :, :6] = self.a(x)  # broadcast over the leading dimension
        out[:, :, 7].copy_(self.b(x)[:, 0])
        h = self.b(x)
        h[:, 1] *= 3
        h[1:, 2:4] = torch.tanh(self.a(x))[1:, :2]
        return out, h


@pytest.mark.parametrize("rule", ["zil", "fa-zil-wavefront", "fa-zil-autonomous"])
def test_item_assignment_copies_values_and_its_error_reaches_only_the_source(rule):
    """`copy` runs as the in-place `copy_` it stands for (refused before: 'derivative for aten::copy is not
    implemented'); the oracle is autograd on the module itself."""
    with seeded(0):
        net = _Assigned().double()
        x = torch.randn(3, 4, dtype=torch.float64)
        y = (torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64))
    assert "copy" in {v.op for v in pcsim.trace(net, x).vertices}
    report = pcsim.check(net, (x,), y, rule=rule)
    assert report.passed and report.max_rel_diff <= pcsim.tolerance(torch.float64), report.table()
    assert all(g.abs().max() > 0 for g in report.reference.values())


class _PermutedHead(nn.Module):
    """A convolution read by a flatten (a `view` that exists for a contiguous batch only) and, permuted, by a
    reshape (a `view` that exists for a channels_last batch only)."""

    def __init__(self):
        super().__init__()
        self.conv, self.a, self.b = nn.Conv2d(3, 4, 3), nn.Linear(64, 2), nn.Linear(64, 2)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        p = h.permute(0, 2, 3, 1)
        return self.a(h.flatten(1)) + self.b(p.reshape(p.shape[0], -1))


@pytest.mark.parametrize("rule", [pcsim.bp, pcsim.zil, pcsim.fa_zil,
                                  lambda *a: pcsim.fa_zil(*a, mode="autonomous")],
                         ids=["bp", "zil", "wavefront", "autonomous"])
def test_a_batch_in_another_memory_layout_than_the_traced_one_runs_the_same_function(rule):
    """Traced on a contiguous batch and run on its channels_last copy (or the other way round), bp and the
    wavefront stopped inside torch ('view size is not compatible with input tensor's size and stride'): the
    captured `view` holds for the example's strides only. It runs as a reshape, which is that view where one
    exists; the updates are the module's autograd gradients."""
    with seeded(0):
        net = _PermutedHead().double()
        x, y = torch.randn(2, 3, 6, 6, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    channels_last = x.to(memory_format=torch.channels_last)
    loss = 0.5 * ((net(x) - y) ** 2).sum()
    want = dict(zip([n for n, _ in net.named_parameters()], torch.autograd.grad(loss, list(net.parameters())),
                    strict=True))
    for traced, given in ((x, channels_last), (channels_last, x)):
        got = rule(pcsim.trace(net, traced), (given,), y)
        for n, w in want.items():
            assert torch.allclose(got[n], w, rtol=pcsim.tolerance(torch.float64), atol=0), n


class _Between(nn.Module):
    """`op` on a 3x3 matrix per sample, between two parameterised layers: errors flow through it."""

    def __init__(self, op):
        super().__init__()
        self.op, self.a, self.b = op, nn.Linear(4, 9), nn.Linear(9, 3)

    def forward(self, x):
        return self.b(self.op(torch.tanh(self.a(x)).reshape(-1, 3, 3)).reshape(-1, 9))


_EYE = torch.eye(3, dtype=torch.float64)


def _exact_zero(a):
    return a * (a > 5)  # zero everywhere here, and still a population


# torch defines these ops' derivatives where their decompositions divide 0 by 0
_SINGULAR_POINTS = {
    "std-of-a-constant-row": lambda a: a + (a * 0 + a[:, :, :1]).std(-1, keepdim=True),
    "std-of-one-element": lambda a: a + a[:, :, :1].std(-1, keepdim=True, correction=0),
    "std_mean-of-one-element": lambda a: a + torch.std_mean(a[:, :, :1], -1, keepdim=True, correction=0)[0],
    "sinc-at-0": lambda a: torch.sinc(_exact_zero(a)) * a,
}
# decomposed, these raise through an effectful check torch.export threads a token through
_CHECKED_LINALG = {
    "inv": lambda a: torch.linalg.inv(a + 3 * _EYE),
    "inverse": lambda a: torch.inverse(a + 3 * _EYE),
    "solve": lambda a: torch.linalg.solve(a + 3 * _EYE, a),
    "cholesky": lambda a: torch.linalg.cholesky(a @ a.mT + _EYE),
    "lu_factor": lambda a: torch.linalg.lu_solve(*torch.linalg.lu_factor(a + 3 * _EYE), a),
    "matrix_power-2": lambda a: torch.linalg.matrix_power(a + 3 * _EYE, -2),
    "tensorsolve": lambda a: a * torch.linalg.tensorsolve(a[0] + 3 * _EYE, a[1, 0]).sum(),
}


@pytest.mark.parametrize("op", [*_SINGULAR_POINTS, *_CHECKED_LINALG])
def test_ops_kept_whole_for_their_derivative_or_their_checks_are_exact(op):
    """std at a constant row and sinc at 0: decomposed (var -> sqrt, sin(pi x) / (pi x)), their derivative was
    0/0, and every rule (sinc: bp and the Fa-Z-IL wavefront) returned NaN where backprop's is finite. The linalg ops
    were refused at the trace with 'the captured program takes a TOKEN input'. Oracle: autograd on the module."""
    net = _Between({**_SINGULAR_POINTS, **_CHECKED_LINALG}[op]).double()
    with seeded(0):
        net.apply(lambda m: m.reset_parameters() if isinstance(m, nn.Linear) else None)
        x, y = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    net.zero_grad()
    (0.5 * (net(x) - y).pow(2).sum()).backward()
    reference = {n: p.grad for n, p in net.named_parameters()}
    assert all(g.isfinite().all() for g in reference.values())
    graph = pcsim.trace(net, x)
    for rule, grads in [("bp", pcsim.bp(graph, (x,), y)), ("zil", pcsim.zil(graph, (x,), y)),
                        ("wavefront", pcsim.fa_zil(graph, (x,), y, mode="wavefront")),
                        ("autonomous", pcsim.fa_zil(graph, (x,), y, mode="autonomous"))]:
        for name, ref in reference.items():
            assert torch.allclose(grads[name], ref, rtol=pcsim.tolerance(torch.float64), atol=0), (rule, name)
