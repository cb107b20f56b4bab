"""The `pcsim` command: argument parsing and printing only; the work is in pcsim.check and pcsim.zoo.

Exit codes: 0 the check passed, 1 it ran and failed, 2 a usage, model-file or pcsim error
(printed as `pcsim: error: ...` on stderr, without a traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys

import torch

from pcsim.check import RULES, check
from pcsim.errors import PcsimError
from pcsim.zoo import LOSSES, load_model_file

DTYPES = {"float64": torch.float64, "float32": torch.float32}
# Subcommands in the contract that later sessions implement; they answer with exit code 2 until then.
PENDING = {
    "simulate": "simulate a model's PC dynamics in continuous time (scipy, brian2 or torch)",
    "train": "train a model with bp, il, zil or fa-zil on a data set",
    "figures": "regenerate the figures",
    "demo": "run a short demonstration",
    "bench": "time the rules on the zoo models",
    "graph": "show a model's traced graph",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pcsim", description="Predictive coding on computational graphs.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    chk = commands.add_parser(
        "check", help="compare a PC rule's weight updates with autograd's gradients",
        description="Run a PC rule on a model and compare every parameter's update with torch autograd.")
    chk.add_argument("model", metavar="MODEL", help="a zoo model name (e.g. mlp) or the path of a model .py file")
    chk.add_argument("--rule", choices=list(RULES), default="zil", help="the learning rule (default: zil)")
    chk.add_argument("--loss", choices=LOSSES, default=None, help="the loss (default: the model file's LOSS)")
    chk.add_argument("--dtype", choices=list(DTYPES), default="float64", help="precision (default: float64)")
    chk.add_argument("--seed", type=int, default=0, help="seed passed to the model's build() (default: 0)")
    chk.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    for name, summary in PENDING.items():
        # no options of their own: main() parses with parse_known_args so any arguments get the same answer
        commands.add_parser(name, help=f"{summary} (not available yet)", add_help=False)
    return parser


def _error(message: str) -> int:
    # First line after the prefix; any detail lines (e.g. the supported ops) follow indented.
    first, *details = str(message).splitlines() or [""]
    print(f"pcsim: error: {first}", file=sys.stderr)
    for line in details:
        print(f"  {line}", file=sys.stderr)
    return 2


def _finite_or_none(value):
    # Strict JSON has no NaN/Infinity; report those as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


def _check(args: argparse.Namespace) -> int:
    spec = load_model_file(args.model)
    # With --json, anything the model file or pcsim prints goes to stderr so stdout stays one JSON object.
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet:
        module, inputs, target = spec.build_model(seed=args.seed)
        try:
            report = check(module, inputs, target, rule=args.rule, loss=args.loss or spec.loss,
                           dtype=DTYPES[args.dtype])
        except (PcsimError, ValueError) as e:  # say which model file the traced module came from
            return _error(f"{spec.path}: {e}")
    if args.json:
        print(json.dumps(_finite_or_none(report.to_dict(model=spec.name)), allow_nan=False))
    else:
        print(report.table(model=spec.name))
    return 0 if report.passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command in PENDING:
        print(f"pcsim {args.command}: not available yet (see the issue tracker)", file=sys.stderr)
        return 2
    if unknown:
        parser.parse_args(argv)  # the usual argparse message and exit code 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _check(args)
    except (PcsimError, ValueError) as e:
        return _error(str(e))
