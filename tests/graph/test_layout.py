"""pcsim.graph.layout: columns by level, identity vertices marked, DOT text that says the same."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import pcsim
from pcsim.graph.ir import ParentArg, Vertex
from pcsim.graph.layout import KINDS, drawing_levels, layout, to_dot
from pcsim.zoo import load_model_file


def residual_graph(levelled: bool) -> pcsim.Graph:
    module, inputs, _ = load_model_file("residual_mlp").build_model()
    g = pcsim.trace(module, *inputs)
    return g.level() if levelled else g


def test_levelled_residual_mlp_has_one_identity_in_the_skipped_column():
    lay = layout(residual_graph(levelled=True))
    assert lay.identity == ("tanh__level2",)
    # x -> fc1 -> tanh -> (fc2 | identity) -> add -> fc3: six columns, outputs rightmost (flattening a
    # 2-D input is no op at all in the captured program)
    assert lay.n_levels == 6
    assert [lay.column[n] for n in ("x", "fc1", "tanh", "fc2", "add", "fc3")] == [0, 1, 2, 3, 4, 5]
    assert lay.column["tanh__level2"] == lay.column["fc2"]
    assert lay.kind["x"] == "input" and lay.kind["fc3"] == "output"
    assert set(lay.kind.values()) <= set(KINDS)


def test_every_latent_edge_spans_one_column_on_a_levelled_graph():
    module, inputs, _ = load_model_file("densenet_block").build_model(
        input_shape=(3, 6, 6), stem=3, num_layers=3, growth=2, bn_size=1, batch=1)
    for levelled in (False, True):
        g = pcsim.trace(module, *inputs)
        g = g.level() if levelled else g
        lay = layout(g)
        spans = {lay.column[c] - lay.column[p] for p, c in lay.edges if p in g.latent}
        assert (spans == {1}) == levelled, spans
        assert len(lay.identity) == g.n_identity
        # slots in a column are distinct and centred
        for col in range(lay.n_levels):
            slots = sorted(lay.slot[n] for n in lay.names if lay.column[n] == col)
            assert len(set(slots)) == len(slots) and abs(sum(slots)) < 1e-9


def test_vertices_that_reach_no_output_are_placed_and_marked():
    # the capture drops what the outputs do not need; a graph built by hand may still hold it
    g = pcsim.trace(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2)).double(), torch.randn(2, 3, dtype=torch.float64))
    unused = Vertex("tanh", "tanh", (2, 3), torch.float64, parents=("0",), fn=torch.tanh, args=(ParentArg(0),))
    g = pcsim.Graph(vertices=(*g.vertices, unused), inputs=g.inputs, outputs=g.outputs, params=g.params,
                    constants=g.constants, param_names=g.param_names)
    levels = drawing_levels(g)
    assert levels["tanh"] == 0 and layout(g).kind["tanh"] == "unused"


def test_dot_text_has_every_vertex_edge_and_rank():
    lay = layout(residual_graph(levelled=True))
    dot = to_dot(lay, title='residual "mlp"')
    assert dot.startswith('digraph "residual \\"mlp\\"" {') and dot.rstrip().endswith("}")
    nodes = re.findall(r'^  "([^"]+)" \[label=', dot, flags=re.M)
    assert nodes == list(lay.names)
    edges = re.findall(r'^  "([^"]+)" -> "([^"]+)";', dot, flags=re.M)
    assert edges == list(lay.edges)
    assert dot.count("rank=same") == lay.n_levels
    assert re.search(r'"tanh__level2" \[label="tanh__level2\\nidentity", shape=square, style="filled,dashed"', dot)


@pytest.mark.parametrize("levelled", [False, True])
def test_layout_of_a_recurrent_expansion(levelled):
    module, inputs, _ = load_model_file("lstm").build_model(input_shape=(3, 2), hidden_size=3, batch=1)
    g = pcsim.trace(module, *inputs)
    g = g.level() if levelled else g
    lay = layout(g)
    assert set(lay.names) == {v.name for v in g.vertices}
    assert max(lay.level[n] for n in g.latent) == g.depth
