# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Plasticity-rule analysis
#
# Is the rule local? How exact must its timing be? How fast does IL approach BP?

# %%
import os

import numpy as np
import torch
from torch import nn

import pcsim
from pcsim.analysis import il_convergence, locality_audit, timing_sensitivity

SMALL = os.environ.get("PCSIM_NOTEBOOK_SMALL") == "1"
torch.manual_seed(0)
width = 6 if SMALL else 32


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.a, self.b, self.out = nn.Linear(5, width), nn.Linear(width, width), nn.Linear(width, width), \
            nn.Linear(width, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.out(torch.tanh(h + self.b(torch.tanh(self.a(h)))))


net = Residual().double()
x, y = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
graph = pcsim.trace(net, x)

# %% [markdown]
# ## Locality: each update depends on its post-synaptic error and pre-synaptic activity only

# %%
audit = locality_audit(graph, (x,), y)
for r in audit:
    print(f"{r.parameter:10} post={r.vertex:8} local={r.local} pre-dependent={r.depends_on_pre}  {r.form}")
assert all(r.local for r in audit)

# %% [markdown]
# ## Timing: the update of level d taken at step d + k

# %%
levels, offsets, matrix = timing_sensitivity(graph, (x,), y, offsets=[-1, 0, 1])
print("levels", levels, "offsets", offsets)
print(np.array2string(matrix, precision=1))
on_time = matrix[:, offsets.index(0)]
assert np.all(on_time < pcsim.tolerance(torch.float64))  # at step d exactly: Z-IL, BP to rounding
early_or_late = np.delete(matrix, offsets.index(0), axis=1)
assert np.all(early_or_late[~np.isnan(early_or_late)] > 0.1)  # one step off: far from BP

# %% [markdown]
# ## IL approaching BP

# %%
rows = il_convergence(graph, (x,), y, steps=(1, 10, 100) if SMALL else (1, 10, 100, 1000))
print(f"{'fixed prediction':>16} {'gamma':>6} {'steps':>6} {'||IL - BP|| / ||BP||':>21} {'angle (deg)':>12}")
for row in rows:
    print(f"{row['fixed_prediction']!s:>16} {row['gamma']:>6} {row['steps']:>6} {row['relative_error']:>21.2e} "
          f"{row['angle_deg']:>12.2f}")
fixed = [r["relative_error"] for r in rows if r["fixed_prediction"]]
assert fixed[-1] < 0.05 and fixed[-1] < fixed[0]  # with fixed prediction, IL approaches BP as it relaxes
