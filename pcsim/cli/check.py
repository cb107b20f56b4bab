"""`pcsim check`: one model's PC updates against autograd, or `--all` for the zoo table (pcsim.table)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time

import torch

from pcsim.check import RULES, check
from pcsim.cli.options import add_model_flags, build_spec, in_model_file, output_file, positive_int, writing
from pcsim.numerics import DTYPES
from pcsim.zoo import LOSSES


def add_parser(commands) -> None:
    chk = commands.add_parser(
        "check", help="compare a PC rule's weight updates with autograd's gradients",
        description="Run a PC rule on a model and compare every parameter's update with torch autograd.")
    add_model_flags(chk, optional=True)
    chk.add_argument("--rule", choices=list(RULES), default="zil", help="the learning rule (default: zil)")
    chk.add_argument("--loss", choices=LOSSES, default=None, help="the loss (default: the model file's LOSS)")
    chk.add_argument("--dtype", choices=list(DTYPES), default="float64", help="precision (default: float64)")
    chk.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    chk.add_argument("--all", action="store_true",
                     help="every zoo model at full size: Z-IL, both Fa-Z-IL modes and unlevelled Z-IL (Table 1)")
    chk.add_argument("--table", metavar="OUT.md", default=None, help="with --all: also write the table here")
    chk.add_argument("--models", metavar="A,B", default=None, help="with --all: only these zoo models")
    chk.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")


def _finite_or_none(value):
    # Strict JSON has no NaN/Infinity; report those as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.all:
        return _run_all(args, DTYPES[args.dtype])
    if args.table or args.models:
        raise ValueError("--table and --models go with --all")
    if args.model is None:
        raise ValueError("check needs a MODEL, or --all for every zoo model")
    # With --json, anything the model file or pcsim prints goes to stderr so stdout stays one JSON object.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        spec, module, inputs, target, loss = build_spec(args, dtype=None)
        with in_model_file(spec):
            report = check(module, inputs, target, rule=args.rule, loss=loss, dtype=DTYPES[args.dtype],
                           fused=args.fused)
    if args.json:
        print(json.dumps(_finite_or_none(report.to_dict(model=spec.name)), allow_nan=False))
    else:
        print(report.table(model=spec.name))
    return 0 if report.passed else 1


def _run_all(args: argparse.Namespace, dtype: torch.dtype) -> int:
    from pcsim.table import markdown, zoo_table

    if args.model is not None:
        raise ValueError("check --all takes no MODEL (use --models A,B to pick zoo models)")
    if args.fused:
        raise ValueError("check --all runs the zoo's traced graphs as they are; --fused goes with one MODEL")
    models = None if args.models is None else [m.strip() for m in args.models.split(",") if m.strip()]
    if models == []:  # an empty selection checked nothing and said every rule was within tolerance
        raise ValueError(f"--models {args.models!r} names no model; give zoo names, e.g. --models mlp,cnn")
    table = args.table and output_file(args.table, "--table")  # before the run, not after it
    start = time.perf_counter()
    rows = zoo_table(models, dtype=dtype, progress=lambda line: print(line, file=sys.stderr, flush=True))
    wall = time.perf_counter() - start
    command = " ".join(["pcsim check --all"] + ([f"--models {args.models}"] if args.models else [])
                       + ([f"--dtype {args.dtype}"] if args.dtype != "float64" else [])
                       + ([f"--threads {args.threads}"] if args.threads else []))
    text = markdown(rows, dtype, wall_seconds=wall, command=command)
    print(text, end="")
    if table:
        with writing(table, "--table"):
            table.parent.mkdir(parents=True, exist_ok=True)
            table.write_text(text)
        print(f"wrote {args.table}", file=sys.stderr)
    return 0 if all(r.passed for r in rows) else 1
