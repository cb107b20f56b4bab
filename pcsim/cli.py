"""The `pcsim` command: argument parsing and printing only; the work is in pcsim.check and pcsim.zoo.

Exit codes: 0 the check passed, 1 it ran and failed, 2 a usage, model-file or pcsim error
(printed as `pcsim: error: ...` on stderr, without a traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys

import torch

from pcsim import cli_bench, cli_demo, cli_figures, cli_train, cli_zoo
from pcsim.backends.brian2 import TARGETS
from pcsim.check import RULES, check
from pcsim.dynamics.recording import SNAPSHOTS, Record
from pcsim.dynamics.solver import SOLVERS
from pcsim.errors import PcsimError
from pcsim.graph.provenance import exception_user_line
from pcsim.zoo import LOSSES, load_model_file, one_hot_for_mse

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pcsim", description="Predictive coding on computational graphs.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    chk = commands.add_parser(
        "check", help="compare a PC rule's weight updates with autograd's gradients",
        description="Run a PC rule on a model and compare every parameter's update with torch autograd.")
    chk.add_argument("model", metavar="MODEL", nargs="?",
                     help="a zoo model name (e.g. mlp) or the path of a model .py file")
    chk.add_argument("--rule", choices=list(RULES), default="zil", help="the learning rule (default: zil)")
    chk.add_argument("--loss", choices=LOSSES, default=None, help="the loss (default: the model file's LOSS)")
    chk.add_argument("--dtype", choices=list(DTYPES), default="float64", help="precision (default: float64)")
    chk.add_argument("--seed", type=int, default=0, help="seed passed to the model's build() (default: 0)")
    cli_zoo.add_fused_flag(chk)
    cli_zoo.add_models_dir_flag(chk)
    chk.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    cli_zoo.add_check_all_arguments(chk)
    cli_zoo.add_graph_parser(commands)
    _simulate_parser(commands)
    cli_train.add_parser(commands)
    cli_figures.add_parser(commands)
    cli_demo.add_parser(commands)
    cli_bench.add_parser(commands)
    return parser


def _simulate_parser(commands) -> None:
    sim = commands.add_parser(
        "simulate", help="run a model's value and error populations in continuous time",
        description="Integrate the PC populations of a model from its feed-forward state; the target is shown "
                    "at --t-on. Writes a Trajectory (.npz) and optionally a plot of every population.")
    sim.add_argument("model", metavar="MODEL", help="a zoo model name or the path of a model .py file")
    sim.add_argument("--backend", choices=SOLVERS.backends(), default="scipy")
    sim.add_argument("--method", default=None,
                     help="; ".join(f"{b}: {', '.join(SOLVERS.methods(b))} (default {SOLVERS.default_method(b)})"
                                    for b in SOLVERS.backends()))
    sim.add_argument("--dt", type=float, default=None, help="step for euler/rk4; caps adaptive steps")
    sim.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance of adaptive methods (default 1e-8)")
    sim.add_argument("--atol", type=float, default=1e-10, help="absolute tolerance of adaptive methods (default 1e-10)")
    sim.add_argument("--t-end", type=float, default=10.0, help="end time (default 10)")
    sim.add_argument("--t-on", type=float, default=0.0, help="target onset (default 0)")
    sim.add_argument("--tau-x", type=float, default=1.0, help="value time constant (default 1)")
    sim.add_argument("--tau-e", type=float, default=0.0, help="error time constant; 0 = instantaneous")
    sim.add_argument("--plasticity", choices=["off", "always", "zil"], default="off")
    sim.add_argument("--no-target", action="store_true", help="never show the target")
    sim.add_argument("--no-level", action="store_true",
                     help="with --plasticity zil, run the graph as traced (default: levelled, as pcsim.zil does)")
    sim.add_argument("--loss", choices=LOSSES, default=None)
    sim.add_argument("--dtype", choices=list(DTYPES), default="float64")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--every-step", action="store_true",
                     help="record every population at every step (default: at --snapshots evenly spaced times)")
    sim.add_argument("--snapshots", type=int, default=SNAPSHOTS,
                     help=f"how many evenly spaced times to record (default {SNAPSHOTS})")
    sim.add_argument("--out", required=True, metavar="FILE.npz", help="where to write the trajectory")
    sim.add_argument("--plot", default=None, metavar="FILE.png", help="also draw every population over time")
    cli_zoo.add_fused_flag(sim)
    cli_zoo.add_models_dir_flag(sim)
    sim.add_argument("--progress", action="store_true", help="show a progress bar")
    sim.add_argument("--compile", action="store_true", help="torch's euler, tsit5 and dopri5: compile IL's step "
                     "(euler) or each step with the field (tsit5, dopri5) where the run is plain inference (seconds "
                     "to minutes, once per network; faster steps)")
    sim.add_argument("--target", choices=TARGETS, default=None,
                     help="Brian2 code-generation target for --backend brian2 (default numpy)")


def _simulate(args: argparse.Namespace) -> int:
    import pcsim

    if args.target and args.backend != "brian2":
        return _error(f"--target {args.target} is a Brian2 code-generation target: use it with --backend brian2")
    spec = load_model_file(args.model)
    module, inputs, target = spec.build_model(seed=args.seed)
    dtype = DTYPES[args.dtype]
    module = module.to(dtype)
    inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
    target = target.to(dtype) if target.is_floating_point() else target
    try:
        target = _one_hot_if_mse(module, inputs, target, args.loss or spec.loss)
        graph = pcsim.trace(module, *inputs, fused=args.fused)
        traj = pcsim.simulate(graph, inputs, None if args.no_target else target, backend=args.backend,
                              loss=args.loss or spec.loss, t_end=args.t_end, t_on=args.t_on, tau_x=args.tau_x,
                              tau_e=args.tau_e, method=args.method, dt=args.dt, rtol=args.rtol, atol=args.atol,
                              plasticity=args.plasticity, progress=args.progress, level=not args.no_level,
                              record=Record(every_step=args.every_step, snapshots=args.snapshots),
                              **({"codegen_target": args.target} if args.target else {}),
                              **({"compile": True} if args.compile else {}))
    except (PcsimError, ValueError, NotImplementedError) as e:
        return _error(f"{spec.path}: {e}")
    path = traj.to_npz(args.out)
    print(f"wrote {path} ({len(traj.t)} time points, {len(traj.values)} populations)")
    if args.plot:
        from pcsim.plots.dynamics import plot_trajectory

        plot_trajectory(traj).savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    return 0


def _one_hot_if_mse(module, inputs, target, loss: str):
    """--loss mse on a classification model: one-hot encode its class indices, and say so on stderr."""
    target, note = one_hot_for_mse(module, inputs, target, loss)
    if note:
        print(f"pcsim: {note}", file=sys.stderr)
    return target


def model_error(e: BaseException) -> str:
    """An exception raised inside the user's model (or by torch on it) as one paragraph at the user's line."""
    line = exception_user_line(e)
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    where = f" at {line.short}" if line else ""
    text = f"the model failed{where}: {type(e).__name__}: {first}"
    return text + (f"\n{line}" if line else "") + "\n(set PCSIM_TRACEBACK=1 for the full traceback)"


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
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.all:
        return cli_zoo.run_check_all(args, DTYPES[args.dtype])
    if args.table or args.models:
        return _error("--table and --models go with --all")
    if args.model is None:
        return _error("check needs a MODEL, or --all for every zoo model")
    spec = load_model_file(args.model)
    # With --json, anything the model file or pcsim prints goes to stderr so stdout stays one JSON object.
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet:
        module, inputs, target = spec.build_model(seed=args.seed)
        try:
            target = _one_hot_if_mse(module, inputs, target, args.loss or spec.loss)
            report = check(module, inputs, target, rule=args.rule, loss=args.loss or spec.loss,
                           dtype=DTYPES[args.dtype], fused=args.fused)
        except (PcsimError, ValueError) as e:  # say which model file the traced module came from
            return _error(f"{spec.path}: {e}")
    if args.json:
        print(json.dumps(_finite_or_none(report.to_dict(model=spec.name)), allow_nan=False))
    else:
        print(report.table(model=spec.name))
    return 0 if report.passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    handler = {"check": _check, "simulate": _simulate, "train": cli_train.run_command,
               "figures": cli_figures.run_command, "graph": cli_zoo.run_graph,
               "demo": cli_demo.run_command, "bench": cli_bench.run_command}[args.command]
    try:
        return cli_zoo.with_models_dir(handler, args)
    except (PcsimError, ValueError) as e:
        return _error(str(e))
    except Exception as e:  # noqa: BLE001 - a model's own error, or torch's on it: one paragraph, no stack
        if os.environ.get("PCSIM_TRACEBACK"):
            raise
        return _error(model_error(e))
