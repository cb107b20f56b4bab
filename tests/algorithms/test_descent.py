"""IL's and iPC's inference descends the energy (pcsim/algorithms/descent.py): a run that climbed it is refused.

Oracle: PC written from its equations in plain torch (tests/algorithms/plain_pc.py) and autograd on the module.
"""

import re

import pytest
import torch
from torch import nn

import pcsim
from pcsim.numerics import relative_difference, tolerance
from tests.algorithms import plain_pc
from tests.graph.helpers import seeded

DT = torch.float64


def _net(seed=0):
    with seeded(seed):
        seq = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 3)).to(DT)
        x, y = torch.randn(3, 4, dtype=DT), torch.randn(3, 3, dtype=DT)
    return seq, x, y


def _autograd(seq, x, y):
    loss = 0.5 * ((seq(x) - y) ** 2).sum()
    return dict(zip(dict(seq.named_parameters()), torch.autograd.grad(loss, list(seq.parameters())), strict=True))


def _far(got, ref):
    return max(relative_difference(got[n], ref[n]) for n in ref)


@pytest.mark.parametrize(("loss", "gamma", "steps", "precision"),
                         [("mse", 0.3, 20, 1.0), ("mse", 0.2, 10, 0.1), ("ce", 0.3, 20, 1.0), ("ce", 0.2, 10, 0.1)])
def test_il_equals_plain_pc_written_from_its_equations(loss, gamma, steps, precision):
    seq, x, y = _net()
    y = y if loss == "mse" else torch.tensor([0, 2, 1])
    graph = pcsim.trace(seq, x)
    ref, f0, f1 = plain_pc.il(seq, x, y, loss, gamma, steps, precision)
    assert f1 < f0  # a stable rate: the inference descended
    got = pcsim.il(graph, (x,), y, loss, gamma=gamma, steps=steps, output_precision=precision)
    assert _far(got, ref) <= tolerance(DT)
    fixed = pcsim.il(graph, (x,), y, loss, gamma=gamma, steps=steps, fixed_prediction=True)
    assert _far(fixed, plain_pc.il_fixed_prediction(seq, x, y, loss, gamma, steps)) <= tolerance(DT)
    ipc = pcsim.ipc(graph, (x,), y, loss, gamma=gamma, steps=steps, lr=0.05)
    assert _far(ipc, plain_pc.il(seq, x, y, loss, gamma, steps, lr=0.05)[0]) <= tolerance(DT)


def test_il_that_climbed_the_energy_is_refused():
    """gamma = 1 is past this MLP's stable rate: the plain oracle's energy rises from 4.3 to 295 in 10 steps and its
    update is 380 times autograd's gradient away from it. Before, pcsim.il returned that update without a word."""
    seq, x, y = _net()
    graph = pcsim.trace(seq, x)
    ref, f0, f1 = plain_pc.il(seq, x, y, "mse", 1.0, 10)
    assert f1 > 10 * f0 and _far(ref, _autograd(seq, x, y)) > 100
    with pytest.raises(pcsim.DivergenceError, match=rf"IL diverged at gamma = 1.0: .* rose from {f0:.4g} at the "
                                                    r"feed-forward state to at least .* after 10 steps .*vertex"):
        pcsim.il(graph, (x,), y, gamma=1.0, steps=10)
    # the same network at a stable rate runs, and is the oracle's
    ref, f0, f1 = plain_pc.il(seq, x, y, "mse", 0.3, 10)
    assert f1 < f0 and _far(pcsim.il(graph, (x,), y, gamma=0.3, steps=10), ref) <= tolerance(DT)


def test_ipc_that_climbed_the_energy_is_refused():
    seq, x, y = _net()
    graph = pcsim.trace(seq, x)
    _, f0, f1 = plain_pc.il(seq, x, y, "mse", 1.0, 10, lr=0.2)
    assert f1 > 10 * f0  # before: iPC's mean update there was returned (finite)
    with pytest.raises(pcsim.DivergenceError, match=rf"iPC diverged at gamma = 1.0: .* rose from {f0:.4g} at the "
                                                    f"feed-forward state to {re.escape(f'{f1:.4g}')} after 10 steps"):
        pcsim.ipc(graph, (x,), y, gamma=1.0, steps=10, lr=0.2)


@pytest.mark.parametrize(("steps", "lr", "gammas", "finding"), [
    (3, 0.4, (0.1, 0.01), r"its inference descends the energy, which rose from"),  # a finite climb
    (10, 1.0, (0.1, 0.01), r"at step \d+ the error of vertex .* the first to leave finite values"),  # errors: NaN
    (9, 0.62, (0.1,), r"its update of '4.weight' is not finite while every error stayed finite"),  # weights: inf
])
def test_ipc_diverging_by_its_weights_names_lr_not_gamma(steps, lr, gammas, finding):
    """iPC that diverged through its weights' rate is blamed on lr. The message said 'try a smaller gamma' (or, where
    the weights overflowed at the last step, that 'the Hebbian term overflowed'), and no smaller gamma ever cured it:
    on a CNN with a LayerNorm (found against PCX's iPC, which climbed alike), gamma 0.05, 0.01 and 0.001 at lr 0.02
    were all refused, and lr 0.002 ran. Oracle: plain_pc's iPC climbs or leaves finite values at gamma and at a tenth
    of it, while its values alone (lr = 0, IL) descend the energy at both."""
    seq, x, y = _net()
    graph = pcsim.trace(seq, x)
    for gamma in gammas:
        _, f0, f_ipc = plain_pc.il(seq, x, y, "mse", gamma, steps, lr=lr)
        _, _, f_il = plain_pc.il(seq, x, y, "mse", gamma, steps)
        assert not f_ipc <= f0 and f_il < f0  # the weights climb (or overflow); the values alone descend
        with pytest.raises(pcsim.DivergenceError, match=rf"^iPC diverged at lr = {lr} \(gamma = {gamma}\): "
                                                        rf"{finding}.* try a smaller lr$") as info:
            pcsim.ipc(graph, (x,), y, gamma=gamma, steps=steps, lr=lr)
        assert "smaller gamma" not in str(info.value)
    # with a stable lr it runs, and is the oracle's iPC
    ref = plain_pc.il(seq, x, y, "mse", 0.1, steps, lr=0.05)[0]
    assert _far(pcsim.ipc(graph, (x,), y, gamma=0.1, steps=steps, lr=0.05), ref) <= tolerance(DT)


@pytest.mark.parametrize("gamma", [2.0, 2.5])
def test_fixed_prediction_refuses_a_rate_at_which_it_never_settles(gamma):
    """Each error steps as e <- (1 - gamma) e + gamma drive: at gamma >= 2 it never reaches BP's error. Before, IL
    returned the oracle's update, 1e5 and more times autograd's gradient away from it, without a word."""
    seq, x, y = _net()
    graph = pcsim.trace(seq, x)
    assert _far(plain_pc.il_fixed_prediction(seq, x, y, "mse", gamma, 40), _autograd(seq, x, y)) > 1e3
    with pytest.raises(ValueError, match=rf"gamma must be < 2 with fixed_prediction, got {gamma}"):
        pcsim.il(graph, (x,), y, gamma=gamma, steps=40, fixed_prediction=True)
    # below, it converges to autograd's gradient
    near = pcsim.il(graph, (x,), y, gamma=1.5, steps=200, fixed_prediction=True)
    assert _far(near, _autograd(seq, x, y)) <= tolerance(DT)
