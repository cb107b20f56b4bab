"""`Autograd`: a vertex's prediction and the pullback of a cotangent through its one call.

Vertices come from small traced modules; the oracle for every pullback is the vector-Jacobian
product by central finite differences in float64 (step 1e-6), compared with rtol 1e-6.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pcsim
from pcsim.numerics import relative_difference
from pcsim.ops.local import Autograd, call
from tests.graph.helpers import DT, Net, seeded

STEP, RTOL = 1e-6, 1e-6


@dataclass(frozen=True)
class LocalCase:
    id: str
    body: Callable
    vertex: str
    op: str
    children: Callable[[], dict]
    input_shape: tuple = (2, 4)
    integer_input: bool = False


def _bn(train):
    def make():
        bn = nn.BatchNorm2d(2)
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
        return {"lin": nn.Linear(4, 32), "bn": bn.train(train)}
    return make


def _bn_body(s, x):
    return s.bn(s.lin(x).view(2, 2, 4, 4))


def _chunk(s, x):
    a, b = s.lin(x).chunk(2, 1)
    return torch.tanh(a) * b


CASES = [
    LocalCase("linear", lambda s, x: s.l2(torch.tanh(s.l1(x))), "l2", "linear",
              lambda: {"l1": nn.Linear(4, 5), "l2": nn.Linear(5, 3)}),
    LocalCase("conv2d", lambda s, x: s.conv(s.lin(x).view(2, 2, 4, 4)), "conv", "conv2d",
              lambda: {"lin": nn.Linear(4, 32), "conv": nn.Conv2d(2, 3, 3, stride=1, padding=1)}),
    LocalCase("max_pool2d", lambda s, x: s.pool(s.lin(x).view(2, 2, 4, 4)), "pool", "max_pool2d_with_indices",
              lambda: {"lin": nn.Linear(4, 32), "pool": nn.MaxPool2d(2)}),
    LocalCase("batch_norm-eval", _bn_body, "bn", "_native_batch_norm_legit_no_training", _bn(False)),
    LocalCase("batch_norm-train", _bn_body, "bn", "_native_batch_norm_legit_functional", _bn(True)),
    LocalCase("layer_norm", lambda s, x: s.ln(s.lin(x)), "ln", "native_layer_norm",
              lambda: {"lin": nn.Linear(4, 6), "ln": nn.LayerNorm(6)}),
    LocalCase("softmax", lambda s, x: F.softmax(s.lin(x), dim=1), "_softmax", "_softmax",
              lambda: {"lin": nn.Linear(4, 6)}),
    LocalCase("matmul-two-latent", lambda s, x: s.a(x).view(2, 2, 3) @ s.b(x).view(2, 3, 2), "bmm",
              "bmm", lambda: {"a": nn.Linear(4, 6), "b": nn.Linear(4, 6)}),
    LocalCase("cat", lambda s, x: torch.cat([s.a(x), torch.tanh(s.b(x))], 1), "cat", "cat",
              lambda: {"a": nn.Linear(4, 3), "b": nn.Linear(4, 2)}),
    LocalCase("chunk-select", _chunk, "split_with_sizes_1", "split_with_sizes", lambda: {"lin": nn.Linear(4, 6)}),
    LocalCase("embedding", lambda s, i: s.lin(s.emb(i)), "emb", "embedding",
              lambda: {"emb": nn.Embedding(6, 3), "lin": nn.Linear(3, 2)}, input_shape=(2, 3),
              integer_input=True),
]


def _setup(case: LocalCase):
    """The traced vertex, parent values (random: a VJP holds at any point), params and constants."""
    with seeded(0):
        net = Net(case.body, **case.children()).to(DT)
        if case.integer_input:
            x = torch.randint(0, 6, case.input_shape)
        else:
            x = torch.randn(case.input_shape, dtype=DT)
    graph = pcsim.trace(net, x)
    vertex = graph[case.vertex]
    assert vertex.op == case.op
    with seeded(1):
        parents = [torch.randint(0, 6, graph[p].shape) if not graph[p].dtype.is_floating_point
                   else torch.randn(graph[p].shape, dtype=DT) for p in vertex.parents]
    params = {n: p.detach().clone() for n, p in graph.params.items()}
    return vertex, parents, params, dict(graph.constants)


def _fd_vjp(f: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor, cot: torch.Tensor) -> torch.Tensor:
    """cot . d f / d t, one central difference per element of t."""
    out = torch.zeros_like(t)
    for k in range(t.numel()):
        plus, minus = t.clone(), t.clone()
        plus.view(-1)[k] += STEP
        minus.view(-1)[k] -= STEP
        out.view(-1)[k] = ((f(plus) - f(minus)) * cot).sum() / (2 * STEP)
    return out


def _close(got: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    scale = max(ref.abs().max().item(), 1e-3)
    torch.testing.assert_close(got, ref, rtol=RTOL, atol=1e-7 * scale, msg=lambda m: f"{what}: {m}")


def _check_pullback(vertex, parents, params, constants, cot, parent_cots, param_cots):
    for i, (p, got) in enumerate(zip(parents, parent_cots, strict=True)):
        if not p.is_floating_point():
            assert got is None, f"integer parent #{i} should get None"
            continue

        def f(t, i=i):
            return call(vertex, [t if j == i else q for j, q in enumerate(parents)], params, constants)
        _close(got, _fd_vjp(f, p, cot), f"parent '{vertex.parents[i]}'")
    assert set(param_cots) == set(vertex.params)
    for name in vertex.params:
        def g(t, name=name):
            return call(vertex, parents, {**params, name: t}, constants)
        _close(param_cots[name], _fd_vjp(g, params[name], cot), f"param '{name}'")


def _cot(shape, seed=3):
    with seeded(seed):
        return torch.randn(shape, dtype=DT)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pullback_equals_finite_difference_vjp(case: LocalCase):
    vertex, parents, params, constants = _setup(case)
    lin = Autograd(vertex, parents, params, constants)
    torch.testing.assert_close(lin.mu, call(vertex, parents, params, constants), rtol=0, atol=0)
    assert lin.mu.shape == vertex.shape and not lin.mu.requires_grad
    cot = _cot(vertex.shape)
    parent_cots, param_cots = lin.pullback(cot)
    _check_pullback(vertex, parents, params, constants, cot, parent_cots, param_cots)


def test_integer_parent_gets_none_and_parameters_still_get_their_vjp():
    vertex, parents, params, constants = _setup(next(c for c in CASES if c.id == "embedding"))
    assert not parents[0].is_floating_point()
    parent_cots, param_cots = Autograd(vertex, parents, params, constants).pullback(_cot(vertex.shape))
    assert parent_cots == [None]
    assert param_cots["emb.weight"].abs().sum() > 0


def test_retain_allows_two_pullbacks():
    vertex, parents, params, constants = _setup(next(c for c in CASES if c.id == "conv2d"))
    lin = Autograd(vertex, parents, params, constants)
    for seed in (3, 4):
        cot = _cot(vertex.shape, seed)
        _check_pullback(vertex, parents, params, constants, cot, *lin.pullback(cot, retain=True))
    lin.pullback(_cot(vertex.shape), retain=False)
    with pytest.raises(RuntimeError):
        lin.pullback(_cot(vertex.shape))  # the recorded call was freed


def test_without_params_only_parents_are_pulled_back():
    vertex, parents, params, constants = _setup(CASES[0])
    lin = Autograd(vertex, parents, params, constants, wrt_params=False)
    cot = _cot(vertex.shape)
    parent_cots, param_cots = lin.pullback(cot)
    assert param_cots == {}
    _close(parent_cots[0], _fd_vjp(lambda t: call(vertex, [t], params, constants), parents[0], cot), "parent")


def test_a_tensor_read_only_for_its_shape_is_no_parent():
    # the capture resolves `view_as(b)` to b's shape: b's values are not read, so b is no parent
    case = LocalCase("view_as", lambda s, x: s.a(x).view(2, 2, 3).view_as(s.b(x)) + 0 * s.b(x), "view_1", "view",
                     lambda: {"a": nn.Linear(4, 6), "b": nn.Linear(4, 6)})
    vertex, parents, params, constants = _setup(case)
    assert vertex.parents == ("view",)
    cot = _cot(vertex.shape)
    parent_cots, _ = Autograd(vertex, parents, params, constants).pullback(cot)
    torch.testing.assert_close(parent_cots[0], cot.view(2, 2, 3), rtol=0, atol=0)


def test_linearisation_leaves_its_inputs_untouched():
    vertex, parents, params, constants = _setup(CASES[1])
    before = [p.clone() for p in parents], {n: p.clone() for n, p in params.items()}
    Autograd(vertex, parents, params, constants).pullback(_cot(vertex.shape))
    assert all(torch.equal(a, b) for a, b in zip(parents, before[0], strict=True))
    assert all(torch.equal(params[n], before[1][n]) and not params[n].requires_grad for n in params)
    assert all(not p.requires_grad for p in parents)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_every_entry_point_records_autograd_whatever_mode_its_caller_is_in(mode):
    """Under `torch.inference_mode()` nothing was recorded: zil and fa_zil (both modes) returned zero updates
    (relative difference 1.0 from autograd), bp and check stopped inside torch; check stopped under `no_grad()`
    too. Every public entry runs with autograd on; inputs and targets made under inference mode are copied."""
    with seeded(0):
        net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(DT)
        x, y = torch.randn(6, 4, dtype=DT), torch.randn(6, 3, dtype=DT)
    loss = 0.5 * ((net(x) - y) ** 2).sum()
    want = dict(zip([n for n, _ in net.named_parameters()], torch.autograd.grad(loss, list(net.parameters())),
                    strict=True))
    il = pcsim.il(pcsim.trace(net, x), (x,), y, steps=5)
    with mode():
        xm, ym = x.clone(), y.clone()  # inference tensors under inference_mode
        g = pcsim.trace(net, xm)
        results = [rule(g, (xm,), ym) for rule in (pcsim.bp, pcsim.zil, pcsim.fa_zil,
                                                   lambda *a: pcsim.fa_zil(*a, mode="autonomous"))]
        report = pcsim.check(net, (xm,), ym)
        il_inside = pcsim.il(g, (xm,), ym, steps=5)
    for got in [*results, report.grads, report.reference]:
        for n, w in want.items():
            assert relative_difference(got[n], w) <= pcsim.tolerance(DT), n
    assert all(torch.equal(il_inside[n], il[n]) for n in il)
