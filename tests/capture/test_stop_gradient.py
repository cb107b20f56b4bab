"""`.detach()` and `torch.no_grad()` inside forward() are stop-gradients: backprop ignores those paths, so
Z-IL and Fa-Z-IL must too. The oracle is autograd on the module itself (pcsim.check); each case also runs
with its stops lifted, to show that they change the gradients (a capture that dropped them would fail)."""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pcsim
from pcsim.check import autograd_gradients
from pcsim.numerics import relative_difference
from tests.graph.helpers import DT, Net, seeded

pytestmark = pytest.mark.usefixtures("one_thread")
RULES = ("zil", "fa-zil-wavefront", "fa-zil-autonomous")
TOL = pcsim.tolerance(DT)


def _detach(t: torch.Tensor, stop: bool) -> torch.Tensor:
    return t.detach() if stop else t


def _no_grad(stop: bool):
    return torch.no_grad() if stop else contextlib.nullcontext()


def _detached_product(s, x, stop):
    h = s.a(x)
    return h * _detach(h, stop) + s.b(_detach(x, stop))


def _no_grad_block(s, x, stop):
    h = s.a(x)
    with _no_grad(stop):
        w = torch.softmax(h, 1) + s.b(x)  # a population and a parameter, read without gradient
    return torch.tanh(h) * w


def _no_grad_decorated(s, x, stop):
    sigmoid = torch.no_grad()(torch.sigmoid) if stop else torch.sigmoid
    return s.b(x) * sigmoid(s.a(x))


def _detached_weight(s, x, stop):
    return F.linear(x, _detach(s.a.weight, stop), s.a.bias) * torch.tanh(s.b(x))


def _grad_mode_switch(s, x, stop):
    h = s.a(x)
    with torch.set_grad_enabled(not stop):
        g = h.exp()
    return s.b(x) * g + h


def _detached_in_place(s, x, stop):
    """`c.detach_()`: export records aten.detach_, which the capture took for an alias (l2's update 7.2e2
    relative off the floor of its zero gradient)."""
    h = s.a(x)
    c = s.b(x) * h
    if stop:
        c.detach_()
    return h * c + torch.tanh(c)


def _inference(stop: bool):
    return torch.inference_mode() if stop else contextlib.nullcontext()


# torch.export drops inference_mode: its block was captured as if gradients flowed (l2's update 1.1e3 relative
# off the floor of its zero gradient). Its results are only added: autograd refuses to save them for backward.
def _inference_mode_block(s, x, stop):
    h = s.a(x)
    with _inference(stop):
        w = torch.softmax(h, 1) + s.b(x)
    return torch.tanh(h) + w.sum(1, keepdim=True)


def _inference_mode_decorated(s, x, stop):
    sigmoid = torch.inference_mode()(torch.sigmoid) if stop else torch.sigmoid
    return torch.tanh(s.b(x)) + sigmoid(s.a(x))


CASES = {"detach": _detached_product, "no_grad": _no_grad_block, "no_grad_decorator": _no_grad_decorated,
         "detached_weight": _detached_weight, "set_grad_enabled": _grad_mode_switch, "detach_": _detached_in_place,
         "inference_mode": _inference_mode_block, "inference_mode_decorator": _inference_mode_decorated}


@pytest.mark.parametrize("body", CASES.values(), ids=CASES.keys())
def test_a_stop_gradient_in_forward_is_exact_under_the_exact_rules(body):
    with seeded(0):
        net = Net(functools.partial(body, stop=True), a=nn.Linear(4, 6), b=nn.Linear(4, 6)).to(DT)
        x, y = torch.randn(3, 4, dtype=DT), torch.randn(3, 6, dtype=DT)
    g = pcsim.trace(net, x)
    assert "stop_gradient" in repr([(v.op, v.args) for v in g.vertices]), g.summary()
    lifted = autograd_gradients(Net(functools.partial(body, stop=False), a=net.a, b=net.b), (x,), y)
    for rule in RULES:
        rep = pcsim.check(net, (x,), y, rule=rule)
        assert rep.passed and rep.max_rel_diff <= TOL, f"{rule}\n{rep.table()}"
        assert max(relative_difference(lifted[n], rep.reference[n]) for n in lifted) > 1e-3, "the stop changes nothing"


class _ChangedInPlace(nn.Module):
    """Weight clipping and a population rescaled in place, both under `torch.no_grad()`: autograd keeps each
    tensor's history, so its new value passes gradient as the identity would (straight through)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.a(x)
        with torch.no_grad():
            self.b.weight.clamp_(-0.2, 0.2)
            h.mul_(2.0).add_(0.5)
        return self.b(torch.tanh(h))


def test_a_tensor_changed_in_place_without_gradient_passes_gradient_straight_through():
    """The block's result is the changed tensor, not a new one: a stop there zeroed the clipped weight's
    update (relative difference 1.0), and reading the weight after the block put the clamp's mask on it. The
    oracle is autograd on a copy of the module, whose forward clips its own weight."""
    import copy

    with seeded(0):
        net, x, y = _ChangedInPlace().to(DT), torch.randn(5, 4, dtype=DT), torch.randn(5, 3, dtype=DT)
    assert net.b.weight.abs().max() > 0.2  # the clipping changes the weight
    eager = copy.deepcopy(net)
    loss = 0.5 * ((eager(x) - y) ** 2).sum()
    want = dict(zip([n for n, _ in eager.named_parameters()], torch.autograd.grad(loss, list(eager.parameters())),
                    strict=True))
    g = pcsim.trace(net, x)
    assert "straight_through" in repr([v.args for v in g.vertices]), g.summary()
    for rule in (pcsim.zil, lambda *a: pcsim.fa_zil(*a, mode="autonomous")):
        got = rule(g, (x,), y)  # on the module's weight as it was, unclipped: the graph clips it
        for n, w in want.items():
            assert relative_difference(got[n], w) <= TOL, n


def _inference_mode_off_under_no_grad(s, x):
    with torch.no_grad():
        h = s.a(x)
        with torch.inference_mode(False):  # gradients back on, as enable_grad
            g = torch.tanh(s.b(x))
    return g * h


def test_inference_mode_false_turns_gradients_back_on_as_in_backprop():
    """`inference_mode(False)` enables gradients even under `no_grad`; export dropped it too, and the no_grad
    block around it stopped b's gradient (its update was zero)."""
    with seeded(0):
        net = Net(_inference_mode_off_under_no_grad, a=nn.Linear(4, 6), b=nn.Linear(4, 6)).to(DT)
        x, y = torch.randn(3, 4, dtype=DT), torch.randn(3, 6, dtype=DT)
    for rule in RULES:
        rep = pcsim.check(net, (x,), y, rule=rule)
        assert rep.passed and rep.max_rel_diff <= TOL, f"{rule}\n{rep.table()}"
        assert rep.reference["b.weight"].abs().max() > 0 and rep.reference["a.weight"].abs().max() == 0


class _RenormedEmbedding(nn.Module):
    """nn.Embedding(max_norm=...) renormalises the rows it reads in place, through `weight.detach()`. With
    sparse=True the renormalised weight's feedback is a sparse tensor (Z-IL stopped in torch: 'unsupported memory
    format option Contiguous')."""

    def __init__(self, sparse=False):
        super().__init__()
        self.e, self.b = nn.Embedding(10, 4, max_norm=1.0, sparse=sparse), nn.Linear(4, 3)

    def forward(self, ids):
        return self.b(torch.tanh(self.e(ids))).sum(1)


class _RenormedBag(nn.Module):
    """nn.EmbeddingBag(max_norm=...): torch's decomposition then picks `_embedding_bag_forward_only`, a kernel with no
    derivative (the capture was refused: 'Autograd not support dtype: Long')."""

    def __init__(self, mode):
        super().__init__()
        self.e, self.b = nn.EmbeddingBag(10, 4, mode=mode, max_norm=1.0), nn.Linear(4, 3)

    def forward(self, ids, offsets):
        return self.b(torch.tanh(self.e(ids, offsets)))


class _ClippedThroughDetach(nn.Module):
    """Weight clipping written `w.detach().clamp_(..)`, after a first read of the weight (which sees it unclipped)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.b(torch.tanh(self.a(x)))
        self.a.weight.detach().clamp_(-0.2, 0.2).mul_(0.5)
        return self.b(torch.tanh(self.a(x))) + h


def _renormed_case(sparse=False):
    net = _RenormedEmbedding(sparse).to(DT)
    with torch.no_grad():
        net.e.weight.mul_(3.0)  # rows of norm above max_norm: the renormalisation changes them
    return net, torch.tensor([[1, 2, 0, 2], [3, 0, 0, 5]]), torch.randn(2, 3, dtype=DT)


def _renormed_bag_case(mode):
    net = _RenormedBag(mode).to(DT)
    with torch.no_grad():
        net.e.weight.mul_(3.0)
    ids, offsets = torch.tensor([1, 2, 4, 5, 4, 3, 2, 9]), torch.tensor([0, 3, 3, 6])
    return net, (ids, offsets), torch.randn(4, 3, dtype=DT)


def _clipped_case():
    return _ClippedThroughDetach().to(DT), torch.randn(5, 4, dtype=DT), torch.randn(5, 3, dtype=DT)


@pytest.mark.parametrize("case", [_renormed_case, functools.partial(_renormed_case, True), _clipped_case,
                                  functools.partial(_renormed_bag_case, "sum"),
                                  functools.partial(_renormed_bag_case, "max")],
                         ids=["embedding-max-norm", "sparse-embedding-max-norm", "detach-clamp", "bag-sum-max-norm",
                              "bag-max-max-norm"])
def test_a_tensor_changed_in_place_through_a_detached_alias_is_read_changed(case):
    """The detached alias shares the tensor's storage, so the tensor's later readers see the change (and pass
    gradient to it straight through); export read it unchanged, and every rule was 0.45 (max_norm) and 0.63
    (clamp) relative off autograd, silently. The oracle is autograd on a copy of the module, whose forward
    changes its own weight."""
    import copy

    with seeded(0):
        net, x, y = case()
    x = x if isinstance(x, tuple) else (x,)
    eager = copy.deepcopy(net)
    loss = 0.5 * ((eager(*x) - y) ** 2).sum()
    want = dict(zip([n for n, _ in eager.named_parameters()], torch.autograd.grad(loss, list(eager.parameters())),
                    strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), eager.parameters(), strict=True))
    g = pcsim.trace(net, *x)
    rules = (pcsim.bp, pcsim.zil, pcsim.fa_zil, lambda *a: pcsim.fa_zil(*a, mode="autonomous"))
    for rule in rules:
        got = rule(g, x, y)  # on the module's weight as it was: the graph changes it as forward does
        for n, w in want.items():  # a sparse embedding's gradient dense, as the rules return it
            assert relative_difference(got[n], w.to_dense() if w.is_sparse else w) <= TOL, n
