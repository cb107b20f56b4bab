"""`pcsim graph`, in-process: the drawings and listings follow the models' structure (a skip connection
needs one inserted identity vertex to be levelled)."""

from __future__ import annotations

import pytest

from tests.cli import run

pytestmark = pytest.mark.usefixtures("one_thread")



def test_graph_draws_the_levelled_residual_mlp(tmp_path, capsys):
    png = tmp_path / "g.png"
    code, out, err = run(["graph", "residual_mlp", "--level", "--out", png], capsys)
    assert code == 0, err
    assert png.stat().st_size > 5_000 and "1 identity inserted" in out
    dot = tmp_path / "g.dot"
    code, out, _ = run(["graph", "residual_mlp", "--level", "--out", dot], capsys)
    text = dot.read_text()
    assert code == 0 and text.startswith("digraph") and text.count("shape=square") == 1
    # the depth said is the listing's, not the number of columns drawn (the inputs' column too: "6 levels" on a
    # graph of depth 4, before)
    listed = run(["graph", "residual_mlp", "--level"], capsys)[1]
    depth = int(listed.split("depth ")[1].split(",")[0])
    assert f"depth {depth}," in out and f"{depth + 2} columns, the inputs' included" in out, out
    code, out, _ = run(["graph", "residual_mlp", "--out", tmp_path / "u.svg"], capsys)
    assert code == 0 and "0 identity inserted" in out and (tmp_path / "u.svg").read_text().lstrip().startswith("<")


def test_graph_without_out_prints_the_vertices(capsys):
    code, out, _ = run(["graph", "residual_mlp"], capsys)
    assert code == 0
    assert "fc1" in out and "levelled: False" in out and "0 identity inserted" in out
    code, out, err = run(["graph", "no_such_model"], capsys)
    assert code == 2 and "no_such_model" in err


def test_graph_fused_prints_one_vertex_per_item_of_the_layer(capsys):
    code, out, _ = run(["graph", "lstm", "--fused"], capsys)
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:-1]]
    # one vertex per item of the layer the model reads (its output sequence); no gates
    assert sum(r[1] == "lstm" for r in rows) == 1 and "sigmoid" not in out


def test_graph_out_under_a_file_names_the_flag(tmp_path, capsys):
    """A --out the command cannot write is the user's path, not the model's error."""
    (tmp_path / "taken").write_text("")
    code, _, err = run(["graph", "mlp", "--out", tmp_path / "taken" / "g.dot"], capsys)
    assert code == 2 and "cannot write --out" in err and "model failed" not in err, err


@pytest.mark.parametrize("name", ["g.xyz", "g"])
def test_graph_out_in_a_format_it_cannot_write_is_refused_before_the_trace(tmp_path, capsys, monkeypatch, name):
    # before: traced, then matplotlib's "Format 'xyz' is not supported" (without .dot, which graph writes too);
    # a name without a suffix was written as a PNG
    import pcsim.capture

    monkeypatch.setattr(pcsim.capture, "trace", lambda *a, **k: pytest.fail("the trace should not start"))
    code, _, err = run(["graph", "mlp", "--out", tmp_path / name], capsys)
    assert code == 2 and "the format is read from the file's suffix" in err and ".dot" in err and ".png" in err, err
    assert not (tmp_path / name).exists()
