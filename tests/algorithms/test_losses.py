"""Output losses: dL/dmu against autograd, and bit for bit the negated output error the exact rules replaced."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import pcsim
from pcsim.algorithms.losses import MSE, CrossEntropy, Loss, get_loss
from pcsim.numerics import relative_difference, tolerance


def _case(name: str, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(3)
    mu = torch.randn(6, 5, generator=gen, dtype=dtype) * 3
    target = (torch.randn(6, 5, generator=gen, dtype=dtype) if name == "mse"
              else torch.randint(0, 5, (6,), generator=gen))
    return mu, target


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["mse", "ce"])
def test_gradient_is_minus_error_bit_for_bit_and_autograds_gradient(name, dtype):
    loss = get_loss(name)
    mu, target = _case(name, dtype)
    grad = loss.gradient(mu, target)
    assert torch.equal(grad, -loss.error(mu, target))
    leaf = mu.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(loss.value(leaf, target), leaf)
    assert relative_difference(grad, expected) <= tolerance(dtype)


def test_a_user_loss_gets_the_negated_error_as_its_gradient():
    @dataclass(frozen=True)
    class Scaled(Loss):
        name: str = "scaled"

        def error(self, mu, target):
            return 3.0 * (target - mu)

    mu, target = _case("mse", torch.float64)
    assert torch.equal(Scaled().gradient(mu, target), -3.0 * (target - mu))


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int16])
def test_class_indices_of_any_integer_dtype_give_the_int64_indices_updates(dtype):
    """torch's cross_entropy takes int64 (and uint8) indices, scatter int64: int32 class ids stopped bp and
    check's oracle inside torch ('expected target dtype to be Long or Byte'), uint8 ones Z-IL and Fa-Z-IL
    ('scatter(): Expected dtype int32/int64 for index'). Checked to lie in [0, classes), they are read as int64."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    x, classes = torch.randn(6, 4, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0, 2])
    loss = torch.nn.functional.cross_entropy(net(x), classes, reduction="sum")
    want = dict(zip([n for n, _ in net.named_parameters()], torch.autograd.grad(loss, list(net.parameters())),
                    strict=True))
    g = pcsim.trace(net, x)
    for rule in (pcsim.bp, pcsim.zil, pcsim.fa_zil, lambda *a, **k: pcsim.fa_zil(*a, mode="autonomous", **k)):
        got = rule(g, (x,), classes.to(dtype), loss="ce")
        for n, w in want.items():
            assert relative_difference(got[n], w) <= tolerance(torch.float64), n
    report = pcsim.check(net, (x,), classes.to(dtype), loss="ce")
    assert report.passed and all(relative_difference(report.reference[n], w) <= tolerance(torch.float64)
                                 for n, w in want.items())


def _autograd(net, x, loss_of_output):
    return dict(zip([n for n, _ in net.named_parameters()],
                    torch.autograd.grad(loss_of_output(net(x)), list(net.parameters())), strict=True))


def _small_net(seed):
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return net, torch.randn(6, 4, generator=gen, dtype=torch.float64), gen


_EXACT = {"bp": pcsim.bp, "zil": pcsim.zil, "fa_zil": pcsim.fa_zil,
          "fa_zil_autonomous": lambda *a, **k: pcsim.fa_zil(*a, mode="autonomous", **k)}


@dataclass(frozen=True)
class _Huber(Loss):
    name: str = "huber"

    def value(self, mu, target):
        return torch.nn.functional.huber_loss(mu, target, reduction="sum", delta=0.5)


@dataclass(frozen=True)
class _SmoothedCE(CrossEntropy):  # keeps CE's name, target check and int64 indices
    def value(self, mu, target):
        return torch.nn.functional.cross_entropy(mu, target, reduction="sum", label_smoothing=0.1)


@dataclass(frozen=True)
class _Weighted(MSE):
    name: str = "weighted"

    def value(self, mu, target):
        return 1.5 * ((mu - target) ** 2).sum()

    def error(self, mu, target):
        return 3.0 * (target - mu)


@pytest.mark.parametrize("case", ["value alone", "CE's value redefined", "MSE's value and error redefined"])
def test_a_users_loss_is_descended_as_its_value_says_by_every_rule(case):
    """A Loss is its value; its error and gradient follow the most derived definition. A Loss giving its value alone
    stopped every rule with a bare NotImplementedError (check_target, error); a CrossEntropy subclass redefining its
    value (label smoothing) kept plain CE's error under every rule (silently); an MSE subclass redefining its value
    and error kept MSE's one-pass gradient, which Z-IL and Fa-Z-IL read (0.67 relative off autograd, IL right)."""
    net, x, gen = _small_net(5)
    torch_loss, loss, y = {
        "value alone": (lambda o, y: torch.nn.functional.huber_loss(o, y, reduction="sum", delta=0.5), _Huber(),
                        2 * torch.randn(6, 3, generator=gen, dtype=torch.float64)),
        "CE's value redefined": (lambda o, y: torch.nn.functional.cross_entropy(
            o, y, reduction="sum", label_smoothing=0.1), _SmoothedCE(), torch.randint(0, 3, (6,), generator=gen)),
        "MSE's value and error redefined": (lambda o, y: 1.5 * ((o - y) ** 2).sum(), _Weighted(),
                                            torch.randn(6, 3, generator=gen, dtype=torch.float64)),
    }[case]
    want = _autograd(net, x, lambda o: torch_loss(o, y))
    g = pcsim.trace(net, x)
    for rule, run in _EXACT.items():
        got = run(g, (x,), y, loss=loss)
        assert max(relative_difference(got[n], w) for n, w in want.items()) <= tolerance(torch.float64), rule
    il = pcsim.il(g, (x,), y, loss=loss, gamma=0.1, steps=300, fixed_prediction=True)
    assert max(relative_difference(il[n], w) for n, w in want.items()) <= 1e-8  # IL converges to BP
    report = pcsim.check(net, (x,), y, loss=loss)
    assert report.passed and all(relative_difference(report.reference[n], w) <= tolerance(torch.float64)
                                 for n, w in want.items())


def test_a_subclass_redefining_the_error_but_not_the_value_is_refused():
    """Its energy, reported loss and check's oracle would be the parent's loss, not the one its error descends."""
    with pytest.raises(TypeError, match="redefines the output error but keeps MSE's value"):
        @dataclass(frozen=True)
        class Doubled(MSE):
            def error(self, mu, target):
                return 2.0 * (target - mu)


def test_a_users_loss_refuses_a_target_of_another_shape_by_default():
    net, x, gen = _small_net(6)
    with pytest.raises(pcsim.InputError, match=r"target for output '.*' has shape \(6,\), the output has shape "
                                               r"\(6, 3\) \(loss _Huber: override check_target"):
        pcsim.zil(pcsim.trace(net, x), (x,), torch.randn(6, generator=gen, dtype=torch.float64), loss=_Huber())


@pytest.mark.parametrize("layout", ["(batch, classes)", "(batch, classes, time)"])
def test_class_index_minus_100_leaves_the_entry_out_as_torchs_cross_entropy_does(layout):
    """F.cross_entropy leaves out entries labelled -100 (its ignore_index; Hugging Face pads labels with it): they
    were refused as 'class indices outside [0, 3)', so a padded batch could not be learned from at all."""
    gen = torch.Generator().manual_seed(11)
    if layout == "(batch, classes)":
        net, x, gen = _small_net(11)
        y = torch.randint(0, 3, (6,), generator=gen)
        y[[1, 4]] = -100
    else:
        net = nn.Sequential(nn.Tanh(), nn.Linear(4, 5)).double()
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
        net = Transposed(net)
        x = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 5, (2, 3), generator=gen)
        y[1, 2] = y[0, 0] = -100
    want = _autograd(net, x, lambda o: torch.nn.functional.cross_entropy(o, y, reduction="sum"))
    g = pcsim.trace(net, x)
    for rule, run in _EXACT.items():
        for ids in (y, y.int()):
            got = run(g, (x,), ids, loss="ce")
            assert max(relative_difference(got[n], w) for n, w in want.items()) <= tolerance(torch.float64), rule
    il = pcsim.il(g, (x,), y, loss="ce", gamma=0.1, steps=300, fixed_prediction=True)
    assert max(relative_difference(il[n], w) for n, w in want.items()) <= 1e-8
    tr = pcsim.simulate(g, (x,), y, loss="ce", backend="torch", t_end=4.0, tau_x=1.0, dt=1.0, method="euler",
                        plasticity="zil", record=[])
    assert max(relative_difference(torch.as_tensor(tr.updates[n]), w) for n, w in want.items()) <= tolerance(
        torch.float64)
    assert pcsim.check(net, (x,), y, loss="ce", rule="fa-zil-autonomous").passed


class Transposed(nn.Module):
    """(batch, time, classes) logits as F.cross_entropy reads them: classes on dim 1."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).transpose(1, 2)


def test_class_indices_out_of_range_are_named():
    net, x, gen = _small_net(12)
    y = torch.tensor([0, 1, -5, 2, 0, 1])
    g = pcsim.trace(net, x)
    with pytest.raises(pcsim.InputError, match=r"has class index -5 at \(2,\), outside \[0, 3\) \(-100 leaves"):
        pcsim.zil(g, (x,), y, loss="ce")
    # the first bad entry is named whichever end of the range it leaves, with or without -100 entries beside it
    for bad, at in ((torch.tensor([0, 1, 2, 3, 0, 1]), 3), (torch.tensor([-100, 1, 2, 0, 3, -100]), 4)):
        with pytest.raises(pcsim.InputError, match=rf"has class index 3 at \({at},\), outside \[0, 3\)"):
            pcsim.fa_zil(g, (x,), bad, loss="ce")


@dataclass(frozen=True)
class _NotSummed(Loss):
    def value(self, mu, target):
        return 0.5 * (mu - target) ** 2


@dataclass(frozen=True)
class _AsNumber(Loss):
    def value(self, mu, target):
        return float(0.5 * ((mu - target) ** 2).sum())


@pytest.mark.parametrize("loss, got", [(_NotSummed(), r"a tensor of shape \(6, 3\)"), (_AsNumber(), "a float")])
def test_a_users_value_that_is_no_differentiable_scalar_is_refused_at_its_line(loss, got):
    """A value not summed, or turned into a Python number, stopped every rule inside torch ('grad can be implicitly
    created only for scalar outputs'; "'float' object is not iterable"), and check blamed the module's backward."""
    net, x, gen = _small_net(13)
    y = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    g = pcsim.trace(net, x)
    pattern = (rf"loss {type(loss).__name__}: value\(mu, target\) at .*test_losses.py:\d+ must give a scalar tensor "
               rf"differentiable in mu .*, got {got}")
    for rule in (*_EXACT.values(), pcsim.il):
        with pytest.raises(pcsim.InputError, match=pattern):
            rule(g, (x,), y, loss=loss)
    with pytest.raises(pcsim.InputError, match=pattern):
        pcsim.check(net, (x,), y, loss=loss)


class _Nameless(Loss):
    def value(self, mu, target):
        return 0.5 * ((mu - target) ** 2).sum()


def test_a_users_loss_without_a_name_is_named_by_its_class_in_reports():
    # before: check's report and simulate's record named it '' (the base class's default name)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    assert _Nameless().name == "_Nameless" and _Huber().name == "huber" and MSE().name == "mse"
    graph = pcsim.trace(net, x)
    tr = pcsim.simulate(graph, (x,), y, backend="torch", dt=0.5, t_end=1.0, loss=_Nameless(), record=[])
    assert "_Nameless" in str(tr.meta["loss"]), tr.meta["loss"]
