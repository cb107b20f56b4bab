"""pcsim's populations as Brian2 equations and connectivity: data only, no Brian2 import.

A latent vertex is a population (one neuron per entry) with the `EQUATIONS` of dynamics/equations.py, `mu` and
`fb` spelled out as sums of one summed variable per projection (`mu_0 + mu_1 + b`): two Synapses summing into one
variable keep only the last (brian2 issue 766). An edge is one projection carrying its prediction forward and
J^T err back, plasticity as a per-synapse accumulator `w`; biases are per-neuron constants `b` with accumulators.
Clamped vertices (inputs, and what is computed from inputs alone) are constant populations `x`.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from pcsim.algorithms.losses import MSE, CrossEntropy
from pcsim.backends.brian2.circuits import Circuit, circuit_of, cross_entropy
from pcsim.backends.brian2.expressions import gate_equation, quiet, quiet_times, rename, split, switch
from pcsim.backends.brian2.ops import edges_of
from pcsim.backends.brian2.synapses import WHY, Offset, size, to_numpy, unsupported
from pcsim.dynamics.equations import EQUATIONS
from pcsim.dynamics.field import VectorField
from pcsim.errors import PcsimError
from pcsim.graph.provenance import user_stacklevel

NAMED = 4  # populations a message names before it counts the rest


class RenderError(PcsimError, NotImplementedError):
    """The simulation asks for something the Brian2 rendering does not express."""


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
    leaky: bool = False
    # per-neuron plasticity accumulators, summed into a parameter when read: (variable, parameter, index)
    accumulators: list[tuple[str, str, np.ndarray]] = field(default_factory=list)
    code: list[tuple[str, int]] = field(default_factory=list)  # statements run at a stage of each step
    monitor: tuple[str, ...] = ()


@dataclass
class Projection:
    name: str
    pre: str  # population names
    post: str
    i: np.ndarray
    j: np.ndarray
    equations: list[str]
    forward: str = ""  # the summed variable it sets on the post population (e.g. mu_0)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    tables: dict[str, np.ndarray] = field(default_factory=dict)
    param: str | None = None  # plastic: the parameter whose accumulators `w` (indexed by `kidx`) it holds
    once: bool = False  # summed once at t = 0 into a drive population (clamped input, fixed weights)
    orders: dict[str, int] = field(default_factory=dict)  # summed variable -> its stage (circuits.py)


@dataclass
class Network:
    populations: dict[str, Population]  # by vertex name
    projections: list[Projection]
    helpers: list[Population]  # circuits' instantaneous helper groups (circuits.py)
    param_shapes: dict[str, tuple[int, ...]]
    n_steps: int
    dt: float

    def describe(self) -> str:
        """The rendered equations, population by population (what a Brian2 user would write)."""
        blocks = [(f"NeuronGroup {p.name} ({p.vertex}, N = {p.n})", p) for p in self.populations.values()]
        blocks += [(f"NeuronGroup {p.name} (helper of {p.vertex}, N = {p.n})", p) for p in self.helpers]
        blocks += [(f"Synapses {s.name} ({s.pre} -> {s.post}, {s.i.size} synapses)", s) for s in self.projections]
        return "\n".join(line for head, obj in blocks for line in [f"{head}:", *(f"    {e}" for e in obj.equations)])


def _identifier(name: str) -> str:
    """A vertex name as part of a Brian2 object name, which must be ASCII (an attribute may be `self.ñame`, which
    regex's \\W keeps); the objects' numbered prefixes keep names that this maps alike apart."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _synapse_times(field: VectorField, name: str, dt: float) -> dict[str, float]:
    """A synapse into `name` reads err_post, which switches at t_on and is quiet with its population, in its own
    namespace."""
    shown = {"t_on": field.t_on - field.nudge} if field.target_shown and field.t_on > 0 else {}
    return {**shown, **quiet_times(field, name, dt)}


def render(field: VectorField, *, dt: float, n_steps: int, inputs_once: bool = True) -> Network:
    problem, graph = field.problem, field.problem.graph
    for loss_vertex, loss in problem.losses.items() if field.target_shown else ():
        # by type, not name: a subclass of MSE or CrossEntropy keeps its parent's name, and would render as it
        if type(loss) not in (MSE, CrossEntropy):
            raise RenderError(f"the brian2 backend renders the MSE and cross-entropy output errors; output "
                              f"'{loss_vertex}' has loss {type(loss).__name__} ('{loss.name}'). Use backend='scipy' "
                              "or 'torch' for it.")
        if isinstance(loss, CrossEntropy) and loss.ignoring:
            raise RenderError(f"the target for output '{loss_vertex}' leaves entries out (class index -100), which "
                              "the brian2 backend's cross-entropy circuit does not; use backend='scipy' or 'torch'")
    if field.narrow:  # the torch and scipy backends compute each population in its own dtype, as autograd does
        named = [f"'{n}' ({str(d).removeprefix('torch.')})" for n, d in field.narrow.items()]
        narrow = ", ".join(named[:NAMED]) + (f" and {len(named) - NAMED} more" if len(named) > NAMED else "")
        warnings.warn(f"the brian2 backend computes every population in float64, the module computes {narrow} in a "
                      "narrower dtype: the run differs from autograd's by that dtype's rounding (backend='torch' or "
                      "'scipy' keep each population's own dtype)", stacklevel=user_stacklevel())
    pops: dict[str, Population] = {}
    helpers: list[Population] = []
    projections: list[Projection] = []
    circuits: dict[str, Circuit] = {}
    incoming: dict[str, list[str]] = {n: [] for n in graph.latent}  # mu terms per vertex
    linked: dict[str, set[str]] = {n: set() for n in graph.latent}  # mu terms summed once, elsewhere
    feedback: dict[str, list[str]] = {n: [] for n in graph.latent}  # fb terms per vertex
    offsets: dict[str, list[Offset]] = {n: [] for n in graph.latent}

    def population_of(name: str) -> Population:
        if name not in pops:
            k, n = len(pops), size(graph[name].shape)
            if name in graph.clamped:
                pops[name] = Population(f"c{k}_{_identifier(name)}", name, n, ["x : 1 (constant)"],
                                        {"x": to_numpy(problem.clamped[name])}, clamped=True)
            else:
                pops[name] = Population(f"p{k}_{_identifier(name)}", name, n, [], {"x": to_numpy(field.base[name])})
        return pops[name]

    plastic = any(k[0] == "w" for k in field.layout)
    gates = {n: gate_equation(field.gate, n, field.levels.get(n), n_steps, dt, field.nudge) if plastic else None
             for n in graph.latent}

    for name in graph.latent:
        vertex = graph[name]
        if not vertex.parents:  # no synapse to carry its Hebbian term: its update would silently stay zero
            raise unsupported(vertex, f"it reads parameters alone (a parameter returned as an output), so no "
                                      f"synapse carries its Hebbian term; {WHY}. Use backend='scipy' or 'torch'")
        post = population_of(name)
        shapes = [tuple(graph[p].shape) for p in vertex.parents]
        circuit = circuit_of(vertex, shapes, problem.params, graph.constants)
        if circuit is not None:
            circuits[name] = circuit
            _wire(field, name, circuit, population_of, helpers, feedback, projections, dt)
            continue
        edges, offsets[name] = edges_of(vertex, shapes, problem.params, graph.constants,
                                        [problem.clamped.get(p) for p in vertex.parents])
        for edge in edges:
            parent = vertex.parents[edge.parent]
            pre = population_of(parent)
            fwd = f"mu_{len(incoming[name])}"
            incoming[name].append(fwd)
            eqs = [] if edge.weight is None else ["weight : 1 (constant)"]
            eqs.append(f"{fwd}_post = {edge.forward} : 1 (summed)")
            if not pre.clamped:
                feedback[parent].append(f"fb_{len(feedback[parent])}")
                eqs.append(f"{feedback[parent][-1]}_pre = {edge.backward} : 1 (summed)")
            label = f"s{len(projections)}_{_identifier(name)}_{_identifier(str(edge.parent))}"
            proj = Projection(label, pre.name, post.name, edge.i, edge.j, eqs, fwd,
                              {} if edge.weight is None else {"weight": edge.weight},
                              {"tau_w": field.tau_w, **_synapse_times(field, name, dt)})
            gate = gates[name]
            if edge.param is not None and gate is not None:
                # a per-synapse accumulator of the Hebbian term, gated by `gate_syn` (Brian2 refuses a synaptic
                # name that hides a neuron's)
                proj.equations += [rename(EQUATIONS.plasticity, gate="gate_syn") + " (clock-driven)",
                                   "hebb = err_post * x_pre : 1", rename(gate[0], gate="gate_syn"),
                                   "kidx : integer (constant)"]
                proj.values["kidx"] = edge.kidx
                proj.times.update(gate[1])
                proj.tables.update(gate[2])
                proj.param = edge.param
            elif pre.clamped and inputs_once:
                # a clamped input through fixed weights gives a constant prediction: summed at t = 0
                # into a drive population whose variable the post population links to
                proj.once = True
                linked[name].add(fwd)
            projections.append(proj)

    for name in graph.latent:
        _latent_equations(field, pops[name], incoming[name], feedback[name], offsets[name], gates[name],
                          linked[name], circuits.get(name))
        if name in field.outputs and field.target_shown and type(problem.losses[name]) is CrossEntropy:
            _wire(field, name, cross_entropy(graph[name].shape), population_of, helpers, feedback, projections, dt)
        quiet(pops[name], quiet_times(field, name, dt))
    shapes = {p: tuple(problem.params[p].shape) for p in problem.params}
    return Network(pops, projections, helpers, shapes, n_steps, dt)


def _wire(field: VectorField, name: str, circuit: Circuit, population_of, helpers, feedback, projections,
          dt: float) -> None:
    """A circuit's helper groups, links and summed projections (circuits.py) around vertex `name`."""
    vertex = field.problem.graph[name]
    own = population_of(name)
    groups = {}
    for g in circuit.groups:
        groups[g.name] = Population(f"{own.name}_{g.name}", name, g.n, list(g.equations), dict(g.values))
        helpers.append(groups[g.name])

    def ref(source: str) -> Population:
        if source == "self":
            return own
        if source.startswith("parent:"):
            return population_of(vertex.parents[int(source.split(":")[1])])
        return groups[source]

    merged: dict[tuple, Projection] = {}  # sums over the same synapses share one Synapses object
    for s in circuit.sums:
        pre, post = ref(s.pre), ref(s.post)
        target = pre if s.side == "pre" else post
        var = s.var
        if var == "fb":
            if target.clamped:
                continue  # a constant population takes no feedback
            var = f"fb_{len(feedback[target.vertex])}"
            feedback[target.vertex].append(var)
        key = (pre.name, post.name, s.i.tobytes(), s.j.tobytes(), tuple(s.values))
        if key not in merged:
            merged[key] = Projection(f"s{len(projections)}_{_identifier(name)}_c", pre.name, post.name, s.i, s.j,
                                     [f"{c} : 1 (constant)" for c in s.values], "", dict(s.values),
                                     _synapse_times(field, name, dt))
            projections.append(merged[key])
        merged[key].equations.append(f"{var}_{s.side} = {s.expr} : 1 (summed)")
        merged[key].orders[f"{var}_{s.side}"] = s.stage


def _latent_equations(field: VectorField, pop: Population, mu_terms, fb_terms, offsets, gate, linked,
                      circuit: Circuit | None) -> None:
    name, problem, E = pop.vertex, field.problem, EQUATIONS
    pop.leaky = leaky = field.tau_e[name] > 0
    err = E.error_leaky if leaky else E.error_instant
    eqs: list[str] = []
    terms = list(mu_terms)
    bias = [o for o in offsets if o.param is not None]
    for var, parts in (("b", bias), ("c", [o for o in offsets if o.param is None])):
        if parts:
            eqs.append(f"{var} : 1 (constant)")
            pop.values[var] = sum(o.values for o in parts)
            terms.append(var)
    if circuit is not None:
        terms.insert(0, f"({circuit.mu})")
        eqs += circuit.equations
        pop.values.update(circuit.values)
        pop.code = list(circuit.code)
    eqs.append(f"mu = {' + '.join(terms) if terms else '0'} : 1")
    eqs += [f"{t} : 1 (linked)" if t in linked else f"{t} : 1" for t in mu_terms]
    pop.times.update({"tau_x": field.tau_x[name], "tau_w": field.tau_w})
    if leaky:
        pop.times["tau_e"] = field.tau_e[name]
        pop.values["err"] = np.zeros(pop.n)
    pop.monitor = ("x", "err", "mu") if name in field.outputs else ("x", "err")
    if name not in field.outputs:
        eqs.append(f"fb = {' + '.join(fb_terms) if fb_terms else '0'} : 1")
        eqs += [f"{t} : 1" for t in fb_terms]
        eqs += [E.value, err]
    elif not field.target_shown:
        eqs += [E.free_output, err]
    else:
        target = problem.targets[name]
        loss = problem.losses[name]
        if type(loss) is CrossEntropy:  # the class distribution; the softmax's normaliser zce: cross_entropy
            shape = tuple(problem.graph[name].shape)
            pop.values["y"] = to_numpy(loss.distribution(target, shape, torch.float64)).reshape(-1)
            eqs += ["y : 1 (constant)", "target_err = y - exp(mu) / zce : 1", "zce : 1"]  # -dL/dmu, rows of y sum to 1
        else:
            pop.values["y"] = to_numpy(target)
            eqs += ["y : 1 (constant)", "target_err = y - mu : 1"]  # MSE: -dL/dmu
        shown_err = E.output_error_leaky if leaky else E.output_error_instant
        if field.t_on <= 0.0:
            eqs += ["x : 1 (constant)", shown_err]  # clamped from the start: only the error moves
        else:  # free until t_on, clamped from then on
            pop.times["t_on"] = field.t_on - field.nudge  # read as the field reads it (`VectorField.nudge`)
            eqs += ["shown = int(t >= t_on) : 1", switch(E.free_output, "0"), switch(err, split(shown_err)[1])]
    if gate is not None:
        # one accumulator of err serves every bias (and embedding row) the vertex adds; a circuit's
        # parameters (a norm's scale and shift) have their own Hebbian terms
        terms = [("b", "err")] if bias else []
        pop.accumulators += [("w_b", o.param, o.index) for o in bias]
        for k, a in enumerate(circuit.accumulators if circuit is not None else ()):
            terms.append((f"g{k}", a.hebb))
            pop.accumulators.append((f"w_g{k}", a.param, a.index))
        for suffix, hebb in terms:
            eqs += [rename(E.plasticity, w=f"w_{suffix}", hebb=f"hebb_{suffix}"), f"hebb_{suffix} = {hebb} : 1"]
        if terms:
            eqs.append(gate[0])
            pop.times.update(gate[1])
            pop.tables.update(gate[2])
    pop.equations = eqs


def checked_steps(t_end: float, dt: float) -> int:
    n = int(round(t_end / dt))
    if n < 1 or not math.isclose(n * dt, t_end, rel_tol=1e-9, abs_tol=1e-12 * dt):
        raise ValueError(f"the brian2 backend steps on a fixed clock: t_end = {t_end} must be a whole number "
                         f"of steps dt = {dt} (got {t_end / dt:.6g} steps)")
    return n
