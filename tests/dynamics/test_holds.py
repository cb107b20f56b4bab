"""What a held population does, written out by hand: from its hold (the end of its Z-IL window) its value stands
still and its error is zero, leaky or instantaneous, so it feeds its parents nothing. Every backend and solver
runs that one ODE.

Oracle: the PC equations of a three-layer tanh MLP written in numpy (values, leaky errors at tau_e, the clamped
output's leaky error), integrated by a hand-written Euler loop and by scipy's solve_ivp (DOP853) piece by piece
between the holds; the hold of a vertex at level d is the end of its window, step 2d + 2 after the onset, less
the schedule's SLACK (leaky errors: the wave reaches level d at step 2d + 1). Updates: torch autograd on the
module.
"""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import pcsim
from pcsim.algorithms.schedule import SLACK
from pcsim.numerics import tolerance

DT = TAU = 0.1  # dt = tau_x = tau_e: Z-IL's discretisation with leaky errors
LEVELS = [4, 3, 2, 1]  # l1, tanh, l2, tanh_1 (the output l3 is level 0 and never holds)
# a window closes SLACK of a step early, so a time on the grid is read inside the next regime
HOLDS = [(2 * d + 2 - SLACK) * DT for d in LEVELS]


def _mlp():
    gen = torch.Generator().manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4), torch.nn.Tanh(),
                                 torch.nn.Linear(4, 2)).double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    x = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    return module, x, 3 * torch.randn(2, 2, generator=gen, dtype=torch.float64)


class HandWritten:
    """tau_x dx/dt = -e + J^T e_child, tau_e de/dt = x - mu - e; held: dx/dt = de/dt = 0 and e read as zero."""

    def __init__(self, module, x, y):
        (w1, b1), (w2, b2), (w3, b3) = [(m.weight.detach().numpy(), m.bias.detach().numpy())
                                        for m in module if isinstance(m, torch.nn.Linear)]
        self.w1, self.b1, self.w2, self.b2, self.w3, self.b3 = w1, b1, w2, b2, w3, b3
        self.x, self.y = x.numpy(), y.numpy()
        a1 = self.x @ w1.T + b1
        a2 = np.tanh(a1) @ w2.T + b2
        self.ff = [a1, np.tanh(a1), a2, np.tanh(a2)]
        self.n = a1.size

    def holds(self, t):
        return [t >= h for h in HOLDS]

    def f(self, t, v):
        k = 4 * self.n
        xs = [v[i * self.n:(i + 1) * self.n].reshape(2, 4) for i in range(4)]
        es = [v[k + i * self.n:k + (i + 1) * self.n].reshape(2, 4) for i in range(4)]
        eo = v[2 * k:].reshape(2, 2)
        held = self.holds(t)
        a1, h1, a2, h2 = xs
        mu = [self.x @ self.w1.T + self.b1, np.tanh(a1), h1 @ self.w2.T + self.b2, np.tanh(a2)]
        read = [np.zeros_like(e) if h else e for e, h in zip(es, held, strict=True)]
        fb = [(1 - np.tanh(a1) ** 2) * read[1], read[2] @ self.w2, (1 - np.tanh(a2) ** 2) * read[3], eo @ self.w3]
        dx = [0 * x if h else (f - e) / TAU for x, e, f, h in zip(xs, read, fb, held, strict=True)]
        de = [0 * e if h else (x - m - e) / TAU for x, m, e, h in zip(xs, mu, es, held, strict=True)]
        deo = (self.y - (h2 @ self.w3.T + self.b3) - eo) / TAU  # MSE: -dL/dmu, shown from t = 0
        return np.concatenate([a.ravel() for a in dx + de] + [deo.ravel()])

    def start(self):
        return np.concatenate([a.ravel() for a in self.ff] + [np.zeros(4 * self.n + 4)])

    def euler(self, steps):
        out = [self.start()]
        for k in range(steps):
            out.append(out[-1] + DT * self.f(k * DT, out[-1]))
        return np.array(out)

    def values(self, path, i):
        return path[:, i * self.n:(i + 1) * self.n].reshape(-1, 2, 4)

    def errors(self, path, times, i):
        e = path[:, (4 + i) * self.n:(5 + i) * self.n].reshape(-1, 2, 4).copy()
        e[[self.holds(t)[i] for t in times]] = 0.0  # read as zero once held
        return e


def _compare(tr, oracle, path, graph, scale_tol):
    for i, name in enumerate(graph.latent[:4]):
        ref = oracle.values(path, i)
        assert np.abs(tr.values[name] - ref).max() <= scale_tol * max(1.0, np.abs(ref).max()), name
        ref_e = oracle.errors(path, tr.t, i)
        assert np.abs(tr.errors[name] - ref_e).max() <= scale_tol * max(1.0, np.abs(ref_e).max()), name


def _updates_are_autograd(tr, module, x, y):
    module.zero_grad()
    (0.5 * ((module(x) - y) ** 2).sum()).backward()
    for (name, p) in module.named_parameters():
        assert np.abs(tr.updates[name] - p.grad.numpy()).max() <= 10 * tolerance(torch.float64) * \
            max(1.0, p.grad.abs().max().item()), name


BACKENDS = [("torch", {}), ("scipy", {"method": "euler"}), ("brian2", {"codegen_target": "numpy"})]


@pytest.mark.parametrize("backend,options", BACKENDS, ids=[b for b, _ in BACKENDS])
def test_euler_runs_the_hand_written_held_equations(backend, options):
    """30 steps, 20 of them after the first hold: a held leaky error fed its parents through their Jacobian
    (4.0 relative off the hand-written values on torch and scipy, the Jacobian of an earlier state) or
    (Brian2) at their current values."""
    if backend == "brian2":
        pytest.importorskip("brian2")
    module, x, y = _mlp()
    graph = pcsim.trace(module, x)
    oracle = HandWritten(module, x, y)
    tr = pcsim.simulate(graph, (x,), y, backend=backend, dt=DT, t_end=30 * DT, tau_x=TAU, tau_e=TAU,
                        plasticity="zil", record=pcsim.Record(every_step=True), **options)
    _compare(tr, oracle, oracle.euler(30), graph, 100 * tolerance(torch.float64))
    _updates_are_autograd(tr, module, x, y)


def test_an_adaptive_solver_runs_the_hand_written_held_equations():
    """scipy's DOP853 against solve_ivp on the hand-written field, each piece between holds solved on its own."""
    module, x, y = _mlp()
    graph = pcsim.trace(module, x)
    oracle = HandWritten(module, x, y)
    t_end, times = 2.0, np.linspace(0.0, 2.0, 21)  # no record time on a hold (those are off the grid)
    tr = pcsim.simulate(graph, (x,), y, solver=pcsim.Scipy("DOP853", rtol=1e-11, atol=1e-12), t_end=t_end,
                        tau_x=TAU, tau_e=TAU, plasticity=pcsim.dynamics.Windows(
                            pcsim.Schedule.of(graph.level(), True), t_on=0.0, width=DT),
                        record=pcsim.Record(times=tuple(times)))
    edges = [0.0, *sorted(HOLDS), t_end]
    v, path = oracle.start(), [oracle.start()]
    for a, b in zip(edges, edges[1:], strict=False):
        mid = 0.5 * (a + b)  # the regime inside the piece
        inside = [t for t in times if a < t < b]
        sol = solve_ivp(lambda t, s, mid=mid: oracle.f(mid, s), (a, b), v, method="DOP853", rtol=1e-12,
                        atol=1e-13, t_eval=[*inside, b])
        path += list(sol.y.T[:len(inside)]) + ([sol.y[:, -1]] if b == t_end else [])
        v = sol.y[:, -1]  # the state at b, where the next piece starts
    _compare(tr, oracle, np.array(path), graph, 1e-8)
