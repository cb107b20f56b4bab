# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Extend the Brian2 network pcsim builds
#
# The Brian2 backend renders a traced network as real Brian2 objects: a `NeuronGroup` per latent
# vertex (value `x`, error `err`, one neuron per batch element and feature) and a `Synapses` per edge
# carrying the prediction forward and the error back, with plasticity as synaptic state. Those objects
# are yours to extend: `pcsim.Brian2(dt, on_build=f)` calls `f(built)` after pcsim has made them and
# before it runs them. Whatever `f` adds to `built.network` (a monitor, a noise operation, more neurons)
# runs with them, and pcsim still reads its own populations back into the trajectory.
# (`notebooks/NAME.ipynb` is this file executed; `make notebooks` rewrites it.)

# %%
# %matplotlib inline
import os

import brian2 as b2
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

import pcsim

SMALL = os.environ.get("PCSIM_NOTEBOOK_SMALL") == "1"  # the test suite runs notebooks small
torch.manual_seed(0)
width = 4 if SMALL else 8
net = nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 2)).double()
x, y = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
graph = pcsim.trace(net, x)
print(graph.summary())

# %% [markdown]
# ## The objects pcsim builds
#
# The hook receives a `Built`: `.network` (the Brian2 `Network`), `.groups` (vertex name ->
# `NeuronGroup`), `.synapses` ((projection, `Synapses`) pairs) and `.clock`. This one only looks.

# %%
def inspect(built):
    print(f"{'vertex':7} {'NeuronGroup':12} {'neurons':>7}  variables")
    for vertex, group in built.groups.items():
        variables = [v for v in group.variables if v not in ("N", "i", "t", "dt", "t_in_timesteps")]
        print(f"{vertex:7} {group.name:12} {group.N:>7}  {', '.join(variables)}")
    print(f"\n{'Synapses':10} {'from':>10} {'to':>8} {'synapses':>9}")
    for _, synapses in built.synapses:
        print(f"{synapses.name:10} {synapses.source.name:>10} {synapses.target.name:>8} {len(synapses):>9}")
    print("\nthe equations of vertex '2' (the second linear layer):")
    print(built.groups["2"].equations)


tau = 0.2
_ = pcsim.simulate(graph, (x,), y, solver=pcsim.Brian2(tau, on_build=inspect), tau_x=tau, t_end=tau, record=[])

# %% [markdown]
# ## A monitor of your own: the error wave, step by step
#
# A `StateMonitor` on every error population, recording at each step in the same slot as pcsim's own
# monitors (after the summed variables, before the groups update: the state of step k). Before the wave
# arrives an error is zero up to the rounding of Brian2's own predictions. The run is Z-IL (`dt = tau_x`,
# plasticity gated at each vertex's level), and its updates are still backprop's.

# %%
monitors = {}


def monitor_errors(built):
    for vertex, group in built.groups.items():
        if vertex in graph.latent:
            monitors[vertex] = b2.StateMonitor(group, "err", record=True, clock=built.clock, when="before_groups",
                                               order=3, name=f"my_{group.name}")
            built.network.add(monitors[vertex])


run = pcsim.simulate(graph, (x,), y, solver=pcsim.Brian2(tau, on_build=monitor_errors), tau_x=tau,
                     t_end=(graph.depth + 2) * tau, plasticity="zil", record=[])
reference = pcsim.bp(graph, (x,), y)
exact = max(float((torch.as_tensor(run.updates[k]) - reference[k]).norm() / reference[k].norm()) for k in reference)
print(f"Z-IL on Brian2 with the extra monitors vs BP: largest relative deviation {exact:.1e}")
assert exact < 1e-10

steps = np.rint(np.asarray(monitors["0"].t_) / tau).astype(int)
print(f"\n{'vertex':7} {'distance':>8}  largest |err| at steps {steps.tolist()}")
for vertex, mon in monitors.items():
    size = np.abs(np.asarray(mon.err)).max(axis=0)
    d = graph.min_distance[vertex]
    print(f"{vertex:7} {d:>8}  " + " ".join(f"{s:8.1e}" for s in size))
    assert np.all(size[steps < d] < 1e-12) and size[steps == d][0] > 1e-6  # the wave reaches distance d at step d

# %%
figure = Figure(figsize=(8, 3), layout="constrained")
ax = figure.subplots()
for vertex, mon in monitors.items():
    ax.plot(np.asarray(mon.t_) / tau, np.abs(np.asarray(mon.err)).max(axis=0), "o-",
            label=f"vertex {vertex} (distance {graph.min_distance[vertex]})")
ax.set(xlabel="step (t / dt)", ylabel="largest |err|", yscale="symlog", title="the error wave on Brian2")
ax.set_yscale("symlog", linthresh=1e-4)
ax.legend(fontsize=8)
figure  # noqa: B018 - the last expression of a cell is shown in Jupyter

# %% [markdown]
# ## A noise term
#
# Brian2's `run_regularly` adds an operation to a group: here Gaussian noise on the values of the hidden
# populations at every step, `x += sigma * randn()`, before the groups integrate. Z-IL's exactness rests
# on noise-free values, so its updates leave BP's, in proportion to the noise.

# %%
def add_noise(sigma):
    def hook(built):
        for vertex, group in built.groups.items():
            if vertex in graph.latent and vertex not in graph.outputs:
                op = group.run_regularly(f"x += {sigma!r} * randn()", dt=tau * b2.second, when="before_groups",
                                         order=4, name=f"noise_{group.name}")
                built.network.add(op)
    return hook


print(f"{'sigma':>8} {'||update - BP|| / ||BP||':>25}")
deviations = []
for sigma in (0.0, 1e-4, 1e-3, 1e-2) if SMALL else (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
    b2.seed(0)
    noisy = pcsim.simulate(graph, (x,), y, solver=pcsim.Brian2(tau, on_build=add_noise(sigma)), tau_x=tau,
                           t_end=(graph.depth + 2) * tau, plasticity="zil", record=[])
    flat = torch.cat([torch.as_tensor(noisy.updates[k]).reshape(-1) for k in reference])
    ref = torch.cat([reference[k].reshape(-1) for k in reference])
    deviations.append(float((flat - ref).norm() / ref.norm()))
    print(f"{sigma:>8.0e} {deviations[-1]:>25.2e}")
assert deviations[0] < 1e-10 and deviations == sorted(deviations)
