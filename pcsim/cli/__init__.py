"""The `pcsim` command: one module per subcommand, each with `add_parser` and `run`; the work is elsewhere.

Exit codes: 0 the command passed, 1 a check ran and failed, 2 a usage, model-file or pcsim error
(printed as `pcsim: error: ...` on stderr, without a traceback), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys

from pcsim import paths
from pcsim.cli import bench, check, demo, figures, graph, simulate, train
from pcsim.errors import PcsimError, first_line
from pcsim.graph.provenance import exception_user_line

COMMANDS = {"check": check, "graph": graph, "simulate": simulate, "train": train, "figures": figures,
            "demo": demo, "bench": bench}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pcsim", description="Predictive coding on computational graphs.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        command.add_parser(commands)
    return parser


def model_error(e: BaseException) -> str:
    """An exception raised inside the user's model (or by torch on it) as one paragraph at the user's line."""
    line = exception_user_line(e)
    where = f" at {line.short}" if line else ""
    text = f"the model failed{where}: {type(e).__name__}: {first_line(e)}"
    return text + (f"\n{line}" if line else "") + "\n(set PCSIM_TRACEBACK=1 for the full traceback)"


def _error(message: str) -> int:
    # First line after the prefix; any detail lines (e.g. the supported ops) follow indented.
    first, *details = str(message).splitlines() or [""]
    print(f"pcsim: error: {first}", file=sys.stderr)
    for line in details:
        print(f"  {line}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with paths.using(models=getattr(args, "models_dir", None)):  # the command's --models-dir, if it has one
            return COMMANDS[args.command].run(args)
    except (PcsimError, ValueError) as e:
        return _error(str(e))
    except KeyboardInterrupt:  # Ctrl-C: the user's own stop, not a fault to show a stack for
        if os.environ.get("PCSIM_TRACEBACK"):
            raise
        print("pcsim: interrupted", file=sys.stderr)
        return 130  # the shell's code for a command ended by SIGINT
    except Exception as e:  # noqa: BLE001 - a model's own error, or torch's on it: one paragraph, no stack
        if os.environ.get("PCSIM_TRACEBACK"):
            raise
        return _error(model_error(e))
