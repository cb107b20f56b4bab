"""Cross-entropy on class probabilities ('soft labels': label smoothing by hand, distillation, mixup) and torch's
label_smoothing, against autograd on the module with F.cross_entropy and the closed form softmax(mu) - q. pcsim
refused probabilities outright ('class probabilities are not supported'), and had no label_smoothing."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pcsim
from pcsim.algorithms.losses import CrossEntropy
from pcsim.numerics import relative_difference, tolerance
from tests.algorithms import plain_pc
from tests.algorithms.test_losses import Transposed

_EXACT = {"bp": pcsim.bp, "zil": pcsim.zil, "fa_zil": pcsim.fa_zil,
          "fa_zil_autonomous": lambda *a, **k: pcsim.fa_zil(*a, mode="autonomous", **k)}


def _case(layout: str, seed: int = 5):
    gen = torch.Generator().manual_seed(seed)
    seq = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        for p in seq.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    if layout == "(batch, classes)":
        x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
        return seq, seq, x, torch.softmax(2 * torch.randn(6, 3, generator=gen, dtype=torch.float64), dim=1)
    x = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    return seq, Transposed(seq), x, torch.softmax(2 * torch.randn(2, 3, 3, generator=gen, dtype=torch.float64), 1)


def _autograd(net, x, y, smoothing=0.0):
    out = F.cross_entropy(net(x), y, reduction="sum", label_smoothing=smoothing)
    return dict(zip([n for n, _ in net.named_parameters()], torch.autograd.grad(out, list(net.parameters())),
                    strict=True))


def _deviation(got, want) -> float:
    return max(relative_difference(torch.as_tensor(got[n]), w) for n, w in want.items())


@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("layout", ["(batch, classes)", "(batch, classes, time)"])
def test_class_probabilities_give_autograds_gradients_by_every_exact_path(layout, smoothing):
    _, net, x, y = _case(layout)
    want = _autograd(net, x, y, smoothing)
    loss = CrossEntropy(label_smoothing=smoothing) if smoothing else "ce"
    g = pcsim.trace(net, x)
    for rule, run in _EXACT.items():
        assert _deviation(run(g, (x,), y, loss=loss), want) <= tolerance(torch.float64), rule
    tr = pcsim.simulate(g, (x,), y, loss=loss, backend="torch", t_end=4.0, tau_x=1.0, dt=1.0, method="euler",
                        plasticity="zil", record=[])
    assert _deviation(tr.updates, want) <= tolerance(torch.float64)
    report = pcsim.check(net, (x,), y, loss=loss, rule="fa-zil-wavefront")
    assert report.passed and report.max_rel_diff <= tolerance(torch.float64)


def test_label_smoothing_on_class_indices_is_torchs_with_minus_100_left_out():
    _, net, x, _ = _case("(batch, classes, time)")
    y = torch.tensor([[0, 2, -100], [1, 1, 0]])
    want = _autograd(net, x, y, 0.3)
    g = pcsim.trace(net, x)
    for rule, run in _EXACT.items():
        assert _deviation(run(g, (x,), y, loss=CrossEntropy(label_smoothing=0.3)), want) <= tolerance(
            torch.float64), rule


@pytest.mark.parametrize("smoothing", [0.0, 0.4])
def test_the_output_error_is_the_closed_form_and_the_gradient_its_negation_bit_for_bit(smoothing):
    gen = torch.Generator().manual_seed(2)
    mu = 3 * torch.randn(5, 4, generator=gen, dtype=torch.float64)
    p = torch.softmax(torch.randn(5, 4, generator=gen, dtype=torch.float64), dim=1)
    loss = CrossEntropy(label_smoothing=smoothing)
    q = (1 - smoothing) * p + smoothing / 4  # torch's smoothed target
    closed = q - torch.exp(mu) / torch.exp(mu).sum(dim=1, keepdim=True)  # -dL/dmu = q - softmax(mu)
    assert relative_difference(loss.error(mu, p), closed) <= tolerance(torch.float64)
    assert torch.equal(loss.gradient(mu, p), -loss.error(mu, p))
    labels = torch.tensor([3, 0, 2, 2, 1])
    onehot = (1 - smoothing) * torch.eye(4, dtype=torch.float64)[labels] + smoothing / 4
    hard = onehot - torch.exp(mu) / torch.exp(mu).sum(dim=1, keepdim=True)
    assert relative_difference(loss.error(mu, labels), hard) <= tolerance(torch.float64)
    assert torch.equal(loss.gradient(mu, labels), -loss.error(mu, labels))


def test_rows_that_miss_1_by_rounding_keep_torchs_exact_gradient():
    """float32 probabilities checked in float64 sum to 1 within ~1e-7, not 1e-16: accepted, and the gradient is
    autograd's of F.cross_entropy (softmax times the row's sum, minus the row), not softmax - p."""
    gen = torch.Generator().manual_seed(4)
    mu = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    p = torch.softmax(torch.randn(5, 7, generator=gen), dim=1).double() * (1 + 3e-6)
    leaf = mu.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(F.cross_entropy(leaf, p, reduction="sum"), leaf)
    assert relative_difference(CrossEntropy().gradient(mu, p), want) <= tolerance(torch.float64)


@pytest.mark.parametrize("lr", [0.0, 0.01])
def test_il_and_ipc_on_class_probabilities_are_plain_pcs(lr):
    seq, _, x, y = _case("(batch, classes)")
    want, _, _ = plain_pc.il(seq, x, y, "ce", gamma=0.1, steps=8, lr=lr)
    g = pcsim.trace(seq, x)
    got = (pcsim.ipc(g, (x,), y, loss="ce", gamma=0.1, steps=8, lr=lr) if lr
           else pcsim.il(g, (x,), y, loss="ce", gamma=0.1, steps=8))
    assert _deviation(got, want) <= tolerance(torch.float64)


def _refused(y, match):
    seq, net, x, _ = _case("(batch, classes, time)")
    with pytest.raises(pcsim.InputError, match=match):
        pcsim.zil(pcsim.trace(net, x), (x,), y, loss="ce")


def test_probabilities_that_are_no_distribution_are_refused_by_entry():
    """F.cross_entropy takes all of these silently (NaN updates, or a loss of no distribution)."""
    _, _, _, y = _case("(batch, classes, time)")
    bad = y.clone()
    bad[1, 2, 0] = float("nan")
    _refused(bad, r"\(class probabilities\) has a non-finite entry, nan at \(1, 2, 0\)")
    bad = y.clone()
    bad[0, 1, 2] = -0.25
    _refused(bad, r"has a negative entry, -0.25 at \(0, 1, 2\)")
    bad = y.clone()
    bad[1, :, 2] *= 100  # percentages
    _refused(bad, r"has row \[1, :, 2\] summing to 100, not 1 .*y / y.sum\(dim=1, keepdim=True\)")
    _refused(y[:, :, :2], r"has shape \(2, 3, 2\): 'ce' on logits of shape \(2, 3, 3\) takes class probabilities "
                          r"of that same shape, or integer class indices of shape \(2, 3\)")
    _refused(y.argmax(dim=1).double(), r"is torch.float64 of shape \(2, 3\), the shape of class indices: 'ce' takes "
                                       r"indices as integers \(target.long\(\)\), or class probabilities of the "
                                       r"logits' shape \(2, 3, 3\)")
    _refused(y > 0.5, r"needs integer class indices or floating class probabilities, got torch.bool")
    with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\], got 1.5"):
        CrossEntropy(label_smoothing=1.5)


@pytest.mark.slow
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_brian2_shows_the_class_distribution(smoothing):
    from tests.backends.brian2_oracle import check_zil_on_brian2

    _, net, x, y = _case("(batch, classes)")
    check_zil_on_brian2(net, (x,), y, CrossEntropy(label_smoothing=smoothing))
    if smoothing:
        check_zil_on_brian2(net, (x,), torch.tensor([2, 0, 1, 1, 0, 2]), CrossEntropy(label_smoothing=smoothing))
