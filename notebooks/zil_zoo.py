# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Z-IL on any network: the model zoo, and a block of your own
#
# Salvatori et al. show that Z-IL's weight updates equal backprop's on *any* computational graph, once
# the graph is **levelled** (every path from a vertex to the output has the same length). pcsim traces
# a plain `torch.nn.Module` into such a graph, levels it by inserting identity vertices where paths skip
# levels, and runs Z-IL and Fa-Z-IL on it. Here every model of the zoo (`models/*.py`: CNNs, ResNet-18,
# recurrent nets with weights shared in time, a transformer, a DenseNet block, tied weights) goes through
# `trace -> level -> check` against torch autograd, and then so does a block written in this notebook.
# The zoo runs at small widths (the same architectures); `pcsim check --all` runs them at full size.
# pcsim looks for the zoo in `./models` (run from the repository root) or in `$PCSIM_MODELS`.

# %%
import os

import torch
from torch import nn

import pcsim
from pcsim.zoo import SMALL_DIMS, load_model_file, zoo_names  # SMALL_DIMS: the sizes `pcsim demo` uses

SMALL = os.environ.get("PCSIM_NOTEBOOK_SMALL") == "1"  # the test suite runs notebooks small
TOL = pcsim.tolerance(torch.float64)
torch.set_num_threads(1)  # many small tensors: one thread is faster than two
RULES = {"Z-IL": "zil", "Fa-Z-IL wavefront": "fa-zil-wavefront", "Fa-Z-IL autonomous": "fa-zil-autonomous"}

# %% [markdown]
# ## One model, step by step
#
# A zoo file defines `build(seed, **dims) -> (module, inputs, target)` and its loss. The residual MLP is
# the paper's Figure 3: one skip connection, so `level()` inserts one identity vertex.

# %%
spec = load_model_file("residual_mlp")
module, inputs, target = spec.build_model(seed=0, **SMALL_DIMS["residual_mlp"])
graph = pcsim.trace(module, *inputs)
levelled = graph.level()
print(levelled.summary())
print(f"levelled: {graph.is_levelled} -> {levelled.is_levelled}, identity vertices added: {levelled.n_identity}")
report = pcsim.check(module, inputs, target, rule="zil", loss=spec.loss)
print(report.table(model=spec.name))

# %% [markdown]
# ## The whole zoo
#
# Each number is the largest relative deviation over parameters, `||PC update - autograd|| / ||autograd||`,
# in float64 (tolerance 1e-12). The last column runs Z-IL on the graph *as traced* (`level=False`): exact
# where no identity vertex is needed, far off wherever one is.

# %%
names = [n for n in zoo_names() if n in SMALL_DIMS]
if SMALL:  # the test suite checks every zoo model already (tests/test_zoo_models.py); keep this run short
    slow = {"alexnet", "gru", "lstm", "resnet18"}
    print(f"small run: leaving out {sorted(slow & set(names))} (run without PCSIM_NOTEBOOK_SMALL=1 for all)")
    names = [n for n in names if n not in slow]
header = f"{'model':17}{'loss':>5}{'params':>8}{'vertices':>9}{'+identity':>10}{'depth':>6}"
header += "".join(f"{c:>20}" for c in [*RULES, "Z-IL unlevelled"])
print(header)
print("-" * len(header))
failed = []
for name in names:
    spec = load_model_file(name)
    module, inputs, target = spec.build_model(seed=0, **SMALL_DIMS[name])
    module = module.double()
    inputs = tuple(t.double() if t.is_floating_point() else t for t in inputs)
    graph = pcsim.trace(module, *inputs)
    levelled = graph.level()
    # every rule on one capture and one autograd oracle; the last is Z-IL on the graph as traced
    reports = pcsim.check_rules(module, inputs, target, [*RULES.values(), ("zil", {"level": False})], loss=spec.loss)
    *deviations, unlevelled = [r.max_rel_diff for r in reports]
    if max(deviations) > TOL:
        failed.append(name)
    n_params = sum(p.numel() for p in module.parameters())
    print(f"{name:17}{spec.loss:>5}{n_params:>8}{len(graph.latent):>9}{levelled.n_identity:>10}{levelled.depth:>6}"
          + "".join(f"{d:>20.1e}" for d in [*deviations, unlevelled]))
print(f"\nexact (within {TOL:.0e}) under Z-IL and both Fa-Z-IL modes:",
      "every model" if not failed else f"all but {failed}")
assert not failed

# %% [markdown]
# ## "Any network": a block written here
#
# Nothing below is in pcsim or the zoo: single-head self-attention written with `matmul`, `transpose` and
# `softmax`, a residual connection around it, a layer norm, a GELU feed-forward block with its own
# residual, and a mean over the sequence. pcsim traces each tensor op into a vertex (the attention scores
# and the softmax are populations too), levels the skips and runs Z-IL on the result.

# %%
class AttentionBlock(nn.Module):
    def __init__(self, d=8, n_out=3):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.head = nn.Linear(d, n_out)
        self.scale = d ** -0.5

    def forward(self, x):  # x: (batch, sequence, d)
        scores = torch.matmul(self.q(x), self.k(x).transpose(1, 2)) * self.scale
        h = self.norm(x + torch.matmul(torch.softmax(scores, dim=-1), self.v(x)))
        h = h + self.ff2(nn.functional.gelu(self.ff1(h)))
        return self.head(h.mean(dim=1))


torch.manual_seed(0)
d, length = (8, 4) if SMALL else (16, 10)
block = AttentionBlock(d).double()
x, y = torch.randn(3, length, d, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
graph = pcsim.trace(block, x)
levelled = graph.level()
print(f"{len(graph.latent)} vertices, {levelled.n_identity} identity vertices added, depth {levelled.depth}")
*reports, unlevelled = pcsim.check_rules(block, (x,), y, [*RULES.values(), ("zil", {"level": False})])
for label, report in zip(RULES, reports, strict=True):
    print(f"{label:19} max relative deviation from autograd {report.max_rel_diff:.1e}  passed={report.passed}")
    assert report.passed
print(reports[0].table(model="AttentionBlock"))
print(f"Z-IL on the unlevelled graph: {unlevelled.max_rel_diff:.1e}")

# %% [markdown]
# ## What pcsim refuses, and how it says so
#
# Control flow that depends on data cannot be traced into a fixed graph; the error names the line.

# %%
class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:  # a Python branch on a tensor's value
            return self.fc(x)
        return -self.fc(x)


try:
    pcsim.trace(DataDependent().double(), torch.randn(2, 4, dtype=torch.float64))
except pcsim.PcsimError as e:
    print(f"{type(e).__name__}: {str(e).splitlines()[0]}")
else:
    raise AssertionError("a branch on a tensor's value was traced")
