"""pcsim's populations as Brian2 equations and connectivity: data only, no Brian2 import.

Every latent vertex becomes one neuron population (batch x features neurons) whose equations are
`EQUATIONS` (dynamics/equations.py) with `mu` and `fb` spelled out as sums of per-projection
summed variables (`mu_0 + mu_1 + b`, `fb_0 + fb_1`): two Synapses summing into one variable keep
only the last (brian2 issue 766). Every edge into a latent vertex becomes one projection that
carries both directions: its prediction onto the post-synaptic population (`mu_k_post = ...
(summed)`) and J^T err onto the pre-synaptic one (`fb_m_pre = ... (summed)`). Per op:

  linear, conv2d        weight * x_pre / weight * err_post; each synapse holds a copy of the weight
                        it reads and its index `kidx` into the parameter, so a kernel shared across
                        batch copies and positions sums its synapses' accumulators when read back
  avg_pool2d, adaptive  fixed weights (torch's own 1 / window size, taken from the op)
  activations           one-to-one: f(x_pre) / f'(x_pre) * err_post
  add, sub, neg, scale  one-to-one (or broadcast), weights = the op's coefficients
  reshapes, identity    one-to-one index maps (taken from the op applied to neuron indices)

Biases are per-neuron constants `b` with their own accumulators. Clamped vertices (inputs, and
what is computed from inputs alone) are constant populations `x`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from pcsim.dynamics.equations import EQUATIONS
from pcsim.dynamics.field import VectorField
from pcsim.dynamics.protocol import After, Always, Gate, Off, Windows
from pcsim.errors import PcsimError, UnsupportedOpError
from pcsim.graph.ir import ParamArg, ParentArg, Vertex, template_slots
from pcsim.ops.local import call

WHY = "it cannot be written as Brian2 equations"


class RenderError(PcsimError, NotImplementedError):
    """The simulation asks for something the Brian2 rendering does not express."""


# -- equations held as data ------------------------------------------------------------------------
def split(eq: str) -> tuple[str, str, str]:
    """'dx/dt = rhs : 1' -> ('dx/dt', 'rhs', '1')."""
    lhs, rest = eq.split("=", 1)
    rhs, unit = rest.rsplit(":", 1)
    return lhs.strip(), rhs.strip(), unit.strip()


def rhs(eq: str) -> str:
    return split(eq)[1]


def rename(eq: str, **names: str) -> str:
    """Rename whole identifiers in an equation ('w' -> 'w_b', but not inside 'weight')."""
    for old, new in names.items():
        eq = re.sub(rf"\bd{re.escape(old)}/dt\b", f"d{new}/dt", eq)
        eq = re.sub(rf"\b{re.escape(old)}\b", new, eq)
    return eq


def switch(lhs: str, before: str, after: str) -> str:
    """An equation that follows `before` until the target is shown and `after` from then on."""
    if after == "0":
        return f"{lhs} = (1 - shown) * ({before}) : 1"
    return f"{lhs} = shown * ({after}) + (1 - shown) * ({before}) : 1"


# -- the network as data ------------------------------------------------------------------------------
@dataclass
class Population:
    name: str  # Brian2 object name
    vertex: str
    n: int
    equations: list[str]
    values: dict[str, np.ndarray] = field(default_factory=dict)  # initial values (state and constants)
    times: dict[str, float] = field(default_factory=dict)  # namespace entries in seconds
    tables: dict[str, np.ndarray] = field(default_factory=dict)  # gate tables on the step grid
    clamped: bool = False
    output: bool = False
    leaky: bool = False
    bias: str | None = None  # parameter whose accumulator is the per-neuron `w_b`
    bias_index: np.ndarray | None = None
    monitor: tuple[str, ...] = ()


@dataclass
class Projection:
    name: str
    pre: str  # population names
    post: str
    i: np.ndarray
    j: np.ndarray
    equations: list[str]
    forward: str  # the summed variable it sets on the post population (e.g. mu_0)
    backward: str | None  # ... and on the pre population (e.g. fb_1), None for clamped parents
    values: dict[str, np.ndarray] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    tables: dict[str, np.ndarray] = field(default_factory=dict)
    param: str | None = None  # the parameter whose accumulators `w` (indexed by `kidx`) it holds
    clamped_pre: bool = False
    plastic: bool = False
    once: bool = False  # summed once at t = 0 into a drive population (clamped input, fixed weights)

    @property
    def size(self) -> int:
        return int(self.i.size)


@dataclass
class Network:
    populations: dict[str, Population]  # by vertex name
    projections: list[Projection]
    param_shapes: dict[str, tuple[int, ...]]
    n_steps: int
    dt: float

    def describe(self) -> str:
        """The rendered equations, population by population (what a Brian2 user would write)."""
        lines = []
        for p in self.populations.values():
            lines.append(f"NeuronGroup {p.name} ({p.vertex}, N = {p.n}):")
            lines += [f"    {e}" for e in p.equations]
        for s in self.projections:
            lines.append(f"Synapses {s.name} ({s.pre} -> {s.post}, {s.size} synapses):")
            lines += [f"    {e}" for e in s.equations]
        return "\n".join(lines)


# -- per-op edges -------------------------------------------------------------------------------------
@dataclass
class Edge:
    parent: int  # parent position in vertex.parents
    i: np.ndarray
    j: np.ndarray
    forward: str  # per-synapse contribution to mu, in x_pre (and weight)
    backward: str  # per-synapse contribution to the parent's feedback, in err_post (and x_pre, weight)
    weight: np.ndarray | None = None
    param: str | None = None
    kidx: np.ndarray | None = None


@dataclass
class Offset:
    """Per-neuron additive term of mu: a bias (with its parameter) or a constant."""

    values: np.ndarray
    param: str | None = None
    index: np.ndarray | None = None


def _bind(vertex: Vertex, names: tuple[str, ...], defaults: dict):
    """The call's arguments by name (positional first, then keywords, then defaults)."""
    out = dict(defaults)
    out.update(zip(names, vertex.args, strict=False))
    out.update(dict(vertex.kwargs))
    return out


def _unsupported(vertex: Vertex, why: str) -> UnsupportedOpError:
    return UnsupportedOpError(f"the brian2 backend cannot render {vertex.describe()}: {why}")


def _single_parent(vertex: Vertex, arg) -> None:
    if arg != ParentArg(0) or len(vertex.parents) != 1:
        raise _unsupported(vertex, f"expected one population as its first argument; {WHY}")


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _param(vertex: Vertex, slot, params, what: str) -> torch.Tensor | None:
    if slot is None:
        return None
    if not isinstance(slot, ParamArg):
        raise _unsupported(vertex, f"its {what} is not a module parameter (a population or constant as a "
                                   f"{what} would make a synapse multiply two variables); {WHY}")
    return params[slot.name].detach()


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).reshape(-1).cpu().numpy()


def _linear(vertex, shapes, params, constants):
    a = _bind(vertex, ("input", "weight", "bias"), {"bias": None})
    _single_parent(vertex, a["input"])
    W = _param(vertex, a["weight"], params, "weight")
    b = _param(vertex, a["bias"], params, "bias")
    (shape_in,) = shapes
    if W.dim() != 2 or shape_in[-1] != W.shape[1]:
        raise _unsupported(vertex, f"weight of shape {tuple(W.shape)} on input {shape_in}")
    n_out, n_in = W.shape
    lead = int(np.prod(shape_in[:-1], dtype=np.int64))
    rows = np.arange(lead, dtype=np.int64)[:, None, None]
    o = np.arange(n_out, dtype=np.int64)[None, :, None]
    c = np.arange(n_in, dtype=np.int64)[None, None, :]
    i = np.broadcast_to(rows * n_in + c, (lead, n_out, n_in)).reshape(-1)
    j = np.broadcast_to(rows * n_out + o, (lead, n_out, n_in)).reshape(-1)
    k = np.broadcast_to(o * n_in + c, (lead, n_out, n_in)).reshape(-1)
    edges = [Edge(0, i, j, "weight * x_pre", "weight * err_post", _np(W)[k], a["weight"].name, k)]
    offsets = []
    if b is not None:
        idx = np.arange(lead * n_out, dtype=np.int64) % n_out
        offsets.append(Offset(_np(b)[idx], a["bias"].name, idx))
    return edges, offsets


def _conv2d(vertex, shapes, params, constants):
    a = _bind(vertex, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
              {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
    _single_parent(vertex, a["input"])
    W = _param(vertex, a["weight"], params, "weight")
    b = _param(vertex, a["bias"], params, "bias")
    (shape_in,) = shapes
    if len(shape_in) != 4:
        raise _unsupported(vertex, f"conv2d on an input of shape {shape_in} (expected batch, channels, h, w)")
    B, C, H, Wd = shape_in
    _, O, Ho, Wo = vertex.shape
    O_, Cg, KH, KW = W.shape
    groups = int(a["groups"])
    (sh, sw), (dh, dw) = _pair(a["stride"]), _pair(a["dilation"])
    pad = a["padding"]
    if pad == "valid":
        pad = 0
    if pad == "same":
        ph, pw = (dh * (KH - 1)) // 2, (dw * (KW - 1)) // 2
    else:
        ph, pw = _pair(pad)
    # one synapse per (batch, out channel, out position, in channel of the group, kernel position)
    bb, oo, oh, ow, cl, kh, kw = np.meshgrid(np.arange(B), np.arange(O), np.arange(Ho), np.arange(Wo),
                                             np.arange(Cg), np.arange(KH), np.arange(KW), indexing="ij")
    ih, iw = oh * sh - ph + kh * dh, ow * sw - pw + kw * dw
    ok = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < Wd)
    cc = (oo // (O_ // groups)) * Cg + cl
    i = (((bb * C + cc) * H + ih) * Wd + iw)[ok].astype(np.int64)
    j = (((bb * O + oo) * Ho + oh) * Wo + ow)[ok].astype(np.int64)
    k = (((oo * Cg + cl) * KH + kh) * KW + kw)[ok].astype(np.int64)
    edges = [Edge(0, i, j, "weight * x_pre", "weight * err_post", _np(W)[k], a["weight"].name, k)]
    offsets = []
    if b is not None:
        idx = (np.arange(B * O * Ho * Wo, dtype=np.int64) // (Ho * Wo)) % O
        offsets.append(Offset(_np(b)[idx], a["bias"].name, idx))
    return edges, offsets


def _plane_local_linear(vertex, shapes, params, constants):
    """avg_pool2d and adaptive_avg_pool2d: a fixed linear map on each (sample, channel) plane, taken
    from the op itself applied to one-hot planes (so padding, ceil_mode and divisors are torch's)."""
    _single_parent(vertex, vertex.args[0] if vertex.args else None)
    (shape_in,) = shapes
    if len(shape_in) != 4 or len(vertex.shape) != 4:
        raise _unsupported(vertex, f"pooling on shape {shape_in} (expected batch, channels, h, w)")
    B, C, H, W = shape_in
    Ho, Wo = vertex.shape[2:]
    pins, pouts, vals = [], [], []
    chunk = max(1, 4_000_000 // max(1, Ho * Wo))
    for start in range(0, H * W, chunk):
        idx = torch.arange(start, min(start + chunk, H * W))
        planes = torch.zeros(len(idx), 1, H * W, dtype=torch.float64)
        planes[torch.arange(len(idx)), 0, idx] = 1.0
        out = call(vertex, [planes.reshape(len(idx), 1, H, W)], params, constants).reshape(len(idx), Ho * Wo)
        nz = torch.nonzero(out)
        pins.append(idx[nz[:, 0]].numpy())
        pouts.append(nz[:, 1].numpy())
        vals.append(out[nz[:, 0], nz[:, 1]].numpy())
    pin, pout, val = (np.concatenate(v) for v in (pins, pouts, vals))
    order = np.lexsort((pin, pout))
    pin, pout, val = pin[order], pout[order], val[order]
    planes = np.arange(B * C, dtype=np.int64)[:, None]
    i = (planes * (H * W) + pin[None, :]).reshape(-1)
    j = (planes * (Ho * Wo) + pout[None, :]).reshape(-1)
    weight = np.broadcast_to(val[None, :], (B * C, val.size)).reshape(-1).copy()
    return [Edge(0, i, j, "weight * x_pre", "weight * err_post", weight)], []


# Elementwise activations: (forward in x_pre, derivative in x_pre) with the op's own arguments.
def _act_relu(a):
    return "x_pre * int(x_pre > 0)", "int(x_pre > 0)"


def _act_leaky(a):
    s = float(a.get("negative_slope", 0.01))
    return (f"x_pre * (int(x_pre > 0) + {s!r} * int(x_pre <= 0))", f"(int(x_pre > 0) + {s!r} * int(x_pre <= 0))")


def _act_elu(a):
    al = float(a.get("alpha", 1.0))
    return (f"x_pre * int(x_pre > 0) + {al!r} * (exp(x_pre) - 1) * int(x_pre <= 0)",
            f"(int(x_pre > 0) + {al!r} * exp(x_pre) * int(x_pre <= 0))")


def _act_softplus(a):
    beta, thr = float(a.get("beta", 1.0)), float(a.get("threshold", 20.0))
    above = f"int({beta!r} * x_pre > {thr!r})"
    return (f"{above} * x_pre + (1 - {above}) * log(1 + exp({beta!r} * x_pre)) / {beta!r}",
            f"({above} + (1 - {above}) / (1 + exp(-{beta!r} * x_pre)))")


ACTIVATIONS = {
    "relu": (("input",), {}, _act_relu),
    "leaky_relu": (("input", "negative_slope"), {"negative_slope": 0.01}, _act_leaky),
    "tanh": (("input",), {}, lambda a: ("tanh(x_pre)", "(1 - tanh(x_pre)**2)")),
    "sigmoid": (("input",), {}, lambda a: ("1 / (1 + exp(-x_pre))",
                                           "(1 / (1 + exp(-x_pre))) * (1 - 1 / (1 + exp(-x_pre)))")),
    "silu": (("input",), {}, lambda a: ("x_pre / (1 + exp(-x_pre))",
                                        "(1 / (1 + exp(-x_pre))) * (1 + x_pre * (1 - 1 / (1 + exp(-x_pre))))")),
    "elu": (("input", "alpha"), {"alpha": 1.0}, _act_elu),
    "softplus": (("input", "beta", "threshold"), {"beta": 1.0, "threshold": 20.0}, _act_softplus),
    "exp": (("input",), {}, lambda a: ("exp(x_pre)", "exp(x_pre)")),
}


def _activation(vertex, shapes, params, constants):
    names, defaults, render = ACTIVATIONS[vertex.op]
    a = _bind(vertex, names, defaults)
    _single_parent(vertex, a["input"])
    if tuple(shapes[0]) != tuple(vertex.shape):
        raise _unsupported(vertex, "an elementwise op that changes shape")
    extra = sorted(k for k in a if k not in names and k != "inplace")
    if extra:
        raise _unsupported(vertex, f"arguments {extra} have no Brian2 rendering")
    fwd, der = render(a)
    n = int(np.prod(vertex.shape, dtype=np.int64))
    idx = np.arange(n, dtype=np.int64)
    return [Edge(0, idx, idx.copy(), fwd, f"{der} * err_post")], []


INDEX_OPS = {"identity", "flatten", "reshape", "view", "contiguous", "permute", "transpose", "t", "squeeze",
             "unsqueeze", "getitem", "expand", "chunk", "split", "unbind"}


def _index_map(vertex, shapes, params, constants):
    """Ops that only move values: the op applied to the parent's neuron indices gives the wiring."""
    slots = [s for s in _slots(vertex) if isinstance(s, ParentArg)]
    if len(vertex.parents) != 1 or len(slots) != 1:
        raise _unsupported(vertex, f"a '{vertex.op}' of {len(vertex.parents)} populations; {WHY}")
    (shape_in,) = shapes
    index = torch.arange(int(np.prod(shape_in, dtype=np.int64)), dtype=torch.int64).reshape(shape_in)
    out = call(vertex, [index], params, constants)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(vertex.shape):
        raise _unsupported(vertex, "its index map does not have the vertex's shape")
    i = out.reshape(-1).numpy().astype(np.int64)
    j = np.arange(i.size, dtype=np.int64)
    return [Edge(0, i, j, "x_pre", "err_post")], []


AFFINE_OPS = {"add", "sub", "neg", "mul", "div"}


def _affine(vertex, shapes, params, constants):
    """Elementwise ops affine in their parents (add, sub, neg, scaling): weights = coefficients,
    read from the op by probing; anything not affine (a product of populations) is refused."""
    zeros = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    c0 = None
    try:
        c0 = call(vertex, zeros, params, constants)
        coefs = []
        for k, s in enumerate(shapes):
            probe = list(zeros)
            probe[k] = torch.ones(s, dtype=torch.float64)
            coefs.append(call(vertex, probe, params, constants) - c0)
        g = torch.Generator().manual_seed(0)
        rnd = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
        got = call(vertex, rnd, params, constants)
        want = c0 + sum(cf * torch.broadcast_to(r, cf.shape) for cf, r in zip(coefs, rnd, strict=True))
        affine = bool(torch.allclose(got, want, rtol=1e-12, atol=1e-12)) and bool(torch.isfinite(got).all())
    except (RuntimeError, TypeError, ValueError):
        affine = False
    if not affine or tuple(c0.shape) != tuple(vertex.shape):
        raise _unsupported(vertex, f"'{vertex.op}' here is not affine in its parent populations (a product or "
                                   "quotient of populations: a synapse carries one presynaptic variable); " + WHY)
    n = int(np.prod(vertex.shape, dtype=np.int64))
    j = np.arange(n, dtype=np.int64)
    edges = []
    for k, s in enumerate(shapes):
        src = torch.arange(int(np.prod(s, dtype=np.int64)), dtype=torch.int64).reshape(s)
        i = torch.broadcast_to(src, vertex.shape).reshape(-1).numpy().astype(np.int64)
        w = _np(coefs[k])
        if np.all(w == 1.0):
            edges.append(Edge(k, i, j.copy(), "x_pre", "err_post"))
        else:
            edges.append(Edge(k, i, j.copy(), "weight * x_pre", "weight * err_post", w))
    offsets = [] if not bool((c0 != 0).any()) else [Offset(_np(c0))]
    return edges, offsets


def _slots(vertex):
    return list(template_slots((vertex.args, dict(vertex.kwargs))))


RENDERERS = {"linear": _linear, "conv2d": _conv2d, "avg_pool2d": _plane_local_linear,
             "adaptive_avg_pool2d": _plane_local_linear}
RENDERERS.update(dict.fromkeys(ACTIVATIONS, _activation))
RENDERERS.update(dict.fromkeys(INDEX_OPS, _index_map))
RENDERERS.update(dict.fromkeys(AFFINE_OPS, _affine))

REASONS = {
    "max_pool2d": "Brian2's summed variables can only add over synapses; a max over a window is no sum",
    "softmax": "it normalises across neurons (a divisive interaction among a population)",
    "log_softmax": "it normalises across neurons (a divisive interaction among a population)",
    "attention_softmax": "it normalises across neurons (a divisive interaction among a population)",
    "layer_norm": "it normalises by statistics over neurons (a divisive interaction among a population)",
    "batch_norm": "it normalises by statistics over neurons",
    "matmul": "a product of two variables; a synapse carries one presynaptic variable",
    "bmm": "a product of two variables; a synapse carries one presynaptic variable",
    "gelu": "it needs erf, which Brian2's code generators do not provide",
    "embedding": "it indexes a table by an integer input (no synaptic sum)",
    "cat": "it concatenates populations (not supported by this backend yet)",
    "stack": "it stacks populations (not supported by this backend yet)",
}


def edges_of(vertex: Vertex, shapes, params, constants):
    if vertex.select is not None and vertex.op not in INDEX_OPS:
        raise _unsupported(vertex, f"it selects output {vertex.select} of a tuple-valued call; {WHY}")
    renderer = RENDERERS.get(vertex.op)
    if renderer is None:
        why = REASONS.get(vertex.op, "no synaptic form is known for this op")
        supported = ", ".join(sorted(RENDERERS))
        raise _unsupported(vertex, f"{why}, so {WHY}.\nThe brian2 backend renders: {supported}")
    return renderer(vertex, shapes, params, constants)


# -- gates ---------------------------------------------------------------------------------------------
def gate_equation(gate: Gate, vertex: str, level: int | None, n_steps: int, dt: float):
    """('gate = ... : 1', times, tables), or None when the gate never opens for this vertex."""
    if level is None or isinstance(gate, Off):
        return None
    # Every gate closes at t_stop = (n - 1/2) dt: the network runs one step past t_end only to
    # observe the state there, and Euler's last update is at step n - 1.
    stop = {"t_stop": (n_steps - 0.5) * dt}
    if isinstance(gate, Always):
        return "gate = int(t < t_stop) : 1", stop, {}
    if isinstance(gate, After):
        return "gate = int(t >= gate_start) * int(t < t_stop) : 1", {"gate_start": gate.start, **stop}, {}
    if isinstance(gate, Windows):
        start = gate.opens(level)
        return ("gate = int(t >= gate_open) * int(t < gate_close) * int(t < t_stop) : 1",
                {"gate_open": start, "gate_close": start + gate.width, **stop}, {})
    # any other gate: sampled where Euler evaluates it, at t = k dt
    table = np.array([float(gate(vertex, level, k * dt)) for k in range(n_steps)] + [0.0])
    if not table.any():
        return None
    return "gate = gate_table(t) : 1", {}, {"gate_table": table}


# -- the whole network ---------------------------------------------------------------------------------
def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)


def render(field: VectorField, *, dt: float, n_steps: int, inputs_once: bool = True) -> Network:
    problem, graph = field.problem, field.problem.graph
    gate = field.gate
    plastic = any(k[0] == "w" for k in field.layout)
    linked: dict[str, set[str]] = {n: set() for n in graph.latent}  # mu terms summed once, elsewhere
    pops: dict[str, Population] = {}
    incoming: dict[str, list[str]] = {n: [] for n in graph.latent}  # mu terms per vertex
    feedback: dict[str, list[str]] = {n: [] for n in graph.latent}  # fb terms per vertex
    offsets: dict[str, list[Offset]] = {n: [] for n in graph.latent}
    projections: list[Projection] = []

    for loss_vertex, loss in problem.losses.items():
        if field.target_shown and loss.name != "mse":
            raise RenderError(f"the brian2 backend renders the MSE output error (y - mu) only; output "
                              f"'{loss_vertex}' has loss '{loss.name}', whose error needs a softmax across "
                              "neurons. Use backend='scipy' or 'torch' for it.")

    def population_of(name: str) -> Population:
        if name not in pops:
            k = len(pops)
            v = graph[name]
            n = int(np.prod(v.shape, dtype=np.int64))
            if name in graph.clamped:
                pops[name] = Population(f"c{k}_{_identifier(name)}", name, n, ["x : 1 (constant)"],
                                        {"x": _np(problem.clamped[name])}, clamped=True)
            else:
                pops[name] = Population(f"p{k}_{_identifier(name)}", name, n, [], {"x": _np(field.base[name])})
        return pops[name]

    gates = {n: gate_equation(gate, n, field.levels.get(n), n_steps, dt) if plastic else None
             for n in graph.latent}

    for name in graph.latent:
        vertex = graph[name]
        post = population_of(name)
        shapes = [tuple(graph[p].shape) for p in vertex.parents]
        edges, offs = edges_of(vertex, shapes, problem.params, graph.constants)
        offsets[name] += offs
        for edge in edges:
            parent = vertex.parents[edge.parent]
            pre = population_of(parent)
            fwd = f"mu_{len(incoming[name])}"
            incoming[name].append(fwd)
            eqs = [f"{fwd}_post = {edge.forward} : 1 (summed)"]
            bwd = None
            if not pre.clamped:
                bwd = f"fb_{len(feedback[parent])}"
                feedback[parent].append(bwd)
                eqs.append(f"{bwd}_pre = {edge.backward} : 1 (summed)")
            values: dict[str, np.ndarray] = {}
            if edge.weight is not None:
                eqs.insert(0, "weight : 1 (constant)")
                values["weight"] = edge.weight
            proj = Projection(f"s{len(projections)}_{_identifier(name)}_{edge.parent}", pre.name, post.name,
                              edge.i, edge.j, eqs, fwd, bwd, values, clamped_pre=pre.clamped)
            g = gates[name]
            if edge.param is not None and g is not None:
                # plasticity as synaptic state: per-synapse accumulator of the Hebbian term
                # (the synapse's gate is `gate_syn`: Brian2 refuses a synaptic name that hides a neuron's)
                proj.equations += [rename(EQUATIONS.plasticity, gate="gate_syn") + " (clock-driven)",
                                   "hebb = err_post * x_pre : 1", rename(g[0], gate="gate_syn"),
                                   "kidx : integer (constant)"]
                proj.values["kidx"] = edge.kidx
                proj.times.update(g[1])
                proj.tables.update(g[2])
                proj.param, proj.plastic = edge.param, True
            elif pre.clamped and inputs_once:
                # a clamped input through fixed weights gives a constant prediction: summed at t = 0
                # into a drive population whose variable the post population links to
                proj.once = True
                linked[name].add(fwd)
            proj.times["tau_w"] = field.tau_w
            if field.target_shown and field.t_on > 0:
                # the synapse evaluates err_post, which switches at t_on, in its own namespace
                proj.times["t_on"] = field.t_on
            projections.append(proj)

    for name in graph.latent:
        _latent_equations(field, pops[name], incoming[name], feedback[name], offsets[name], gates[name],
                          linked[name])
    shapes = {p: tuple(problem.params[p].shape) for p in problem.params}
    return Network(pops, projections, shapes, n_steps, dt)


def _latent_equations(field: VectorField, pop: Population, mu_terms, fb_terms, offsets, gate, linked) -> None:
    name = pop.vertex
    problem = field.problem
    E = EQUATIONS
    leaky = field.tau_e[name] > 0
    output = name in field.outputs
    pop.output, pop.leaky = output, leaky
    eqs: list[str] = []
    terms = list(mu_terms)
    bias = [o for o in offsets if o.param is not None]
    const = [o for o in offsets if o.param is None]
    if bias:
        eqs.append("b : 1 (constant)")
        pop.values["b"] = sum(o.values for o in bias)
        terms.append("b")
    if const:
        eqs.append("c : 1 (constant)")
        pop.values["c"] = sum(o.values for o in const)
        terms.append("c")
    eqs.append(f"mu = {' + '.join(terms) if terms else '0'} : 1")
    eqs += [f"{t} : 1 (linked)" if t in linked else f"{t} : 1" for t in mu_terms]
    pop.times.update({"tau_x": field.tau_x[name], "tau_w": field.tau_w})
    if leaky:
        pop.times["tau_e"] = field.tau_e[name]
        pop.values["err"] = np.zeros(pop.n)
    if not output:
        eqs.append(f"fb = {' + '.join(fb_terms) if fb_terms else '0'} : 1")
        eqs += [f"{t} : 1" for t in fb_terms]
        eqs += [E.value, E.error_leaky if leaky else E.error_instant]
        pop.monitor = ("x", "err")
    else:
        pop.monitor = ("x", "err", "mu")
        free_err = E.error_leaky if leaky else E.error_instant
        shown_err = E.output_error_leaky if leaky else E.output_error_instant
        if field.target_shown:
            pop.values["y"] = _np(problem.targets[name])
            eqs += ["y : 1 (constant)", "target_err = y - mu : 1"]  # MSE: -dL/dmu
        if not field.target_shown:
            eqs += [E.free_output, free_err]
        elif field.t_on <= 0.0:
            eqs += ["x : 1 (constant)", shown_err]  # clamped from the start: only the error moves
        else:  # free until t_on, clamped from then on
            pop.times["t_on"] = field.t_on
            eqs += ["shown = int(t >= t_on) : 1",
                    switch(split(E.free_output)[0], rhs(E.free_output), "0"),
                    switch(split(free_err)[0], rhs(free_err), rhs(shown_err))]
    if bias and gate is not None:
        params = {o.param for o in bias}
        if len(params) != 1:
            raise RenderError(f"vertex '{name}' adds {len(params)} bias parameters; the brian2 backend holds one")
        pop.bias = bias[0].param
        pop.bias_index = bias[0].index
        eqs += [rename(E.plasticity, w="w_b", hebb="hebb_b"), "hebb_b = err : 1", gate[0]]
        pop.times.update(gate[1])
        pop.tables.update(gate[2])
    pop.equations = eqs


def checked_steps(t_end: float, dt: float) -> int:
    n = int(round(t_end / dt))
    if n < 1 or not math.isclose(n * dt, t_end, rel_tol=1e-9, abs_tol=1e-12 * dt):
        raise ValueError(f"the brian2 backend steps on a fixed clock: t_end = {t_end} must be a whole number "
                         f"of steps dt = {dt} (got {t_end / dt:.6g} steps)")
    return n
