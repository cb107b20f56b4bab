# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Your own model: a Hugging Face transformer through pcsim
#
# pcsim takes any `torch.nn.Module` it can trace. Here that is a BERT sequence classifier from the
# `transformers` library, built from a tiny configuration (random weights, nothing downloaded):
# token and position embeddings, self-attention with softmax, layer norms, a GELU feed-forward block
# and a classification head. We trace it, check Z-IL against torch autograd, look at what continuous
# time does with it, and train it with Z-IL and with BP from the same start.
# (`notebooks/NAME.ipynb` is this file executed; `make notebooks` rewrites it.)

# %%
import copy
import os

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

import pcsim
from pcsim.numerics import deviation_and_angle

SMALL = os.environ.get("PCSIM_NOTEBOOK_SMALL") == "1"  # the test suite runs notebooks small
TOL = pcsim.tolerance(torch.float64)
torch.manual_seed(0)
VOCAB, LENGTH, CLASSES = 20, 6, 3
config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=16 if SMALL else 32, max_position_embeddings=16, type_vocab_size=2,
                    num_labels=CLASSES, attn_implementation="eager")


class Logits(nn.Module):
    """transformers returns a ModelOutput; pcsim wants the tensor the loss reads: the logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return Logits(BertForSequenceClassification(config)).eval().double()  # eval: dropout off


net = make_model()
ids = torch.randint(0, VOCAB, (4, LENGTH))  # a batch of 4 token sequences
labels = torch.randint(0, CLASSES, (4,))
print(f"{sum(p.numel() for p in net.parameters())} parameters")

# %% [markdown]
# ## Trace: every tensor op of the forward pass becomes a population
#
# The attention scores, the softmax and each layer norm are vertices too. Residual connections make
# paths of different lengths, so `level()` inserts identity vertices on the short ones.

# %%
graph = pcsim.trace(net, ids)
levelled = graph.level()
ops = sorted({v.op for v in graph.vertices if v.name in graph.latent})
print(f"{len(graph.latent)} latent vertices, ops: {', '.join(ops)}")
print(f"levelled: {graph.is_levelled}; level() adds {levelled.n_identity} identity vertices, depth {levelled.depth}")

# %% [markdown]
# ## Z-IL and Fa-Z-IL against torch autograd (cross-entropy on class labels)

# %%
# the three rules on one capture and one autograd oracle (pcsim.check runs one rule)
reports = pcsim.check_rules(net, (ids,), labels, ["zil", "fa-zil-wavefront", "fa-zil-autonomous"], loss="ce")
for report in reports:
    print(f"{report.rule:18} max relative deviation {report.max_rel_diff:.1e}  passed={report.passed}")
    assert report.passed
print(reports[0].table(model="tiny BERT"))

# %% [markdown]
# The same on the traced graph: `pcsim.zil` (the discrete algorithm) against `pcsim.bp` (backprop on
# the graph's own local derivatives):

# %%
reference = pcsim.bp(graph, (ids,), labels, loss="ce")
zil = pcsim.zil(graph, (ids,), labels, loss="ce")
deviation, angle = deviation_and_angle(zil, reference)
print(f"pcsim.zil vs pcsim.bp: relative deviation {deviation:.1e}, angle {angle:.1e} degrees")
assert deviation < TOL

# %% [markdown]
# ## Continuous time
#
# Explicit Euler at `dt = tau_x` with Z-IL's gates *is* Z-IL, on this graph too: `simulate` levels it
# (naming the identity populations it adds), each population's plasticity window opens when the error
# wave reaches it, and once the window closes the population holds (its value stays, its
# instantaneous error falls silent), since no later update reads it. Without that hold, the values
# above the wave grow without bound at `gamma = 1` (through the attention's products, doubly
# exponentially) and a run of a few dozen steps overflows. Here 200 steps give BP's updates:

# %%
run = pcsim.simulate(graph, (ids,), labels, loss="ce", solver=pcsim.Euler(1.0), tau_x=1.0, t_end=200.0,
                     plasticity="zil", record=[])
print(f"simulate added {len(run.meta['identity_populations'])} identity populations")
deviation, angle = deviation_and_angle({k: torch.as_tensor(u) for k, u in run.updates.items()}, reference)
print(f"Euler at dt = tau_x with Z-IL gates, 200 steps, vs BP: relative deviation {deviation:.1e}")
assert deviation < TOL

# %% [markdown]
# Away from Z-IL's discretisation the layer norms and the softmax make the field stiff (at
# `dt = 0.02 tau_x` Euler's energy still jumps, and scipy's RK45 takes minutes for a few time
# constants). The discrete relaxation, IL, runs fine: with a fixed prediction its update approaches
# BP's as inference proceeds.

# %%
print(f"{'IL steps':>8} {'||IL - BP|| / ||BP||':>21} {'angle (deg)':>12}")
deviations = []
for steps in (10, 50) if SMALL else (10, 50, 200):
    il = pcsim.il(graph, (ids,), labels, loss="ce", gamma=0.1, steps=steps, fixed_prediction=True)
    deviation, angle = deviation_and_angle(il, reference)
    deviations.append(deviation)
    print(f"{steps:>8} {deviation:>21.2e} {angle:>12.2f}")
assert deviations == sorted(deviations, reverse=True)

# %% [markdown]
# ## Training with Z-IL
#
# `pcsim.training` trains any module with any rule: `build_run(config, data, module=..., loss=...)`
# takes your own module (the zoo's models are the default), and `train` runs the loop (shuffling,
# optimiser, held-out evaluation). The task: is the first token of the sequence smaller than, equal to
# or larger than the last one? Token ids stay integers. Z-IL training from the same start and the same
# batch order ends where BP training ends.

# %%
from pcsim.training import Dataset, TrainConfig, build_run, train  # noqa: E402

n_train, n_test = (96, 32) if SMALL else (256, 128)
gen = torch.Generator().manual_seed(1)
tokens = torch.randint(0, VOCAB, (n_train + n_test, LENGTH), generator=gen)
classes = torch.sign(tokens[:, 0] - tokens[:, -1]).long() + 1  # 0: smaller, 1: equal, 2: larger
data = Dataset("first-vs-last", tokens[:n_train], classes[:n_train], tokens[n_train:], classes[n_train:], CLASSES)

start = make_model(seed=2)
histories, finals = {}, {}
for rule in ("bp", "zil"):
    cfg = TrainConfig(model="tiny-bert", rule=rule, epochs=3 if SMALL else 6, batch_size=16, lr=0.01,
                      optimizer="adam", dtype="float64")
    run = build_run(cfg, data, module=copy.deepcopy(start), loss="ce")
    histories[rule] = train(run, progress=False)
    finals[rule] = dict(run.module.named_parameters())
    for row in histories[rule]:
        print(f"{rule:4} epoch {row['epoch']}: train loss {row['train_loss']:.4f}, test loss {row['test_loss']:.4f}, "
              f"test accuracy {row['test_acc']:.2f}")

# %%
# over all parameters together: the key projection's bias has a gradient of exactly zero (softmax ignores a
# shift shared by all keys), so it holds only rounding, which Adam rescales; per parameter it would compare noise
flat = {rule: torch.cat([p.detach().reshape(-1) for p in params.values()]) for rule, params in finals.items()}
worst = float((flat["zil"] - flat["bp"]).norm() / flat["bp"].norm())
print(f"parameters after Z-IL training vs after BP training: relative difference {worst:.1e}")
assert worst < 1e-10
assert histories["zil"][-1]["train_loss"] < histories["zil"][0]["train_loss"]  # it learns
