"""level(): identity vertices on edges that skip levels, counted by hand; gradients unchanged.

Graph specs are latent vertex -> parents (tests/graph/dags.py); `x` is the input.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pcsim
from pcsim.graph.level import level
from tests.graph.dags import build_graph, example_data, path_lengths, reference_grads
from tests.graph.helpers import DT, Net, assert_grads_match, module_grads, random_targets, seeded

CHAIN = {"a": ("x",), "b": ("a",), "c": ("b",)}
# The AAAI paper's Figure 3: a residual MLP, G(s) = s z3 + s z3 z2 z1 -- a skips over b.
RESIDUAL = {"a": ("x",), "b": ("a",), "out": ("b", "a")}
# ResNet-style: s0 skips 3 levels to s3 and 2 levels to s2; one chain of 2 identities serves both.
RESNET = {"s0": ("x",), "s1": ("s0",), "s2": ("s1", "s0"), "s3": ("s2", "s0"), "out": ("s3",)}
# p (level 5) feeds children at levels 4, 2 and 1: 5 - 1 - 1 = 3 identities.
FAN = {"p": ("x",), "c4": ("p",), "c3": ("c4",), "c2": ("c3", "p"), "c1": ("c2", "p"), "out": ("c1",)}
# Two outputs at different depths: a feeds out2 directly and out1 through b, c.
TWO_OUTPUTS = {"a": ("x",), "b": ("a",), "c": ("b",), "out1": ("c",), "out2": ("a",)}

HAND_COUNTS = {"residual": (RESIDUAL, 1), "resnet": (RESNET, 2), "fan": (FAN, 3),
               "two-outputs": (TWO_OUTPUTS, 2)}


def _bp_same(original: pcsim.Graph, levelled: pcsim.Graph, spec) -> None:
    inputs, targets = example_data(original)
    ref = reference_grads(spec, original.params, original.inputs, inputs, original.outputs, targets)
    assert_grads_match(pcsim.bp(original, inputs, targets), ref)
    assert_grads_match(pcsim.bp(levelled, inputs, targets), ref)


def _edges_step_one_level(g: pcsim.Graph) -> None:
    """In a levelled graph every latent edge joins adjacent levels (checked by path enumeration)."""
    spec = {v.name: v.parents for v in g.vertices if not v.is_input}
    lengths = path_lengths(spec, g.outputs)
    for v, ls in lengths.items():
        assert len(ls) == 1, f"{v} reaches the outputs by paths of lengths {sorted(ls)}"
    for v in g.vertices:
        for p in v.parents:
            if p not in g.clamped and v.name in lengths:
                assert lengths[p] == {min(lengths[v.name]) + 1}, (p, v.name)


def test_chain_is_returned_unchanged():
    g = build_graph(CHAIN)
    assert g.is_levelled
    assert level(g) is g and g.level() is g


@pytest.mark.parametrize("name", HAND_COUNTS)
def test_identity_count_matches_hand_count(name):
    spec, count = HAND_COUNTS[name]
    g = build_graph(spec)
    assert not g.is_levelled
    lg = g.level()
    assert lg is not g and lg.is_levelled
    assert lg.n_identity == count == len(lg.identity_vertices)
    assert lg.outputs == g.outputs and lg.inputs == g.inputs and lg.params is g.params
    for name_ in lg.identity_vertices:
        v = lg[name_]
        assert v.inserted and v.op == "identity" and len(v.parents) == 1
        assert v.shape == g[_origin(lg, name_)].shape and v.dtype == g[_origin(lg, name_)].dtype
        assert name_ not in g
    assert [v.name for v in lg.vertices if not v.inserted] == [v.name for v in g.vertices]
    _edges_step_one_level(lg)
    _bp_same(g, lg, spec)
    assert lg.level() is lg


def _origin(g: pcsim.Graph, name: str) -> str:
    while g[name].inserted:
        name = g[name].parents[0]
    return name


def test_residual_rewiring():
    lg = build_graph(RESIDUAL).level()
    (ident,) = lg.identity_vertices
    assert lg[ident].parents == ("a",)
    assert lg["out"].parents == ("b", ident)
    assert lg.max_distance == lg.min_distance == {"out": 0, "b": 1, ident: 1, "a": 2}


def test_resnet_chain_is_shared():
    lg = build_graph(RESNET).level()
    first, second = lg.identity_vertices
    assert lg[first].parents == ("s0",) and lg[second].parents == (first,)
    assert lg["s2"].parents == ("s1", first)
    assert lg["s3"].parents == ("s2", second)


def test_two_outputs_at_different_depths():
    lg = build_graph(TWO_OUTPUTS).level()
    assert lg.min_distance == lg.max_distance
    assert lg.min_distance["a"] == 3
    assert _origin(lg, lg["out2"].parents[0]) == "a"


def test_identity_names_do_not_clash_with_existing_names():
    spec = {"a": ("x",), "a__level1": ("a",), "b": ("a__level1",), "out": ("b", "a")}
    g = build_graph(spec)
    lg = g.level()
    assert lg.n_identity == 2  # a is at level 3, out at 0: identities at levels 2 and 1
    assert not set(lg.identity_vertices) & {v.name for v in g.vertices}
    assert any(i.startswith("a__level1") for i in lg.identity_vertices)  # the natural name was taken
    assert len({v.name for v in lg.vertices}) == len(lg.vertices)
    assert not lg["a__level1"].inserted
    _bp_same(g, lg, spec)


def test_clamped_edges_and_dead_ends_are_left_alone():
    spec = {"a": ("x",), "b": ("a", "x"), "c": ("b", "x"), "dead": ("a",), "out": ("c", "x")}
    g = build_graph(spec, outputs=("out",))
    assert g.is_levelled and g.level() is g
    spec2 = {**spec, "out": ("c", "a")}
    lg = build_graph(spec2, outputs=("out",)).level()
    assert lg["dead"].parents == ("a",) and lg["c"].parents == ("b", "x")
    assert lg.n_identity == 2


# -- on traced modules: the levelled graph still gives the module's own gradients --------------------
def _residual_mlp(s, x):
    h1 = torch.tanh(s.l1(x))
    h2 = torch.tanh(s.l2(h1))
    return s.l3(h2) + h1


def _two_heads(s, x):
    h = torch.tanh(s.l1(x))
    return s.l3(torch.tanh(s.l2(h))), s.head(h)


@pytest.mark.parametrize("body", [_residual_mlp, _two_heads], ids=["residual-mlp", "two-heads"])
def test_levelled_traced_graph_keeps_module_gradients(body):
    with seeded(0):
        net = Net(body, l1=nn.Linear(4, 5), l2=nn.Linear(5, 5), l3=nn.Linear(5, 5),
                  head=nn.Linear(5, 2)).to(DT)
        x = torch.randn(3, 4, dtype=DT)
    g = pcsim.trace(net, x)
    lg = g.level()
    assert not g.is_levelled and lg.is_levelled and lg.n_identity >= 1
    targets = random_targets(net, (x,))
    ref = module_grads(net, (x,), targets)
    assert_grads_match(pcsim.bp(lg, (x,), targets if len(targets) > 1 else targets[0]), ref)


class _Gates(nn.Module):
    """A 2H-wide pre-activation split in two gates; the second reaches the output 2 levels sooner."""

    def __init__(self):
        super().__init__()
        self.pre, self.head = nn.Linear(3, 8), nn.Linear(4, 2)

    def forward(self, x):
        i, o = self.pre(x).chunk(2, -1)
        return self.head(torch.tanh(torch.tanh(torch.tanh(i))) * o)


def test_chain_runs_below_a_smaller_single_parent_vertex():
    """The o gate is raised next to its parent, so its identities are H wide, not 2H."""
    with seeded(0):
        module = _Gates().to(DT)
    x = torch.randn(5, 3, dtype=DT)
    g = pcsim.trace(module, x)
    levelled = level(g)
    inserted = [v for v in levelled.vertices if v.inserted]
    assert len(inserted) == 3  # levels 4, 3, 2 between o (raised to 5) and the product (1)
    assert all(tuple(v.shape) == (5, 4) for v in inserted)  # o's shape; the pre-activation is (5, 8)
    _edges_step_one_level(levelled)
    targets = random_targets(module, (x,))
    assert_grads_match(pcsim.zil(levelled, (x,), targets), module_grads(module, (x,), targets))
