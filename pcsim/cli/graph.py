"""`pcsim graph`: draw or list a model's traced graph by levels."""

from __future__ import annotations

import argparse

from pcsim.cli.options import add_model_flags, figure_file, in_model_file, writing
from pcsim.zoo import load_model_file


def add_parser(commands) -> None:
    gr = commands.add_parser(
        "graph", help="draw a model's traced graph by levels, marking inserted identity vertices",
        description="Trace a model and draw its graph, one column per level (distance to the output). "
                    "With --level, the identity vertices that level() inserts are drawn as red squares. "
                    "Without --out, prints the graph's vertices.")
    add_model_flags(gr)
    gr.add_argument("--out", default=None, metavar="FILE", help="graph.png, graph.svg, graph.pdf or graph.dot")
    gr.add_argument("--level", action="store_true", help="level the graph first (insert identity vertices)")
    gr.add_argument("--labels", choices=["auto", "on", "off"], default="auto",
                    help="vertex names on the drawing (auto: only for graphs of up to 80 vertices)")


def run(args: argparse.Namespace) -> int:
    from pcsim.capture import trace
    from pcsim.graph.layout import layout, to_dot

    out = args.out and figure_file(args.out, "--out", also=(".dot",))
    spec = load_model_file(args.model)
    module, inputs, _ = spec.build_model(seed=args.seed)
    with in_model_file(spec):
        graph = trace(module, *inputs, fused=args.fused)
    if args.level:
        graph = graph.level()
    if args.out is None:
        print(graph.summary())
        print(f"{len(graph.latent)} latent vertices, depth {graph.depth}, {graph.n_identity} identity inserted, "
              f"levelled: {graph.is_levelled}")
        return 0
    lay = layout(graph)
    title = f"{spec.name}{' (levelled)' if args.level else ''}"
    with writing(out, "--out"):
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".dot":
            out.write_text(to_dot(lay, title=title))
        else:
            from pcsim.plots.graph import plot_graph

            fig = plot_graph(lay, title=title, labels={"on": True, "off": False}.get(args.labels))
            fig.savefig(out, dpi=120)
    # the columns drawn are the levels 0..depth and the inputs' column: said as such, or it reads as another depth
    print(f"wrote {args.out} ({len(graph.latent)} latent vertices, depth {graph.depth}, {graph.n_identity} identity "
          f"inserted; {lay.n_levels} columns, the inputs' included)")
    return 0
