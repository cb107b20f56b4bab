"""pcsim.plots.graph: the drawing holds one marker per vertex, identity vertices in their own style."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

import pcsim  # noqa: E402
from pcsim.graph.layout import layout  # noqa: E402
from pcsim.plots.graph import STYLE, plot_graph  # noqa: E402
from pcsim.zoo import load_model_file  # noqa: E402


def _residual(levelled=True):
    module, inputs, _ = load_model_file("residual_mlp").build_model()
    g = pcsim.trace(module, *inputs)
    return layout(g.level() if levelled else g)


def _markers(fig):
    ax = fig.axes[0]
    return {c.get_label().split(" (")[0]: np.asarray(c.get_offsets()) for c in ax.collections
            if c.get_label() and not c.get_label().startswith("_")}


def test_levelled_residual_mlp_draws_one_identity_vertex(tmp_path):
    lay = _residual()
    fig = plot_graph(lay, title="residual_mlp")
    markers = _markers(fig)
    identity = markers[STYLE["identity"][4]]
    assert identity.shape == (1, 2)
    assert tuple(identity[0]) == lay.position("tanh__level2")
    assert sum(len(m) for m in markers.values()) == len(lay.names)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert set(lay.names) <= texts
    assert "1 identity vertex inserted" in fig.axes[0].get_title()
    fig.savefig(tmp_path / "g.png")
    fig.savefig(tmp_path / "g.svg")
    assert (tmp_path / "g.png").stat().st_size > 5_000 and "<svg" in (tmp_path / "g.svg").read_text()[:500]


def test_unlevelled_drawing_has_no_identity_and_labels_can_be_off():
    lay = _residual(levelled=False)
    fig = plot_graph(lay, labels=False)
    assert STYLE["identity"][4] not in _markers(fig)
    assert not fig.axes[0].texts
    lines = fig.axes[0].collections[0]
    assert len(lines.get_segments()) == len(lay.edges)


def test_labels_are_the_shortest_dotted_tails_that_tell_vertices_apart():
    from pcsim.plots.graph import short_names

    names = ["input", "encoder.layer.0.attention.self.key", "encoder.layer.1.attention.self.key",
             "encoder.layer.0.output.dense", "encoder.layer.0.attention.output.dense", "pooler.dense", "classifier"]
    short = short_names(names)
    assert len(set(short.values())) == len(names)  # still one label per vertex
    for name, label in short.items():
        assert name == label or name.endswith("." + label)
        shorter = label.split(".", 1)[1] if "." in label else None  # one component less would clash
        assert shorter is None or sum(n == shorter or n.endswith("." + shorter) for n in names) > 1
    assert short["classifier"] == "classifier" and short["pooler.dense"] == "pooler.dense"
