"""`pcsim simulate`: a model's value and error populations in continuous time, to a Trajectory file."""

from __future__ import annotations

import argparse

from pcsim.backends.brian2 import TARGETS
from pcsim.cli.options import add_model_flags, build_spec, figure_file, in_model_file, output_file, writing
from pcsim.cli.options import non_negative_float as at_least_0
from pcsim.cli.options import positive_float as above_0
from pcsim.dynamics.recording import SNAPSHOTS, Record
from pcsim.dynamics.solver import SOLVERS
from pcsim.numerics import DTYPES
from pcsim.zoo import LOSSES


def add_parser(commands) -> None:
    sim = commands.add_parser(
        "simulate", help="run a model's value and error populations in continuous time",
        description="Integrate the PC populations of a model from its feed-forward state; the target is shown "
                    "at --t-on. Writes a Trajectory (.npz) and optionally a plot of every population.")
    add_model_flags(sim)
    sim.add_argument("--backend", choices=SOLVERS.backends(), default="scipy", help="the integrator (default: scipy)")
    sim.add_argument("--method", default=None,
                     help="; ".join(f"{b}: {', '.join(SOLVERS.methods(b))} (default {SOLVERS.default_method(b)})"
                                    for b in SOLVERS.backends()))
    sim.add_argument("--dt", type=above_0, default=None,
                     help="step for euler/rk4 (which need it); caps adaptive steps (default: none)")
    sim.add_argument("--rtol", type=above_0, default=1e-8, help="relative tolerance of adaptive methods (default 1e-8)")
    sim.add_argument("--atol", type=above_0, default=1e-10,
                     help="absolute tolerance of adaptive methods (default 1e-10)")
    sim.add_argument("--t-end", type=above_0, default=10.0, help="end time (default 10)")
    sim.add_argument("--t-on", type=at_least_0, default=0.0, help="target onset (default 0)")
    sim.add_argument("--tau-x", type=above_0, default=1.0, help="value time constant (default 1)")
    sim.add_argument("--tau-e", type=at_least_0, default=0.0, help="error time constant; 0 = instantaneous (default 0)")
    sim.add_argument("--plasticity", choices=["off", "always", "zil"], default="off",
                     help="weight updates: none, always on, or under Z-IL's gates (default: off)")
    sim.add_argument("--no-target", action="store_true", help="never show the target")
    sim.add_argument("--no-level", action="store_true",
                     help="with --plasticity zil, run the graph as traced (default: levelled, as pcsim.zil does)")
    sim.add_argument("--loss", choices=LOSSES, default=None, help="the loss (default: the model file's LOSS)")
    sim.add_argument("--dtype", choices=list(DTYPES), default="float64", help="precision (default: float64)")
    when = sim.add_mutually_exclusive_group()  # --snapshots beside --every-step was ignored silently
    when.add_argument("--every-step", action="store_true",
                      help="record every population at every step (default: at --snapshots evenly spaced times)")
    when.add_argument("--snapshots", type=int, default=SNAPSHOTS,
                      help=f"how many evenly spaced times to record (default {SNAPSHOTS})")
    sim.add_argument("--out", required=True, metavar="FILE.npz", help="where to write the trajectory")
    sim.add_argument("--plot", default=None, metavar="FILE.png", help="also draw every population over time")
    sim.add_argument("--progress", action="store_true", help="show a progress bar")
    sim.add_argument("--compile", action="store_true", help="torch's euler, tsit5 and dopri5: compile IL's step "
                     "(euler) or each step with the field (tsit5, dopri5) where the run is plain inference (seconds "
                     "to minutes, once per network; faster steps)")
    sim.add_argument("--target", choices=TARGETS, default=None,
                     help="Brian2 code-generation target for --backend brian2 (default numpy)")


def run(args: argparse.Namespace) -> int:
    import pcsim

    if not args.no_target and args.t_on >= args.t_end:  # the flags' fault, not the model file's
        raise ValueError(f"--t-on {args.t_on:g} must come before --t-end {args.t_end:g} (or pass --no-target)")
    if args.target and args.backend != "brian2":
        raise ValueError(f"--target {args.target} is a Brian2 code-generation target: use it with --backend brian2")
    out, plot = output_file(args.out, "--out"), args.plot and figure_file(args.plot, "--plot")
    spec, module, inputs, target, loss = build_spec(args, dtype=DTYPES[args.dtype])
    with in_model_file(spec):
        graph = pcsim.trace(module, *inputs, fused=args.fused)
        traj = pcsim.simulate(graph, inputs, None if args.no_target else target, backend=args.backend, loss=loss,
                              t_end=args.t_end, t_on=args.t_on, tau_x=args.tau_x, tau_e=args.tau_e,
                              method=args.method, dt=args.dt, rtol=args.rtol, atol=args.atol,
                              plasticity=args.plasticity, progress=args.progress, level=not args.no_level,
                              record=Record(every_step=args.every_step, snapshots=args.snapshots),
                              **({"codegen_target": args.target} if args.target else {}),
                              **({"compile": True} if args.compile else {}))
    with writing(out, "--out"):
        path = traj.to_npz(out)
    print(f"wrote {path} ({len(traj.t)} time points, {len(traj.values)} populations)")
    if plot:
        from pcsim.plots.dynamics import plot_trajectory

        with writing(plot, "--plot"):
            plot.parent.mkdir(parents=True, exist_ok=True)
            plot_trajectory(traj).savefig(plot, dpi=120)
        print(f"wrote {plot}")
    return 0
