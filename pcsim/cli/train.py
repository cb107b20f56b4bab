"""`pcsim train`: argument parsing and printing for the training loop (pcsim/training)."""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path

from tqdm.auto import tqdm

from pcsim.cli.options import add_model_flags, output_folder, writing
from pcsim.numerics import DTYPES
from pcsim.rules import RULES
from pcsim.training.checkpoint import load_checkpoint
from pcsim.training.loop import OPTIMISERS, SCHEDULES, TrainConfig, build_run, resume, train


def add_parser(commands) -> None:
    p = commands.add_parser(
        "train", help="train a model with a learning rule (bp, il, ipc, zil, fa-zil, ...) on a data set",
        description="Train a zoo model (fitted to the data set's input shape and classes) with a learning rule. "
                    "Data: digits, mnist-subset, synthetic, or a folder with MNIST/Fashion-MNIST IDX files or "
                    "CIFAR-10 python batches.")
    add_model_flags(p)
    p.add_argument("--rule", choices=list(RULES), default="zil", help="the learning rule (default: zil)")
    p.add_argument("--data", default="digits", metavar="D",
                   help="digits, mnist-subset, synthetic, or a data folder (default: digits)")
    p.add_argument("--epochs", type=int, default=5, help="passes over the training split (default: 5)")
    p.add_argument("--batch-size", type=int, default=32, help="samples per step (default: 32)")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate, on the batch's mean loss (default: 0.05)")
    p.add_argument("--optimizer", choices=OPTIMISERS, default="sgd", help="the torch optimiser (default: sgd)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD's momentum (default: 0.9; sgd only)")
    p.add_argument("--lr-schedule", choices=SCHEDULES, default="constant",
                   help="constant, or cosine from --lr towards 0 over the run's steps, set each batch "
                        "(default: constant)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32",
                   help="the model's and the data's precision (default: float32)")
    p.add_argument("--il-steps", type=int, default=20, help="IL inference steps T (default 20)")
    p.add_argument("--il-gamma", type=float, default=0.1, help="IL inference rate (default 0.1)")
    p.add_argument("--il-fixed-prediction", action="store_true", help="IL with predictions frozen at feed-forward")
    p.add_argument("--il-output-precision", type=float, default=1.0, help="IL output precision (default 1)")
    p.add_argument("--label-smoothing", type=float, default=0.0, metavar="S",
                   help="cross-entropy's label smoothing, as torch's: the target (1 - S) one-hot + S / classes "
                        "(default 0; loss ce only)")
    p.add_argument("--compile", action="store_true",
                   help="il: compile the inference steps after the error wave settles; fa-zil: compile the wavefront "
                        "(inductor; needs a C++ compiler; seconds on the first batch of each shape)")
    p.add_argument("--check-every", type=int, default=0, metavar="N",
                   help="compare the rule's gradients with autograd every N steps (exact rules stop on deviation)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="with --out: write a checkpoint every N steps (default: 0, at each epoch's end only)")
    p.add_argument("--out", default=None, metavar="DIR", help="write model.pt, metrics.json, metrics.csv here")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run checkpointed in DIR, as configured there; --epochs may raise its epochs")
    p.add_argument("--compare-bp", action="store_true", help="train BP from the same start beside it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@contextmanager
def _process_group():
    """Under torchrun (WORLD_SIZE > 1) join the process group, gloo on CPU and nccl on GPUs, and leave it on
    the way out: a gloo process that exits still in the group aborts ("terminate called without an active
    exception") and torchrun reports the run failed. Yields this process's rank."""
    import os

    import torch
    import torch.distributed as dist

    joined = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if joined:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield dist.get_rank() if dist.is_initialized() else 0
        if joined:
            dist.barrier()  # rank 0 may still be writing its files
    finally:
        if joined:
            dist.destroy_process_group()


def _resumed_config(run, given: TrainConfig, folder: Path) -> TrainConfig:
    """The checkpoint's config, with `--epochs` raised if asked. Any other setting given on the command line
    that differs from the checkpoint's is an error: resuming continues the stored run, and ignoring a flag
    would silently train something other than what the user asked for."""
    stored, defaults = run.config, TrainConfig()
    flag = {"fused_recurrent": "fused"}  # the config fields whose flag has another name
    conflicts = [f"--{flag.get(name, name).replace('_', '-')} {getattr(given, name)} "
                 f"(the run has {getattr(stored, name)})"
                 for name in (f.name for f in fields(TrainConfig)) if name not in ("model", "epochs")
                 and getattr(given, name) != getattr(defaults, name) and getattr(given, name) != getattr(stored, name)]
    if given.model != stored.model and not _same_file(given.model, stored.model):
        conflicts.insert(0, f"MODEL {given.model} (the run has {stored.model})")
    if conflicts:
        raise ValueError(f"--resume {folder} continues the run as it was configured; these differ from it: "
                         f"{'; '.join(conflicts)}")
    epochs = given.epochs if given.epochs != defaults.epochs else stored.epochs
    if epochs < run.epoch:
        raise ValueError(f"--epochs {epochs}: the run in {folder} has already trained {run.epoch} epochs")
    if epochs != stored.epochs and stored.lr_schedule != "constant":
        raise ValueError(f"--epochs {epochs}: the run's {stored.lr_schedule} schedule was laid over "
                         f"{stored.epochs} epochs and cannot be extended")
    return replace(stored, epochs=epochs)


def _same_file(a: str, b: str) -> bool:
    return Path(a).is_file() and Path(b).is_file() and Path(a).resolve() == Path(b).resolve()


def run(args: argparse.Namespace) -> int:
    with _process_group() as rank:
        # rank 0 speaks for the run (tqdm.write: above any progress bar); the others train their shard silently
        return _run(args, say=tqdm.write if rank == 0 else lambda _line: None)


def _run(args: argparse.Namespace, say) -> int:
    config = TrainConfig(fused_recurrent=args.fused, **{f.name: getattr(args, f.name) for f in fields(TrainConfig)
                                                        if f.name != "fused_recurrent"})
    config.validate()  # the flags themselves, resuming or not
    if args.checkpoint_every and not (args.out or args.resume):  # was ignored: no folder to write them to
        raise ValueError(f"--checkpoint-every {args.checkpoint_every} writes checkpoints into --out DIR; give one")
    if args.out:
        output_folder(args.out, "--out")
    if args.resume:
        run = resume(Path(args.resume))
        run.config = _resumed_config(run, config, Path(args.resume))
        out = Path(args.out or args.resume)
        say(f"resuming {args.resume} at epoch {run.epoch + 1}, step {run.step}")
    else:
        run, out = build_run(config), (Path(args.out) if args.out else None)
    if out is not None:  # made now, so that an unwritable --out fails before the training, not after it
        with writing(out, "--out"):
            out.mkdir(parents=True, exist_ok=True)
    cfg = run.config
    # BP takes none of the rule's own settings: their defaults, which TrainConfig.validate accepts for it
    bp_config = replace(cfg, rule="bp", **{name: getattr(TrainConfig(), name) for name in
                                           ("compile", "il_fixed_prediction", "il_output_precision", "il_steps",
                                            "il_gamma")})
    baseline = build_run(bp_config, run.data) if args.compare_bp else None
    say(f"{cfg.model} on {run.data.name} {run.data.input_shape} ({len(run.data.x_train)} train, "
        f"{len(run.data.x_test)} test), rule {cfg.rule}, {cfg.optimizer} lr {cfg.lr}, batch {cfg.batch_size}")
    if baseline is not None:
        # BP first, epoch by epoch from the same start, so both columns print together
        bp_rows = train(baseline, progress=not args.no_progress)

    def show(row):
        line = (f"epoch {row['epoch']:>3}  {cfg.rule} train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
                f"  test acc {row['test_acc']:.4f}")
        if "max_deviation" in row:
            line += f"  deviation {row['max_deviation']:.2e} angle {row['mean_angle_deg']:.2f} deg"
        if baseline is not None:
            line += f"  | bp test acc {bp_rows[row['epoch'] - 1]['test_acc']:.4f}"
        say(line + f"  ({row['seconds']:.1f} s)")  # above the progress bar, not inside it

    try:
        history = train(run, out=out, progress=not args.no_progress, on_epoch=show)
    except KeyboardInterrupt:
        if out is not None and (out / "checkpoint.pt").exists():
            saved = load_checkpoint(out / "checkpoint.pt")["step"]
            say(f"stopped at step {run.step}; `pcsim train {cfg.model} --resume {out}` continues from its "
                f"checkpoint at step {saved}, bit-identical to a run never stopped")
        raise
    if history:
        final = history[-1]
        say(f"final: test accuracy {final['test_acc']:.4f}, test loss {final['test_loss']:.4f}"
            + (f"; wrote {out}/model.pt, metrics.json, metrics.csv" if out else ""))
    return 0
