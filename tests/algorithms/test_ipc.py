"""iPC (pcsim/algorithms/ipc.py) against a literal energy descent written with autograd.

The oracle: F(x, theta) = sum over hidden layers of 1/2 ||x_i - mu_i||^2 + L(mu_out, y); each step
takes dF/dx and dF/dtheta at the same state by autograd, then x -= gamma dF/dx, theta -= lr dF/dtheta.
On other architectures the oracle is the literal sweep with the weights moving between steps.
"""

import pytest
import torch
from torch import nn

import pcsim
from pcsim.algorithms.problem import Problem
from pcsim.numerics import relative_difference, rounding_floor, tolerance
from tests.algorithms.sweep_reference import SweepState, advance_values, sweep
from tests.equivalence.archs import ARCHS
from tests.graph.helpers import seeded

DT = torch.float64
TOL = tolerance(DT)


def _mlp():
    with seeded(0):
        net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(DT)
        x, y = torch.randn(7, 4, dtype=DT), torch.randn(7, 3, dtype=DT)
    return net, x, y


def _literal_ipc(net, x, y, gamma, steps, lr, late=False):
    """The three layers' values h1 = W1 x + b1, a1 = tanh h1, h2, a2 (populations, as pcsim traces them)."""
    theta = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    w1, b1, w2, b2, w3, b3 = theta

    def predictions(xs, th):
        w1, b1, w2, b2, w3, b3 = th
        h1, a1, h2, a2 = xs
        return [x @ w1.T + b1, torch.tanh(h1), a1 @ w2.T + b2, torch.tanh(h2)], a2 @ w3.T + b3

    with torch.no_grad():
        h1 = x @ w1.T + b1
        a1 = torch.tanh(h1)
        h2 = a1 @ w2.T + b2
        a2 = torch.tanh(h2)
    xs = [t.clone().requires_grad_(True) for t in (h1, a1, h2, a2)]
    for _ in range(steps):
        mus, out = predictions(xs, theta)
        energy = sum(0.5 * ((v - m) ** 2).sum() for v, m in zip(xs, mus, strict=True)) + 0.5 * ((out - y) ** 2).sum()
        gx = torch.autograd.grad(energy, xs + theta)
        with torch.no_grad():
            new_xs = [(v - gamma * g).requires_grad_(True) for v, g in zip(xs, gx[:4], strict=True)]
        gth = gx[4:]
        if late:  # the mutation: the weights step from the gradient at the *new* values
            mus, out = predictions(new_xs, theta)
            energy = (sum(0.5 * ((v - m) ** 2).sum() for v, m in zip(new_xs, mus, strict=True))
                      + 0.5 * ((out - y) ** 2).sum())
            gth = torch.autograd.grad(energy, theta)
        with torch.no_grad():
            theta = [(p - lr * g).requires_grad_(True) for p, g in zip(theta, gth, strict=True)]
        xs = new_xs
    names = [n for n, _ in net.named_parameters()]
    return {n: (p.detach() - t.detach()) / (lr * steps) for n, p, t in zip(names, net.parameters(), theta, strict=True)}


@pytest.mark.parametrize(("gamma", "steps", "lr"), [(0.1, 20, 0.01), (0.5, 7, 0.1)])
def test_ipc_is_the_literal_energy_descent(gamma, steps, lr):
    net, x, y = _mlp()
    graph = pcsim.trace(net, x)
    got = pcsim.ipc(graph, (x,), y, gamma=gamma, steps=steps, lr=lr)
    want = _literal_ipc(net, x, y, gamma, steps, lr)
    for n, w in want.items():
        assert relative_difference(got[n], w) <= TOL, n


def test_weights_stepping_from_the_next_state_is_caught():
    net, x, y = _mlp()
    graph = pcsim.trace(net, x)
    got = pcsim.ipc(graph, (x,), y, gamma=0.5, steps=7, lr=0.1)
    late = _literal_ipc(net, x, y, 0.5, 7, 0.1, late=True)
    assert max(relative_difference(got[n], w) for n, w in late.items()) > 1e-6


def test_one_step_moves_the_last_layer_as_backprop_and_leaves_the_module_alone():
    """From the feed-forward start only the output has an error: one step moves the last layer by BP's
    gradient and nothing else (the hidden errors are still zero); `check` runs iPC as an approximate rule."""
    net, x, y = _mlp()
    before = [p.detach().clone() for p in net.parameters()]
    report = pcsim.check(net, (x,), y, rule="ipc", steps=1)
    assert not report.passed
    assert report.per_param["4.weight"].rel <= TOL and report.per_param["4.bias"].rel <= TOL
    assert all(not bool(report.grads[n].any()) for n in ("0.weight", "0.bias", "2.weight", "2.bias"))
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))


def test_bad_settings_are_refused():
    net, x, y = _mlp()
    graph = pcsim.trace(net, x)
    with pytest.raises(ValueError, match="lr"):
        pcsim.ipc(graph, (x,), y, lr=0.0)
    with pytest.raises(ValueError, match="steps"):
        pcsim.ipc(graph, (x,), y, steps=0)
    # before: a DivergenceError blaming gamma, and a TypeError from inside range()
    with pytest.raises(ValueError, match="lr must be > 0 and finite, got inf"):
        pcsim.ipc(graph, (x,), y, lr=float("inf"))
    with pytest.raises(ValueError, match="steps must be an integer, got 2.5"):
        pcsim.ipc(graph, (x,), y, steps=2.5)


def _literal_sweep_ipc(graph, inputs, target, loss, gamma, steps, lr):
    """iPC on the literal sweep: every vertex linearised at every step with the current weights."""
    problem = Problem.build(graph, inputs, target, loss)
    start = {n: p.detach() for n, p in problem.params.items()}
    weights, state = dict(start), SweepState.feedforward(problem)
    for _ in range(steps):
        s = sweep(problem, state, params=weights)
        state = advance_values(problem, state, s, gamma)
        for terms in s.hebbian.values():
            for p, h in terms.items():
                weights[p] = weights[p] + lr * h
    return {n: (start[n] - weights[n]) / (lr * steps) for n in graph.params}


@pytest.mark.parametrize("arch", ["mlp_sigmoid_nobias", "residual_block", "cnn_pools", "rnn_shared", "gru",
                                  "lstm", "attention", "embedding_mlp"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_ipc_is_the_literal_sweep_with_moving_weights(arch, loss):
    """Every op kind, shared weights included, against the literal loop (the Hebbian terms of all
    vertices from one state, then values and weights move)."""
    module, inputs, target = ARCHS[arch](DT, loss)
    graph = pcsim.trace(module, *inputs)
    got = pcsim.ipc(graph, inputs, target, loss, gamma=0.2, steps=6, lr=0.05)
    want = _literal_sweep_ipc(graph, inputs, target, loss, 0.2, 6, 0.05)
    floor = rounding_floor(max(float(w.abs().max()) for w in want.values()), DT)
    for n, w in want.items():
        assert relative_difference(got[n], w, floor) <= TOL, n
