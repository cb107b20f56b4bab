"""The training loop: any rule's gradients fed to a torch optimiser, seeded and resumable.

The loss is the batch mean (each rule's summed-loss gradient divided by the batch size), so
learning rates mean what they mean in ordinary PyTorch code. Everything random comes from one
torch.Generator whose state is checkpointed with the model and the optimiser, so a resumed run
ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

import pcsim
from pcsim.algorithms.losses import CrossEntropy, Loss, get_loss
from pcsim.check import DropoutAsIdentity, autograd_gradients
from pcsim.errors import DivergenceError, PcsimError
from pcsim.graph.provenance import user_stacklevel
from pcsim.numerics import DTYPES, deviation_and_angle, tolerance
from pcsim.rules import RULES, get
from pcsim.training.checkpoint import check_fits, load_checkpoint, save_atomic, save_checkpoint
from pcsim.training.data import Dataset, load_dataset
from pcsim.training.state import (
    advance,
    buffers_kept,
    check_batch_sizes,
    check_output_fits,
    evaluating,
    restore,
    snapshot,
    warn_if_eval_mode,
)

OPTIMISERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")


class TrainingError(PcsimError):
    """Training stopped: an exact rule left autograd's gradients, or the run cannot continue."""


@dataclass(frozen=True)
class TrainConfig:
    model: str = "mlp"
    rule: str = "zil"
    data: str = "digits"
    epochs: int = 5
    batch_size: int = 32
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    lr_schedule: str = "constant"
    seed: int = 0
    dtype: str = "float32"
    il_gamma: float = 0.1
    il_steps: int = 20
    il_fixed_prediction: bool = False
    il_output_precision: float = 1.0
    label_smoothing: float = 0.0  # loss "ce": torch's label_smoothing, the target (1 - s) one-hot + s / classes
    compile: bool = False  # il, fa-zil: their work compiled by inductor (pcsim.algorithms.compiled)
    fused_recurrent: bool = False  # nn.RNN/LSTM/GRU as one vertex per call, on torch's fused kernel
    check_every: int = 0  # compare with autograd every N steps (0: never)
    checkpoint_every: int = 0  # write a checkpoint every N steps (0: only at the end)

    def validate(self) -> None:
        for name, known in (("optimizer", OPTIMISERS), ("lr_schedule", SCHEDULES), ("dtype", sorted(DTYPES))):
            if getattr(self, name) not in known:
                raise ValueError(f"{name} must be one of {known}, got '{getattr(self, name)}'")
        # a fraction ran past it: epochs=2.5 trained 3 epochs with the cosine schedule laid over 2.5 (its rate
        # rising again in the third); batch_size=4.0 stopped in the slicing with Python's TypeError
        for name in ("epochs", "batch_size", "check_every", "checkpoint_every", "seed"):
            if not isinstance(getattr(self, name), numbers.Integral) or isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("check_every", "checkpoint_every"):  # 0: never
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: never), got {getattr(self, name)}")
        # checked here, so that the setting is named before any training: an infinite lr or a NaN momentum
        # trained to NaN parameters and exited 0, a negative il_steps stopped after the data had loaded
        for name in ("lr", "il_gamma", "il_output_precision"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:  # at 1 the target is uniform: nothing left to learn from the labels
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.momentum < math.inf:
            raise ValueError(f"momentum must be >= 0 and finite, got {self.momentum}")
        if not isinstance(self.il_steps, int) or self.il_steps < 1:  # iPC needs one; IL at 0 steps moves one layer
            raise ValueError(f"il_steps must be an integer >= 1, got {self.il_steps}")
        if self.seed < 0:  # the data sets' splits are drawn by NumPy, which takes no negative seed
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.optimizer != "sgd" and self.momentum != _DEFAULTS["momentum"]:
            raise ValueError(f"momentum applies to the optimizer sgd, not '{self.optimizer}'")
        rule = get(self.rule)  # an unknown rule: a ValueError naming the known ones
        # a setting the rule does not take would be dropped silently (iPC has no fixed prediction, Z-IL no steps)
        for name in ("compile", "il_fixed_prediction", "il_output_precision", "il_steps", "il_gamma"):
            if getattr(self, name) != _DEFAULTS[name] and not _takes(rule, name):
                takers = [n for n, r in RULES.items() if _takes(r, name)]
                raise ValueError(f"{name} applies to the rules {', '.join(takers)}, not '{self.rule}'")


def _takes(rule, setting: str) -> bool:
    """Whether `rule` reads a setting: IL's inference settings if it relaxes, the others if it accepts them."""
    return rule.inference if setting in ("il_steps", "il_gamma") else setting.removeprefix("il_") in rule.accepts


_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}  # what an unset flag holds


def _new_epoch() -> dict:
    """An epoch's running sums, as `Run.running` holds them."""
    return {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "deviation": [], "angle": []}


@dataclass
class Run:
    """Everything a training run holds; `state()` is what a checkpoint stores."""

    config: TrainConfig
    module: torch.nn.Module
    data: Dataset
    loss: str
    optimiser: torch.optim.Optimizer
    generator: torch.Generator
    epoch: int = 0
    batch: int = 0  # next batch index within the epoch
    step: int = 0
    order: torch.Tensor | None = None  # this epoch's permutation of the training set
    history: list[dict] = field(default_factory=list)
    running: dict = field(default_factory=_new_epoch)

    @property
    def criterion(self) -> Loss:
        """The loss every rule, the oracle and the scores read: `loss` with the config's label smoothing."""
        if self.config.label_smoothing:
            return CrossEntropy(label_smoothing=self.config.label_smoothing)
        return get_loss(self.loss)

    def state(self) -> dict:
        return {"config": asdict(self.config), "model": self.module.state_dict(),
                "optimiser": self.optimiser.state_dict(), "generator": self.generator.get_state(),
                "epoch": self.epoch, "batch": self.batch, "step": self.step, "order": self.order,
                "history": json.dumps(self.history), "running": json.dumps(self.running)}

    def restore(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.generator.set_state(state["generator"])
        self.epoch, self.batch, self.step, self.order = state["epoch"], state["batch"], state["step"], state["order"]
        self.history, self.running = json.loads(state["history"]), json.loads(state["running"])


def build_run(config: TrainConfig, data: Dataset | None = None, *, module: torch.nn.Module | None = None,
              loss: str = "mse") -> Run:
    """A run of `config`: its zoo model (or model file) fitted to the data set, an optimiser and a generator.

    module: train this module instead (any torch.nn.Module the rule can trace; `config.model` is then only
        its label, and `loss` its loss, "mse" on one-hot targets or "ce" on class indices). Integer inputs,
        such as token ids, stay integer; floating ones take `config.dtype`. A run of your own module resumes
        with `resume(out, data, module=a_fresh_copy, loss=loss)`.
    """
    from pcsim.zoo import load_model_file

    config.validate()
    dtype = DTYPES[config.dtype]
    data = (data or load_dataset(config.data, seed=config.seed)).to(dtype)
    if module is None:
        spec = load_model_file(config.model)
        module, _, _ = spec.build_model(seed=config.seed, input_shape=data.input_shape, n_classes=data.n_classes)
        loss = spec.loss
    elif loss not in ("mse", "ce"):
        raise ValueError(f"loss must be 'mse' or 'ce', got {loss!r}")
    if config.label_smoothing and loss != "ce":
        raise ValueError(f"label_smoothing applies to the loss 'ce', and {config.model} trains with '{loss}'")
    module = module.to(dtype)
    check_output_fits(module, data, loss, config.model)
    warn_if_eval_mode(module, data, config.model)
    params = list(module.parameters())
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
    else:
        opt = torch.optim.Adam(params, lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    return Run(config, module, data, loss, opt, gen)


def _lr(config: TrainConfig, step: int, total: int) -> float:
    if config.lr_schedule == "cosine":
        return 0.5 * config.lr * (1 + math.cos(math.pi * step / max(total, 1)))
    return config.lr


def _targets(run: Run, y: torch.Tensor) -> torch.Tensor:
    if run.loss == "ce":
        return y
    return torch.nn.functional.one_hot(y, run.data.n_classes).to(DTYPES[run.config.dtype])


def _score(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
    """(summed loss, correct predictions) of the module's own forward pass on a batch (its buffers kept), with
    dropout as the identity, as the rules took the gradients: a train-mode dropout here logged the loss of a
    random other function, drawn from the global RNG, so two identical runs logged different train losses."""
    with torch.no_grad(), buffers_kept(run.module), DropoutAsIdentity():
        out = run.module(x)
    return float(run.criterion.value(out, _targets(run, y))), int((out.argmax(1) == y).sum())


def evaluate(run: Run, batch_size: int = 512) -> tuple[float, float]:
    """(mean loss, accuracy) on the held-out split, with the module's own forward pass in eval mode."""
    n = len(run.data.x_test)
    with evaluating(run.module):
        scores = [_score(run, run.data.x_test[i:i + batch_size], run.data.y_test[i:i + batch_size])
                  for i in range(0, n, batch_size)]
    return sum(s[0] for s in scores) / n, sum(s[1] for s in scores) / n


def train(run: Run, *, out: Path | None = None, progress: bool = True, on_epoch=None) -> list[dict]:
    """Train until `config.epochs`; returns the per-epoch metrics (also written under `out`).

    Under torchrun each process takes every world-th sample of the global batch, computes its
    rule's gradients on that shard, and the shards' gradients are summed across processes, so the
    update is that of the global batch; only rank 0 writes files.
    """
    cfg, data = run.config, run.data
    distributed = dist.is_available() and dist.is_initialized()  # under torchrun
    world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
    out = out if rank == 0 else None
    progress = progress and rank == 0
    if world > 1 and not get(cfg.rule).additive:  # each process would run it on its shard alone
        raise TrainingError(f"rule {cfg.rule} cannot train data-parallel ({world} processes): its update on a batch "
                            "is not the sum of its updates on the batch's shards (iPC's weights move on the whole "
                            "batch during its inference); run it in one process")
    if run.epoch < cfg.epochs:  # before any step: a partial batch the module cannot take would stop the epoch
        dropped = check_batch_sizes(run.module, data, cfg.batch_size, cfg.model, world, rank)
        if dropped and cfg.rule == "bp":  # the other rules trace the module, and the trace says so
            warnings.warn(f"{cfg.model} calls dropout {dropped} time(s) in train mode: rule bp, as every pcsim rule, "
                          "runs dropout as the identity (as in eval mode), so it trains without dropout", UserWarning,
                          stacklevel=user_stacklevel())
    graphs: dict = {}  # traced once per batch shape
    n = len(data.x_train)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * per_epoch
    bar = tqdm(total=total, initial=run.step, desc=f"{cfg.model} {cfg.rule}", disable=not progress, leave=False)
    while run.epoch < cfg.epochs:
        if run.order is None:
            run.order = torch.randperm(n, generator=run.generator)
        start = time.perf_counter()
        while run.batch < per_epoch:
            idx = run.order[run.batch * cfg.batch_size:(run.batch + 1) * cfg.batch_size]
            x, y = data.x_train[idx], data.y_train[idx]
            target = _targets(run, y)
            mine = slice(rank, None, world)
            # the batch's loss at the parameters its gradients are taken at, as a torch loop logs it (scored
            # after the step, the train loss was that of parameters already fitted to the batch: lower)
            loss, correct = _score(run, x, y)
            if len(idx[mine]):
                before = snapshot(run.module)  # tracing, the rule and the check each may move the buffers
                grads = _gradients(run, x[mine], target[mine], graphs, _lr(cfg, run.step, total) / len(idx))
                if cfg.check_every and run.step % cfg.check_every == 0:
                    _check(run, grads, autograd_gradients(run.module, (x[mine],), target[mine], run.criterion))
                restore(run.module, before)
                advance(run.module, (x[mine],))
            else:  # fewer samples than processes in the last batch
                grads = {n: torch.zeros_like(p) for n, p in run.module.named_parameters()}
            if world > 1:  # the global batch's update: the shards' gradients summed
                for g in grads.values():
                    dist.all_reduce(g, op=dist.ReduceOp.SUM)
            for group in run.optimiser.param_groups:
                group["lr"] = _lr(cfg, run.step, total)
            for name, p in run.module.named_parameters():
                p.grad = grads[name] / len(idx)  # the mean loss over the batch
            run.optimiser.step()
            run.running["loss"] += loss
            run.running["correct"] += correct
            run.running["seen"] += len(idx)
            run.batch += 1
            run.step += 1
            bar.update(1)
            if out is not None and cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0:
                run.running["seconds"] += time.perf_counter() - start
                start = time.perf_counter()
                save_checkpoint(run.state(), Path(out) / "checkpoint.pt")
        run.running["seconds"] += time.perf_counter() - start
        test_loss, test_acc = evaluate(run)
        r = run.running
        row = {"epoch": run.epoch + 1, "step": run.step, "train_loss": r["loss"] / r["seen"],
               "train_acc": r["correct"] / r["seen"], "test_loss": test_loss, "test_acc": test_acc,
               "seconds": r["seconds"]}
        if r["deviation"]:
            row["max_deviation"] = max(r["deviation"])
            row["mean_angle_deg"] = sum(r["angle"]) / len(r["angle"])
        run.history.append(row)
        run.epoch, run.batch, run.order = run.epoch + 1, 0, None
        run.running = _new_epoch()
        if on_epoch is not None:
            on_epoch(row)
        if out is not None:
            write_outputs(run, Path(out))
    bar.close()
    return run.history


def _gradients(run: Run, x: torch.Tensor, y: torch.Tensor, graphs: dict, rate: float) -> dict[str, torch.Tensor]:
    """The configured rule's gradients for a batch, in autograd's sign; "bp" is autograd on the module itself,
    the others run on its traced graph (specialised to shapes: `graphs` holds one per batch shape). `rate`: this
    step's learning rate over the (global) batch size, the step on the summed loss that SGD will take."""
    cfg = run.config
    if cfg.rule == "bp":
        return autograd_gradients(run.module, (x,), y, run.criterion)
    rule, key = get(cfg.rule), (tuple(x.shape), x.dtype)
    if key not in graphs:
        graphs[key] = pcsim.trace(run.module, x, fused=cfg.fused_recurrent)
    settings = {"fixed_prediction": cfg.il_fixed_prediction, "output_precision": cfg.il_output_precision,
                "compile": cfg.compile}
    options = {k: v for k, v in settings.items() if k in rule.accepts}
    if rule.inference:  # IL's inference settings, for every rule that relaxes the values
        options.update(gamma=cfg.il_gamma, steps=cfg.il_steps)
    if "lr" in rule.accepts:  # iPC: its weights' rate per inference step, lr / T, so that SGD's step of lr on its
        options["lr"] = rate / cfg.il_steps  # mean estimate lands where its inference left them (its 1e-3 diverged)
    try:
        return rule(graphs[key], (x,), y, run.criterion, **options)
    except DivergenceError as e:  # its 'lr = ...' is the per-step rate, not a number the user set
        if "lr" not in options or "diverged at lr" not in str(e):
            raise
        raise DivergenceError(f"{e}. Here iPC's lr is this step's learning rate {rate * len(x):.4g} over the batch of "
                              f"{len(x)} and the {cfg.il_steps} inference steps: lower lr (--lr)") from None


def _check(run: Run, grads: dict, reference: dict) -> None:
    deviation, angle = deviation_and_angle(grads, reference)
    run.running["deviation"].append(deviation)
    run.running["angle"].append(angle)
    limit = tolerance(DTYPES[run.config.dtype])
    if get(run.config.rule).exact and run.config.rule != "bp" and not deviation <= limit:
        raise TrainingError(f"step {run.step}: rule {run.config.rule} deviates from autograd by {deviation:.3e} "
                            f"(relative; tolerance {limit:.0e}, angle {angle:.3g} degrees); training stopped")


def write_outputs(run: Run, out: Path) -> None:
    """model.pt (state_dict), metrics.json, metrics.csv and the checkpoint, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    save_atomic(run.module.state_dict(), out / "model.pt")
    save_checkpoint(run.state(), out / "checkpoint.pt")
    summary = dict(run.history[-1]) if run.history else {}
    doc = {"config": asdict(run.config), "loss": run.loss, "data": run.data.name,
           "input_shape": list(run.data.input_shape), "n_classes": run.data.n_classes,
           "epochs": run.history, "final": summary}
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(out / "metrics.json")
    keys = list(dict.fromkeys(k for row in run.history for k in row))  # the first row's order, then any others
    tmp = out / "metrics.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(run.history)
    tmp.replace(out / "metrics.csv")


def resume(out: Path, data: Dataset | None = None, *, module: torch.nn.Module | None = None,
           loss: str = "mse") -> Run:
    """Rebuild a run from `out/checkpoint.pt` (its stored config), ready to continue (`module`, `loss`: as
    the run was built with, see `build_run`)."""
    state = load_checkpoint(Path(out) / "checkpoint.pt")
    run = build_run(TrainConfig(**state["config"]), data, module=module, loss=loss)
    check_fits(state["model"], run.module, Path(out) / "checkpoint.pt")
    run.restore(state)
    return run
