# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # pcsim quickstart: trace, check, simulate
#
# A plain PyTorch network becomes a graph of value and error populations; Z-IL's weight updates
# equal backprop's; the same populations run in continuous time.
# (`notebooks/NAME.ipynb` is this file executed; `make notebooks` rewrites it.)

# %%
import os

import torch
from torch import nn

import pcsim

SMALL = os.environ.get("PCSIM_NOTEBOOK_SMALL") == "1"  # the test suite runs notebooks small
torch.manual_seed(0)
width = 8 if SMALL else 64
net = nn.Sequential(nn.Linear(10, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 3)).double()
x, y = torch.randn(16, 10, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)

# %% [markdown]
# ## Trace: one population per tensor the forward pass computes

# %%
graph = pcsim.trace(net, x)
print(graph.summary())

# %% [markdown]
# ## Z-IL and Fa-Z-IL against torch autograd

# %%
for rule in ("zil", "fa-zil-wavefront", "fa-zil-autonomous", "il"):
    report = pcsim.check(net, (x,), y, rule=rule)
    print(f"{rule:18} max relative deviation {report.max_rel_diff:.2e}  passed={report.passed}")
    assert report.passed or rule == "il"  # IL only approaches BP (plasticity_analysis.py shows how fast)

# %% [markdown]
# ## Continuous time: the error wave after the target appears

# %%
traj = pcsim.simulate(graph, (x,), y, t_end=2.0, tau_x=0.2, method="RK45")
for name in graph.latent:
    print(f"{name:4} max |error| at the end {abs(traj.errors[name][-1]).max():.3e}")

# %% [markdown]
# With `dt = tau_x`, explicit Euler and Z-IL gates, the accumulated plasticity is BP's gradient:

# %%
dt = 0.2
exact = pcsim.simulate(graph, (x,), y, t_end=(graph.depth + 2) * dt, tau_x=dt, method="euler", dt=dt,
                       plasticity="zil", record=[])
reference = pcsim.bp(graph, (x,), y)
worst = max(float((torch.as_tensor(exact.updates[k]) - reference[k]).norm() / reference[k].norm()) for k in reference)
print("Euler at dt = tau_x with Z-IL gates vs BP:", f"{worst:.1e}")
assert worst < 1e-12
