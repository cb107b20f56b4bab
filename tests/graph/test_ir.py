"""The Graph IR: validation, lookups, clamping, parameter users and distances to the outputs."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

import pcsim
from pcsim.graph.ir import ConstArg, Graph, ParamArg, ParentArg, Vertex
from tests.graph.dags import (
    BATCH,
    WIDTH,
    build_graph,
    example_data,
    make_params,
    reference_grads,
    tanh_linear_sum,
    weight_name,
)
from tests.graph.helpers import DT, TOL, assert_grads_match, module_grads, seeded

SHAPE = (BATCH, WIDTH)


def inp(name="x"):
    return Vertex(name, "input", SHAPE, DT)


def lat(name, *parents, w="w", fn=tanh_linear_sum, args=None, **kw):
    if args is None:
        args = tuple(a for j in range(len(parents)) for a in (ParentArg(j), ParamArg(w)))
    return Vertex(name, "tanh_linear_sum", SHAPE, DT, parents=parents, fn=fn, args=args, **kw)


def graph(vertices, outputs, inputs=("x",), params=None, constants=None):
    params = {"w": torch.eye(WIDTH, dtype=DT)} if params is None else params
    return Graph(tuple(vertices), tuple(inputs), tuple(outputs), params=params, constants=constants or {},
                 param_names=tuple(params))


def test_a_valid_hand_built_graph():
    g = graph([inp(), lat("a", "x"), lat("b", "a")], ["b"])
    assert len(g) == 3 and "a" in g and "zz" not in g and g["b"].parents == ("a",)
    assert g.children == {"x": ("a",), "a": ("b",), "b": ()}
    assert g.clamped == {"x"} and g.latent == ("a", "b")
    assert g.users == {"w": ("a", "b")}
    assert g.identity_vertices == () and g.n_identity == 0
    with pytest.raises(KeyError, match="zz"):
        g["zz"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.outputs = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        g["a"].name = "c"


@pytest.mark.parametrize(("vertices", "outputs", "kwargs", "words"), [
    ([inp(), lat("a", "x"), lat("a", "x")], ["a"], {}, ["two vertices", "'a'"]),
    ([inp(), lat("a", "ghost")], ["a"], {}, ["'ghost'", "does not exist"]),
    ([inp(), lat("a", "b"), lat("b", "x")], ["a"], {}, ["'b'", "comes later"]),
    ([inp(), lat("a", "x")], [], {}, ["no output"]),
    ([inp(), lat("a", "x"), lat("b", "a")], ["a", "b"], {}, ["'a'", "feeds"]),
    ([inp(), lat("a", "x", w="nope")], ["a"], {}, ["unknown parameter", "'nope'"]),
    ([inp(), lat("a", "x", args=(ParentArg(0), ConstArg("c")))], ["a"], {}, ["unknown constant", "'c'"]),
    ([inp(), lat("a", "x", args=(ParentArg(1), ParamArg("w")))], ["a"], {}, ["parent #1"]),
    ([inp(), lat("a", "x", fn=None)], ["a"], {}, ["no function"]),
    ([inp(), Vertex("y", "input", SHAPE, DT, parents=("x",)), lat("a", "y")], ["a"], {"inputs": ("x", "y")},
     ["'y'", "cannot have parents"]),
    ([inp(), lat("a", "x")], ["b"], {}, ["'b'", "not a vertex"]),
    ([inp(), lat("a", "x")], ["x"], {}, ["'x'", "no parameter"]),
    ([inp(), lat("a", "x")], ["a"], {"inputs": ("a",)}, ["'a'", "not an input"]),
    ([inp(), Vertex("a", "t", (2, -1), DT, parents=("x",), fn=torch.tanh, args=(ParentArg(0),))], ["a"], {},
     ["no known shape"]),
], ids=["duplicate", "unknown-parent", "parent-later", "no-outputs", "output-with-children", "unknown-param",
        "unknown-constant", "parent-index", "no-function", "input-with-parents", "unknown-output",
        "clamped-output", "latent-as-input", "negative-shape"])
def test_validation_errors(vertices, outputs, kwargs, words):
    with pytest.raises(pcsim.GraphError) as info:
        graph(vertices, outputs, **kwargs)
    for w in words:
        assert w in str(info.value)


def test_vertex_lists_params_and_constants_once_in_first_use_order():
    v = Vertex("v", "f", SHAPE, DT, parents=("x",), fn=tanh_linear_sum,
               args=(ParentArg(0), ParamArg("b"), [ParamArg("a"), ConstArg("k")]),
               kwargs=(("z", {"q": ParamArg("b"), "r": ConstArg("j")}),))
    assert v.params == ("b", "a")
    assert v.constants == ("k", "j")
    assert not v.is_input and Vertex("x", "input", SHAPE, DT).is_input


def test_clamped_covers_parameter_free_functions_of_inputs_only():
    flat = Vertex("f", "tanh", SHAPE, DT, parents=("x",), fn=torch.tanh, args=(ParentArg(0),))
    mixed = Vertex("m", "add", SHAPE, DT, parents=("f", "a"), fn=torch.add, args=(ParentArg(0), ParentArg(1)))
    pure_param = Vertex("p", "mul", (WIDTH, WIDTH), DT, fn=torch.mul, args=(ParamArg("w"), 2.0))
    g = graph([inp(), flat, lat("a", "f"), mixed, pure_param, lat("o", "m")], ["o", "p"])
    assert g.clamped == {"x", "f"}
    assert g.latent == ("a", "m", "p", "o")


# The hand-drawn DAG (x is the input; d reaches no output):
#   x -> a -> b -> c -> out1,  a -> c,  b -> out2,  c -> out2,  a -> d
DRAWN = {"a": ("x",), "b": ("a",), "c": ("a", "b"), "d": ("a",), "out1": ("c",), "out2": ("b", "c")}


def _drawn():
    return build_graph(DRAWN, outputs=("out1", "out2"))


def test_distances_on_a_hand_drawn_dag():
    g = _drawn()
    assert g.min_distance == {"out1": 0, "out2": 0, "c": 1, "b": 1, "a": 2}
    assert g.max_distance == {"out1": 0, "out2": 0, "c": 1, "b": 2, "a": 3}
    assert g.depth == 3
    assert not g.is_levelled


def test_levelled_and_unlevelled_small_graphs():
    assert build_graph({"a": ("x",), "b": ("a",), "c": ("b",)}).is_levelled
    assert build_graph({"a": ("x",), "b": ("a",), "c": ("b", "x")}).is_levelled  # inputs are clamped
    assert build_graph({"a": ("x",), "b": ("a",), "c": ("a",), "o": ("b", "c")}).is_levelled  # diamond
    assert not build_graph({"a": ("x",), "b": ("a",), "o": ("a", "b")}).is_levelled  # skip


def test_params_shared_by_name_have_several_users():
    params = make_params({"a": ("x",)})
    shared = next(iter(params))
    vs = [inp(), lat("a", "x", w=shared), lat("b", "a", w=shared), lat("c", "b", w=shared)]
    g = graph(vs, ["c"], params={**params, "unused": torch.zeros(1, dtype=DT)})
    assert g.users == {shared: ("a", "b", "c"), "unused": ()}


def test_summary_and_repr_name_every_vertex():
    g = _drawn()
    text = g.summary()
    for v in g.vertices:
        assert v.name in text
    assert "levelled=False" in repr(g)


def test_pruned_drops_only_the_latent_vertices_that_reach_no_output():
    g = _drawn()  # d reads a and reaches no output
    p = g.pruned()
    assert "d" not in p and set(p.latent) == set(g.latent) - {"d"}
    assert p.min_distance == g.min_distance and p.inputs == g.inputs and p.outputs == g.outputs
    assert p.pruned() is p and build_graph({"a": ("x",), "b": ("a",)}).pruned().latent == ("a", "b")


@pytest.mark.parametrize("rule", ["zil", "wavefront", "autonomous"])
def test_exact_rules_ignore_a_dead_end_vertex(rule):
    """A vertex that reaches no output (`d`, hanging off `a`) changes no update: autograd's oracle."""
    spec = {"a": ("x",), "b": ("a",), "d": ("a",), "c": ("b",)}
    g = build_graph(spec, outputs=("c",))
    inputs, targets = example_data(g)
    ref = reference_grads(spec, g.params, g.inputs, inputs, g.outputs, targets)
    run = pcsim.zil if rule == "zil" else (lambda *a: pcsim.fa_zil(*a, mode=rule))
    got = run(g, inputs, targets[0])
    assert float(ref[weight_name("a", 0)].norm()) > 0 and float(got[weight_name("d", 0)].abs().max()) == 0
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=TOL, atol=TOL * float(ref[name].abs().max() + 1))


def test_derived_structure_is_computed_once_per_graph():
    g = _drawn()
    calls = []
    assert g.derived("k", lambda graph: calls.append(graph) or len(graph)) == len(g)
    assert g.derived("k", lambda graph: calls.append(graph) or -1) == len(g) and calls == [g]
    assert g.level() is g.level() and g.level().is_levelled and g.pruned() is g.pruned()
    assert g.level().level() is g.level()  # a levelled graph is its own levelled copy


class _Pooled(torch.nn.Module):
    """Ops the table names no torch function for (conv2d, max_pool2d_with_indices, abs, amax: each vertex calls a
    torch OpOverload), and a weight read transposed inside another vertex's call (a `Computed` slot)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(1, 2, 3), torch.nn.Linear(18, 4)

    def forward(self, x):
        h = torch.abs(self.fc(torch.nn.functional.max_pool2d(self.conv(x), 2).flatten(1)))
        return h @ self.fc.weight + h.amax(1, keepdim=True)


@pytest.mark.parametrize("rule", [pcsim.zil, pcsim.bp, lambda *a: pcsim.fa_zil(*a, mode="autonomous")],
                         ids=["zil", "bp", "fa-zil-autonomous"])
def test_a_graph_of_aten_overloads_pickles_after_the_rules_ran(rule):
    """pickle stopped with 'pybind11_detail_function_record ... is not pickleable' on any graph with such a vertex,
    and on every graph a rule had run on with "Can't pickle local object 'Vertex.bind.<locals>.<lambda>'"; the
    README says a pickled graph holds its own copies. Oracle: autograd on the module."""
    with seeded(0):
        net = _Pooled().to(DT)
        x, y = torch.randn(2, 1, 8, 8, dtype=DT), torch.randn(2, 18, dtype=DT)
    graph = pcsim.trace(net, x)
    rule(graph, (x,), y)  # caches the vertices' call binders and the graph's plans
    copied = pickle.loads(pickle.dumps(graph))
    assert {v.op for v in copied.vertices} >= {"conv2d", "max_pool2d_with_indices", "abs", "amax"}
    assert_grads_match(rule(copied, (x,), y), module_grads(net, (x,), (y,)))
