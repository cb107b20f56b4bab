"""`pcsim check --all` (Table 1, computed by pcsim.table) and `pcsim graph`: parsing and printing only.

Usage and model errors are raised as PcsimError / ValueError; `pcsim.cli.main` prints them.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from pcsim import paths
from pcsim.errors import PcsimError
from pcsim.zoo import load_model_file


def add_check_all_arguments(chk: argparse.ArgumentParser) -> None:
    chk.add_argument("--all", action="store_true",
                     help="every zoo model at full size: Z-IL, both Fa-Z-IL modes and unlevelled Z-IL (Table 1)")
    chk.add_argument("--table", metavar="OUT.md", default=None, help="with --all: also write the table here")
    chk.add_argument("--models", metavar="A,B", default=None, help="with --all: only these zoo models")
    chk.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def add_fused_flag(parser: argparse.ArgumentParser) -> None:
    """`--fused`, as `pcsim.trace(..., fused=True)`, for every command that traces a model."""
    parser.add_argument("--fused", action="store_true",
                        help="trace nn.RNN/LSTM/GRU as one vertex per layer call, on torch's fused kernel")


def add_models_dir_flag(parser: argparse.ArgumentParser) -> None:
    """`--models-dir DIR`, the zoo folder, for every command that takes a MODEL or runs zoo models."""
    parser.add_argument("--models-dir", metavar="DIR", default=None,
                        help="the zoo folder that MODEL names are looked up in (default: $PCSIM_MODELS, else ./models)")


def with_models_dir(handler, args: argparse.Namespace) -> int:
    """Run a command's handler with its `--models-dir` (when it has one and it is given) as the zoo folder."""
    with paths.using(models=getattr(args, "models_dir", None)):
        return handler(args)


def run_check_all(args: argparse.Namespace, dtype: torch.dtype) -> int:
    from pcsim.table import markdown, zoo_table

    if args.model is not None:
        raise ValueError("check --all takes no MODEL (use --models A,B to pick zoo models)")
    if args.fused:
        raise ValueError("check --all runs the zoo's traced graphs as they are; --fused goes with one MODEL")
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    start = time.perf_counter()
    rows = zoo_table(models, dtype=dtype, progress=lambda line: print(line, file=sys.stderr, flush=True))
    wall = time.perf_counter() - start
    command = " ".join(["pcsim check --all"] + ([f"--models {args.models}"] if args.models else [])
                       + ([f"--dtype {args.dtype}"] if args.dtype != "float64" else [])
                       + ([f"--threads {args.threads}"] if args.threads else []))
    text = markdown(rows, dtype, wall_seconds=wall, command=command)
    print(text, end="")
    if args.table:
        with open(args.table, "w") as f:
            f.write(text)
        print(f"wrote {args.table}", file=sys.stderr)
    return 0 if all(r.passed for r in rows) else 1


def add_graph_parser(commands) -> None:
    gr = commands.add_parser(
        "graph", help="draw a model's traced graph by levels, marking inserted identity vertices",
        description="Trace a model and draw its graph, one column per level (distance to the output). "
                    "With --level, the identity vertices that level() inserts are drawn as red squares. "
                    "Without --out, prints the graph's vertices.")
    gr.add_argument("model", metavar="MODEL", help="a zoo model name or the path of a model .py file")
    gr.add_argument("--out", default=None, metavar="FILE", help="graph.png, graph.svg, graph.pdf or graph.dot")
    gr.add_argument("--level", action="store_true", help="level the graph first (insert identity vertices)")
    gr.add_argument("--labels", choices=["auto", "on", "off"], default="auto",
                    help="vertex names on the drawing (auto: only for graphs of up to 80 vertices)")
    gr.add_argument("--seed", type=int, default=0)
    add_fused_flag(gr)
    add_models_dir_flag(gr)


def run_graph(args: argparse.Namespace) -> int:
    from pcsim.capture import trace
    from pcsim.graph.layout import layout, to_dot

    spec = load_model_file(args.model)
    module, inputs, _ = spec.build_model(seed=args.seed)
    try:
        graph = trace(module, *inputs, fused=args.fused)
    except PcsimError as e:
        raise type(e)(f"{spec.path}: {e}") from e
    if args.level:
        graph = graph.level()
    if args.out is None:
        print(graph.summary())
        print(f"{len(graph.latent)} latent vertices, depth {graph.depth}, {graph.n_identity} identity inserted, "
              f"levelled: {graph.is_levelled}")
        return 0
    lay = layout(graph)
    title = f"{spec.name}{' (levelled)' if args.level else ''}"
    if str(args.out).endswith(".dot"):
        with open(args.out, "w") as f:
            f.write(to_dot(lay, title=title))
    else:
        from pcsim.plots.graph import plot_graph

        fig = plot_graph(lay, title=title, labels={"on": True, "off": False}.get(args.labels))
        fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out} ({len(graph.latent)} latent vertices, {graph.n_identity} identity inserted, "
          f"{lay.n_levels} levels)")
    return 0
