"""Random computational graphs (plain nn.Modules) for property tests of exact PC (Z-IL) vs autograd.

`build_random_dag(rng, dtype)` is a plain builder driven by a `random.Random`, so tests can sweep seeds
deterministically; `random_dag_modules()` is the hypothesis strategy that draws a seed and calls it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}
# tanh/sigmoid mostly (smooth); relu sometimes: a dead relu zeroes whole branches of the gradient
ACTIVATION_WEIGHTS = {"tanh": 4, "sigmoid": 3, "relu": 1.5, "none": 1.5}
KIND_WEIGHTS = {"linear": 3, "add": 2, "mul": 2, "shared": 2, "cat": 1.5}


@dataclass(frozen=True)
class DagCase:
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    targets: tuple[torch.Tensor, ...]
    losses: tuple[str, ...]
    description: str

    def __repr__(self) -> str:  # hypothesis prints this on failure; tensors/modules would be noise
        return f"DagCase({self.description})"


class RandomDag(nn.Module):
    """Executes a fixed plan; forward is a Python loop over plain lists, so torch.fx unrolls it.

    plan[i] = (kind, parent_ids, activation, layer_key) for hidden vertex n_inputs + i; vertex ids
    0..n_inputs-1 are the inputs. Per-vertex Linears live in `vertex_layers[layer_key]`, shared ones
    (width w -> w, used by several vertices) in `shared_layers[layer_key]`.
    """

    def __init__(self, n_inputs, plan, output_ids, vertex_layers, shared_layers):
        super().__init__()
        self.n_inputs = n_inputs
        self.plan = plan
        self.output_ids = output_ids
        self.vertex_layers = nn.ModuleDict(vertex_layers)
        self.shared_layers = nn.ModuleDict(shared_layers)

    def run_plan(self, inputs):
        values = list(inputs)
        for kind, parents, activation, key in self.plan:
            if kind == "shared":
                h = self.shared_layers[key](values[parents[0]])
            elif kind == "cat":
                h = self.vertex_layers[key][0](torch.cat([values[p] for p in parents], dim=1))
            else:
                layers = self.vertex_layers[key]
                projected = [layer(values[p]) for layer, p in zip(layers, parents, strict=True)]
                h = projected[0]
                for term in projected[1:]:
                    h = h * term if kind == "mul" else h + term
            if activation != "none":
                h = ACTIVATIONS[activation](h)
            values.append(h)
        outputs = tuple(values[i] for i in self.output_ids)
        return outputs[0] if len(outputs) == 1 else outputs


class RandomDag1(RandomDag):
    def forward(self, x0):
        return self.run_plan([x0])


class RandomDag2(RandomDag):
    def forward(self, x0, x1):
        return self.run_plan([x0, x1])


def _linear(fan_in, fan_out, bias, dtype):
    # skip_init builds on meta then materialises: the default init would consume the global RNG
    return nn.utils.skip_init(nn.Linear, fan_in, fan_out, bias=bias, dtype=dtype)


def _weighted(rng, weights):
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def build_random_dag(rng: random.Random, dtype: torch.dtype = torch.float64) -> DagCase:
    n_inputs = rng.choice([1, 2])
    batch = rng.choice([2, 3])
    widths = [rng.randint(1, 6) for _ in range(n_inputs)]
    depths = [0] * n_inputs
    n_hidden = rng.randint(2, 6)
    consumers = [0] * n_inputs  # vertices nobody consumes yet are preferred parents (keeps dead code rare)
    plan, vertex_layers, shared_layers = [], {}, {}
    pending_shared_width = None  # a freshly created shared Linear must be reused by the next vertex

    def pick(candidates, exclude=()):
        pool = [c for c in candidates if c not in exclude] or list(candidates)
        dangling = [c for c in pool if consumers[c] == 0]
        if dangling and rng.random() < 0.7:
            return rng.choice(dangling)
        if rng.random() < 0.3:
            return max(pool)  # chain from the newest vertex so depth grows
        return rng.choice(pool)  # uniform over all earlier vertices: skip edges across several levels

    for step in range(n_hidden):
        vid = len(widths)
        earlier = range(vid)
        kind = "shared" if pending_shared_width is not None else _weighted(rng, KIND_WEIGHTS)
        key = f"v{vid}"
        if kind == "shared":
            reusable = [w for w in shared_layers if any(widths[u] == int(w[1:]) for u in earlier)]
            if pending_shared_width is not None:
                skey = f"w{pending_shared_width}"
            elif reusable and rng.random() < 0.6:
                skey = rng.choice(reusable)
            elif step < n_hidden - 1:  # room left for the forced second use
                skey = f"w{widths[pick(earlier)]}"
            else:
                kind = "linear"
        if kind == "shared":
            width = int(skey[1:])
            if skey not in shared_layers:
                shared_layers[skey] = _linear(width, width, rng.random() < 0.7, dtype)
                pending_shared_width = width
            else:
                pending_shared_width = None
            parents = [pick([u for u in earlier if widths[u] == width])]
            key = skey
        else:
            # add takes 2-3 parents (3 only when 3 earlier vertices exist), mul/cat 2, linear 1
            n_parents = {"linear": 1, "add": rng.choice([2, min(3, max(2, vid))])}.get(kind, 2)
            parents = []
            while len(parents) < n_parents:  # distinct parents when possible (else e.g. mul(v0, v0))
                parents.append(pick(earlier, exclude=parents))
            width = rng.randint(1, 6)
            bias = rng.random() < 0.7
            if kind == "cat":
                layers = [_linear(sum(widths[p] for p in parents), width, bias, dtype)]
            else:
                layers = [_linear(widths[p], width, bias, dtype) for p in parents]
            vertex_layers[key] = nn.ModuleList(layers)
        activation = _weighted(rng, ACTIVATION_WEIGHTS)
        if activation == "relu" and width == 1:  # one relu unit is dead for the whole batch too often
            activation = "tanh"
        for p in parents:
            consumers[p] += 1
        plan.append((kind, tuple(parents), activation, key))
        widths.append(width)
        depths.append(1 + max(depths[p] for p in parents))
        consumers.append(0)

    # outputs: the unconsumed hidden vertices (newest first, at most 3) plus sometimes an inner vertex
    hidden = list(range(n_inputs, len(widths)))
    sinks = [v for v in reversed(hidden) if consumers[v] == 0][:3]
    inner = [v for v in hidden if v not in sinks]
    while inner and len(sinks) < 3 and rng.random() < 0.4:
        sinks.append(inner.pop(rng.randrange(len(inner))))  # an output that also feeds later vertices
    output_ids = sorted(sinks)
    for i, (kind, parents, activation, key) in enumerate(plan):
        if activation == "relu" and i + n_inputs in output_ids:  # a dead relu output kills every gradient
            plan[i] = (kind, parents, "tanh", key)
    labels = [
        f"v{vid}:{widths[vid]}={act}({f'{kind}[{key}]' if kind == 'shared' else kind}"
        f"({','.join(f'v{p}' for p in parents)}))"
        for vid, (kind, parents, act, key) in enumerate(plan, n_inputs)
    ]
    losses = tuple("ce" if widths[o] >= 2 and rng.random() < 0.4 else "mse" for o in output_ids)

    module_cls = RandomDag1 if n_inputs == 1 else RandomDag2
    module = module_cls(n_inputs, plan, output_ids, vertex_layers, shared_layers)
    generator = torch.Generator().manual_seed(rng.getrandbits(63))
    scale = rng.uniform(1.0, 1.5)
    with torch.no_grad():
        for name, param in module.named_parameters():
            std = 0.5 if name.endswith("bias") else scale / param.shape[1] ** 0.5
            param.copy_(torch.randn(param.shape, generator=generator, dtype=dtype) * std)
    inputs = tuple(torch.randn(batch, w, generator=generator, dtype=dtype) for w in widths[:n_inputs])
    targets = tuple(
        torch.randint(0, widths[o], (batch,), generator=generator) if loss == "ce"
        else torch.randn(batch, widths[o], generator=generator, dtype=dtype)
        for o, loss in zip(output_ids, losses, strict=True)
    )
    skips = sum(depths[v] - depths[p] >= 2 for v, (_, ps, _, _) in enumerate(plan, n_inputs) for p in ps)
    outputs_label = ",".join(f"v{o}:{loss}" for o, loss in zip(output_ids, losses, strict=True))
    description = (
        f"inputs={widths[:n_inputs]} batch={batch} | {' '.join(labels)} | "
        f"outputs={outputs_label} | skip_edges={skips}"
    )
    return DagCase(module, inputs, targets, losses, description)


@st.composite
def random_dag_modules(draw, dtype: torch.dtype = torch.float64) -> DagCase:
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    return build_random_dag(random.Random(seed), dtype)


def total_loss(case: DagCase, outputs) -> torch.Tensor:
    """Sum over outputs: mse = 0.5 * sum((out - y)^2), ce = summed cross-entropy."""
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    terms = [
        F.cross_entropy(out, y, reduction="sum") if loss == "ce" else 0.5 * ((out - y) ** 2).sum()
        for out, y, loss in zip(outputs, case.targets, case.losses, strict=True)
    ]
    return torch.stack(terms).sum()


def autograd_reference(case: DagCase) -> dict[str, torch.Tensor]:
    """d(total loss)/d(param) by plain autograd, keyed like module.named_parameters(); zeros if unused."""
    names, params = zip(*case.module.named_parameters(), strict=True)
    loss = total_loss(case, case.module(*case.inputs))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {
        name: torch.zeros_like(p) if g is None else g for name, p, g in zip(names, params, grads, strict=True)
    }


def plan_features(case: DagCase) -> set[str]:
    """Which structural features a case exercises (used to check the generator's coverage)."""
    module = case.module
    features = set()
    depths, uses = [0] * module.n_inputs, {}
    consumed = set()
    for kind, parents, activation, key in module.plan:
        depth = 1 + max(depths[p] for p in parents)
        if any(depth - depths[p] >= 2 for p in parents):
            features.add("skip_edge")
        depths.append(depth)
        features.update({kind, f"act_{activation}"})
        consumed.update(parents)
        if kind == "shared":
            uses[key] = uses.get(key, 0) + 1
    if any(n >= 2 for n in uses.values()):
        features.add("shared_params")
    if len(module.output_ids) > 1:
        features.add("multi_output")
    if any(o in consumed for o in module.output_ids):
        features.add("output_feeds_later")
    if module.n_inputs == 2:
        features.add("two_inputs")
    if "ce" in case.losses:
        features.add("ce_loss")
    if any(layer.bias is None for layer in module.modules() if isinstance(layer, nn.Linear)):
        features.add("no_bias_linear")
    return features


def live_fraction(case: DagCase) -> float:
    """Fraction of hidden vertices whose value reaches some output (the rest would be dead code)."""
    module = case.module
    live = set(module.output_ids)
    for vid in range(module.n_inputs + len(module.plan) - 1, module.n_inputs - 1, -1):
        if vid in live:
            live.update(module.plan[vid - module.n_inputs][1])
    hidden = range(module.n_inputs, module.n_inputs + len(module.plan))
    return sum(v in live for v in hidden) / len(hidden)
