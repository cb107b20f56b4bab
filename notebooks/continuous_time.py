# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Continuous time, and the discretisation that gives Z-IL
#
# Every latent vertex of a traced network is a **value population** `x` and an **error population**
# `eps`. In continuous time they obey
#
# - `tau_x dx/dt = -eps + sum_children J^T eps_child`,
# - `eps = x - mu` (instantaneous errors; leaky ones obey `tau_e deps/dt = x - mu - eps`),
# - plasticity `tau_w dtheta/dt = gate(t) (dmu/dtheta)^T eps`.
#
# The network starts at its feed-forward state (all errors zero); at `t_on` the target is shown and an
# error wave travels down the hierarchy. This notebook integrates that with scipy (and Brian2 when it is
# installed), then shows that explicit Euler is the discrete algorithm: with `dt / tau_x = gamma` it is IL
# step for step, and with `dt = tau_x`, instantaneous errors, a feed-forward start, a levelled graph and
# plasticity gated at each vertex's level it is Z-IL, whose updates are backprop's gradients.
# (`notebooks/NAME.ipynb` is this file executed; `make notebooks` rewrites it.)

# %%
# %matplotlib inline
import os
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

import pcsim
from pcsim.check import autograd_gradients
from pcsim.numerics import relative_difference, tolerance

SMALL = os.environ.get("PCSIM_NOTEBOOK_SMALL") == "1"  # the test suite runs notebooks small
TOL = tolerance(torch.float64)
torch.manual_seed(0)
width = 6 if SMALL else 16
net = nn.Sequential(OrderedDict([
    ("fc1", nn.Linear(5, width)), ("tanh1", nn.Tanh()),
    ("fc2", nn.Linear(width, width)), ("tanh2", nn.Tanh()),
    ("fc3", nn.Linear(width, width)), ("tanh3", nn.Tanh()),
    ("fc4", nn.Linear(width, 3)),
])).double()
x, y = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
graph = pcsim.trace(net, x)
print(graph.summary())

# %% [markdown]
# ## 1. The error wave after target onset (scipy)
#
# `dist` above is each vertex's distance to the output. The target appears at `t_on`; the output's
# error jumps at once, and each layer further from the output starts to move later.

# %%
tau_x, t_on, t_end = 0.2, 0.5, (1.5 if SMALL else 3.0)
layers = ["fc1", "fc2", "fc3", "fc4"]
times = np.linspace(0.0, t_end, int(round(t_end / 0.01)) + 1)
scipy_run = pcsim.simulate(graph, (x,), y, backend="scipy", method="RK45", t_end=t_end, t_on=t_on, tau_x=tau_x,
                           rtol=1e-8, atol=1e-10, record={"populations": layers, "times": times})
onsets = []
print(f"{'layer':6} {'distance':>8} {'error before onset':>19} {'error reaches 5% of its peak at t_on +':>40}")
for name in layers:
    size = np.abs(scipy_run.errors[name]).reshape(len(scipy_run.t), -1).max(axis=1)
    before = size[scipy_run.t < t_on].max()
    onset = scipy_run.t[np.argmax(size > 0.05 * size.max())] - t_on
    print(f"{name:6} {graph.min_distance[name]:>8} {before:>19.1e} {onset:>40.3f}")
    assert before == 0.0  # the feed-forward state is a fixed point until the target appears
    onsets.append(onset)
assert onsets == sorted(onsets, reverse=True)  # the wave reaches the layers further from the output later

# %% [markdown]
# ## The same populations on Brian2
#
# The Brian2 backend renders these equations as `NeuronGroup`s and `Synapses` and integrates them with
# explicit Euler on Brian2's clock; its distance to scipy's RK45 is Euler's first-order error.

# %%
runs = {"scipy RK45": scipy_run}
try:
    import brian2  # noqa: F401
except ImportError:
    print("Brian2 is not installed: skipping its run (`make install` puts it in .venv)")
else:
    b2_dt = 0.02 if SMALL else 0.005
    b2_times = np.linspace(0.0, t_end, int(round(t_end / b2_dt)) + 1)
    runs["Brian2 Euler"] = pcsim.simulate(graph, (x,), y, backend="brian2", method="euler", dt=b2_dt, t_end=t_end,
                                          t_on=t_on, tau_x=tau_x, codegen_target="numpy",
                                          record={"populations": layers, "times": b2_times})
    b2 = runs["Brian2 Euler"]
    after = b2.t > t_on + b2_dt
    for name in layers:
        reference = np.stack([np.interp(b2.t, scipy_run.t, col)
                              for col in scipy_run.values[name].reshape(len(scipy_run.t), -1).T], axis=1)
        gap = np.abs(b2.values[name].reshape(len(b2.t), -1) - reference)[after].max()
        print(f"{name}: Brian2 Euler (dt = {b2_dt}) vs scipy RK45, largest value difference {gap:.1e}")
        assert gap < 0.5 * b2_dt  # Euler's first-order error (tests/backends/test_brian2.py checks the order)

# %%
from pcsim.plots.demo import plot_backends  # noqa: E402  (matplotlib only when plotting)

figure = plot_backends(runs, layers)
figure  # noqa: B018 - the last expression of a cell is shown in Jupyter

# %% [markdown]
# ## 2. Explicit Euler with `dt / tau_x = gamma` is IL
#
# One Euler step of the value populations, with instantaneous errors, is one synchronous inference step
# of size `gamma = dt / tau_x`. IL takes its single weight update from the state after `T` steps; a
# plasticity gate open only during step `T`, with `tau_w = dt`, accumulates exactly that update.

# %%
gamma, T = 0.1, (10 if SMALL else 40)
dt = gamma * tau_x
print(pcsim.discretise(tau_x=tau_x, dt=dt, plasticity="off").note)
euler = pcsim.simulate(graph, (x,), y, backend="scipy", method="euler", dt=dt, tau_x=tau_x, tau_w=dt,
                       t_end=(T + 1) * dt, plasticity=lambda vertex, t: abs(t - T * dt) < dt / 2, record=[])
il = pcsim.il(graph, (x,), y, gamma=gamma, steps=T)
worst = max(relative_difference(torch.as_tensor(euler.updates[k]), il[k]) for k in il)
print(f"Euler (dt = {dt:g}, gate at step {T}) vs pcsim.il(gamma={gamma}, steps={T}): "
      f"largest relative deviation {worst:.1e}")
assert worst < TOL

# %% [markdown]
# ## 3. `dt = tau_x` with Z-IL gates is Z-IL, and Z-IL is backprop
#
# With `gamma = 1` (C3), a feed-forward start (C1, the state before onset) and the plasticity of a vertex
# at distance `d` open only during step `d` (C2), the accumulated plasticity equals the gradient. The
# oracle is torch autograd on the module itself.

# %%
plan = pcsim.discretise(tau_x=tau_x, dt=tau_x, plasticity="zil")
print(plan.note)
zil_run = pcsim.simulate(graph, (x,), y, backend="scipy", method="euler", dt=tau_x, tau_x=tau_x,
                         t_end=(plan.update_step(graph.depth) + 1) * tau_x, plasticity="zil", record=[])
reference = autograd_gradients(net, (x,), y, "mse")
print(f"{'parameter':12} {'distance':>8} {'||Euler - autograd|| / ||autograd||':>38}")
for name, grad in reference.items():
    rel = relative_difference(torch.as_tensor(zil_run.updates[name]), grad)
    print(f"{name:12} {graph.min_distance[name.split('.')[0]]:>8} {rel:>38.1e}")
    assert rel < TOL
zil = pcsim.zil(graph, (x,), y)
same = max(relative_difference(torch.as_tensor(zil_run.updates[k]), zil[k]) for k in zil)
print(f"and the discrete algorithm pcsim.zil gives the same updates: {same:.1e}")
assert same < TOL

# %% [markdown]
# Without C3 (`dt = tau_x / 2`, so `gamma = 0.5`) each update is BP's scaled by `gamma^d`, exactly
# (with `tau_w = dt`, so the gate integrates one step of the Hebbian term):

# %%
half = 0.5 * tau_x
print(pcsim.discretise(tau_x=tau_x, dt=half, plasticity="zil").note)
scaled = pcsim.simulate(graph, (x,), y, backend="scipy", method="euler", dt=half, tau_x=tau_x, tau_w=half,
                        t_end=(graph.depth + 2) * half, plasticity="zil", record=[])
for name, grad in reference.items():
    d = graph.min_distance[name.split(".")[0]]
    ratio = float(torch.as_tensor(scaled.updates[name]).norm() / grad.norm())
    print(f"{name:12} d = {d}: ||update|| / ||BP|| = {ratio:.6f}, 0.5^d = {0.5 ** d:.6f}")
    assert relative_difference(torch.as_tensor(scaled.updates[name]), 0.5 ** d * grad) < TOL

# %% [markdown]
# ## 4. Skip connections need a levelled graph
#
# Z-IL's schedule assumes every path from a vertex to the output has the same length. A residual
# connection breaks that: the skipped path's error arrives earlier than the long path's. `level()`
# inserts identity vertices on the short path, after which the same Euler run is exact again.

# %%
class ResidualMLP(nn.Module):
    def __init__(self, n_in=5, width=width, n_out=3):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(n_in, width), nn.Linear(width, width), nn.Linear(width, n_out)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        return self.fc3(h + torch.tanh(self.fc2(h)))  # the skip: h reaches the sum directly and through fc2


residual = ResidualMLP().double()
traced = pcsim.trace(residual, x)
levelled = traced.level()
print(f"as traced: levelled = {traced.is_levelled}; level() adds {levelled.n_identity} identity vertices")
reference = autograd_gradients(residual, (x,), y, "mse")
for label, g in (("as traced", traced), ("levelled", levelled)):
    run = pcsim.simulate(g, (x,), y, backend="scipy", method="euler", dt=tau_x, tau_x=tau_x,
                         t_end=(g.depth + 2) * tau_x, plasticity="zil", record=[])
    worst = max(relative_difference(torch.as_tensor(run.updates[k]), reference[k]) for k in reference)
    print(f"Euler Z-IL on the graph {label}: largest relative deviation from autograd {worst:.1e}")
assert worst < TOL

# %% [markdown]
# Leaky error neurons with `tau_e = dt` are still exact: errors lag values by one step, so the wave
# reaches level `d` at step `2d + 1`, and the `"zil"` gates follow that shift.

# %%
leaky = pcsim.discretise(tau_x=tau_x, dt=tau_x, tau_e=tau_x, plasticity="zil")
print(leaky.note)
run = pcsim.simulate(levelled, (x,), y, backend="scipy", method="euler", dt=tau_x, tau_x=tau_x, tau_e=tau_x,
                     t_end=(leaky.update_step(levelled.depth) + 1) * tau_x, plasticity="zil", record=[])
worst = max(relative_difference(torch.as_tensor(run.updates[k]), reference[k]) for k in reference)
print(f"leaky errors, gates at 2d + 1: largest relative deviation from autograd {worst:.1e}")
assert worst < TOL
