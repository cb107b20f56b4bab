"""The stages of `pcsim demo` (`STAGE_FUNCTIONS`, each docstring's first line its title): small sizes, library
calls (pcsim.table, pcsim.simulate, pcsim.training, pcsim.plots.demo), a progress line per step. Each stage
fills a `Stage`: its verdict, the files it wrote, its section of summary.md.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pcsim.errors import PcsimError, first_line
from pcsim.numerics import relative_difference, tolerance


@dataclass(frozen=True)
class DemoConfig:
    models: tuple[str, ...] | None  # None: every zoo model in pcsim.zoo.SMALL_DIMS
    t_end: float  # continuous time: simulated time, target onset, value time constant, Brian2 step
    t_on: float
    tau_x: float
    brian2_dt: float
    epochs: int  # training: the zoo MLP on digits with these hidden widths, float64
    hidden: tuple[int, ...]


FULL = DemoConfig(models=None, t_end=2.5, t_on=0.5, tau_x=0.2, brian2_dt=0.01, epochs=5, hidden=(64, 64))
QUICK = DemoConfig(models=("mlp", "residual_mlp", "tied_autoencoder"), t_end=0.8, t_on=0.2, tau_x=0.2,
                   brian2_dt=0.05, epochs=1, hidden=(16,))


@dataclass
class Stage:
    """What a stage leaves behind: its verdict, the files it wrote, its section of summary.md."""

    title: str
    ok: bool = True
    files: list[Path] = field(default_factory=list)
    markdown: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)


def _say(line: str) -> None:
    print(line, flush=True)


def _begin(label: str) -> float:
    """Print what starts now (the line is finished by the caller with the time it took)."""
    print(f"{label} ...", end="", flush=True)
    return time.perf_counter()


# -- stage 1: the zoo table --------------------------------------------------------------------
def stage_table(config: DemoConfig, out: Path, stage: Stage) -> None:
    """Z-IL and Fa-Z-IL against backprop (torch autograd) on the model zoo, at small sizes."""
    from pcsim.table import COLUMNS, markdown, zoo_row
    from pcsim.zoo import SMALL_DIMS, zoo_names

    names = list(config.models) if config.models is not None else [n for n in zoo_names() if n in SMALL_DIMS]
    skipped = [n for n in zoo_names() if n not in SMALL_DIMS] if config.models is None else []
    rows = []
    for i, name in enumerate(names, 1):
        try:
            row = zoo_row(name, torch.float64, dims=SMALL_DIMS.get(name))
        except (PcsimError, ValueError, RuntimeError) as e:
            stage.fail(f"{name}: {first_line(e)}")
            _say(f"  [{i:>2}/{len(names)}] {name:<17} could not run: {first_line(e)}")
            continue
        rows.append(row)
        if not row.passed:
            stage.fail(f"{name}: an exact rule deviates from autograd")
        _say(f"  [{i:>2}/{len(names)}] {name:<17} {'exact' if row.passed else 'DEVIATES'} ({row.total_seconds:.1f} s)")
    _say("")
    _say(console_table(rows, COLUMNS))
    if skipped:
        _say(f"  not in the demo (no small size known): {', '.join(skipped)}; run `pcsim check MODEL`")
    text = markdown(rows, torch.float64, command="pcsim demo (zoo models at small sizes)")
    path = out / "zoo_table.md"
    path.write_text(text)
    stage.files.append(path)
    body = text.split("\n", 1)[1].lstrip("\n") if text.startswith("# ") else text  # our own heading instead
    stage.markdown += [body]


def console_table(rows, columns) -> str:
    """The rows as aligned text: deviation of each rule, 'exact' or 'DEVIATES' per model."""
    from pcsim.table import fmt_deviation

    short = {c: c.replace(" wavefront", " wave").replace(" autonomous", " auto") for c in columns}
    widths = {c: max(9, len(short[c])) for c in columns}
    head = f"  {'model':<17}{'vertices':>9}{'+identity':>10}  " + "  ".join(f"{short[c]:>{widths[c]}}"
                                                                         for c in columns) + "  verdict"
    lines = [head, "  " + "-" * (len(head) - 2)]
    for r in rows:
        devs = "  ".join(f"{fmt_deviation(r.deviation.get(c)):>{widths[c]}}" for c in columns)
        lines.append(f"  {r.model:<17}{r.vertices:>9}{r.identity:>10}  {devs}  {'exact' if r.passed else 'DEVIATES'}")
    tol = rows[0].tolerance if rows else 0.0
    exact = [c for c, (_, _, must) in columns.items() if must]
    lines += ["", "  Each number: max over parameters of ||PC update - autograd gradient|| / ||autograd gradient||"
                  " (float64).", f"  Exact means every one of {', '.join(exact)} is within {tol:.0e}."]
    if any(not must for _, _, must in columns.values()):
        lines += ["  'Z-IL unlevelled' skips level(): it is far off wherever identity vertices are needed",
                  "  (+identity > 0), which is why Z-IL levels the graph first."]
    return "\n".join(lines)


# -- stage 2: continuous time ------------------------------------------------------------------
def wave_network(seed: int = 0, sizes=(6, 6, 6, 6, 6, 3)):
    """A 5-layer tanh network (float64) with one input sample and its target."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[tuple[str, nn.Module]] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False), 1):
            layers += [(f"fc{i}", nn.Linear(a, b)), (f"tanh{i}", nn.Tanh())]
        net = nn.Sequential(OrderedDict(layers[:-1])).double()  # named layers: populations fc1 ... fc5
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, sizes[0], generator=gen, dtype=torch.float64)
    y = torch.randn(1, sizes[-1], generator=gen, dtype=torch.float64)
    return net, x, y


def stage_dynamics(config: DemoConfig, out: Path, stage: Stage) -> None:
    """Continuous time: value and error populations after the target appears (scipy, Brian2)."""
    import pcsim
    from pcsim.check import autograd_gradients

    net, x, y = wave_network()
    graph = pcsim.trace(net, x)
    layers = sorted((v.name for v in graph.vertices if v.op == "linear"), key=lambda n: -graph.min_distance[n])
    n_steps = round(config.t_end / config.brian2_dt)
    common = dict(t_end=config.t_end, t_on=config.t_on, tau_x=config.tau_x,
                  record={"populations": layers, "times": np.linspace(0.0, config.t_end, n_steps + 1)})
    _say(f"  network: {len(layers)} linear layers of tanh units, tau_x = {config.tau_x}, target shown at "
         f"t = {config.t_on}, simulated to t = {config.t_end}")
    runs, lines = {}, []
    t = _begin("  scipy solve_ivp RK45 (adaptive steps, rtol 1e-6)")
    runs["scipy RK45"] = pcsim.simulate(graph, (x,), y, backend="scipy", method="RK45", rtol=1e-6, atol=1e-9, **common)
    _say(f" {time.perf_counter() - t:.1f} s")
    t = _begin(f"  Brian2 (numpy target, explicit Euler, dt = {config.brian2_dt})")
    try:
        runs["Brian2 Euler"] = pcsim.simulate(graph, (x,), y, backend="brian2", method="euler",
                                              dt=config.brian2_dt, codegen_target="numpy", **common)
    except ImportError as e:  # pcsim's Brian2Unavailable is an ImportError; its message says how to install
        detail = first_line(e.__cause__) if e.__cause__ else first_line(e).split(";")[0]
        _say(f" skipped: Brian2 is not installed or fails at import ({detail}); `make install` puts it in .venv")
        lines.append("Brian2 was not installed: only the scipy run is drawn.")
    else:
        b2, ref = runs["Brian2 Euler"], runs["scipy RK45"]
        after = b2.t > config.t_on + config.brian2_dt
        # both recorded at `times` (a fixed-step run refuses a time off its grid): compared point by point
        gap = max(float(np.abs(b2.values[n][after] - ref.values[n][after]).max()) for n in layers)
        _say(f" {time.perf_counter() - t:.1f} s; largest value difference to scipy {gap:.1e} (Euler's O(dt) error)")
        lines.append(f"Brian2 (numpy target, explicit Euler, dt = {config.brian2_dt}) against scipy RK45: largest "
                     f"value difference {gap:.1e} after onset, Euler's first-order error.")
    from pcsim.plots.demo import plot_backends

    path = out / "dynamics.png"
    plot_backends(runs, layers).savefig(path, dpi=110)
    stage.files.append(path)

    # The discretisation: Euler at dt = tau_x with Z-IL gates is Z-IL, so its plasticity is BP's gradient.
    mapping = pcsim.discretise(tau_x=config.tau_x, dt=config.tau_x, plasticity="zil")
    reference = autograd_gradients(net, (x,), y, "mse")
    t_end = (graph.depth + 2) * config.tau_x
    # Brian2 sums each neuron's synapses in its own order: its tests hold this mapping to 1e-10, not 1e-12.
    limits = {"scipy": tolerance(torch.float64), "brian2": 100 * tolerance(torch.float64)}
    backends = ["scipy"] + (["brian2"] if "Brian2 Euler" in runs else [])
    lines.append(f"Explicit Euler at dt = tau_x with Z-IL gates ({mapping.note}):")
    for backend in backends:
        euler = pcsim.simulate(graph, (x,), y, backend=backend, method="euler", dt=config.tau_x, tau_x=config.tau_x,
                               t_end=t_end, plasticity="zil", record=[])
        worst = max(relative_difference(torch.as_tensor(euler.updates[k]), g) for k, g in reference.items())
        ok = worst <= limits[backend]
        _say(f"  Euler at dt = tau_x with Z-IL gates ({backend}): plasticity vs autograd {worst:.1e} "
             f"{'(equal to rounding)' if ok else 'DEVIATES'}")
        lines.append(f"- {backend}: largest relative deviation from autograd {worst:.1e}")
        if not ok:
            stage.fail(f"Euler Z-IL on {backend} deviates from autograd by {worst:.1e}")
    stage.markdown += [f"![value and error populations]({path.name})", "", *lines]


# -- stage 3: training -------------------------------------------------------------------------
def stage_training(config: DemoConfig, out: Path, stage: Stage) -> None:
    """Training the zoo MLP on digits with BP and with Z-IL from the same start."""
    from pcsim.training.data import load_dataset
    from pcsim.training.loop import TrainConfig, train

    data = load_dataset("digits", seed=0).to(torch.float64)
    cfg = TrainConfig(model="mlp", rule="zil", data="digits", epochs=config.epochs, dtype="float64", check_every=1)
    shape = "-".join(map(str, (int(np.prod(data.input_shape)), *config.hidden, data.n_classes)))
    _say(f"  MLP {shape} (tanh), float64, SGD lr {cfg.lr} momentum {cfg.momentum}, batch {cfg.batch_size}, "
         f"{config.epochs} epoch(s) of {len(data.x_train)} images")
    progress = sys.stderr.isatty()
    bp_run = _mlp_run(replace(cfg, rule="bp", check_every=0), data, config.hidden)
    snapshots = []
    t = time.perf_counter()
    bp_rows = train(bp_run, progress=progress, on_epoch=lambda row: snapshots.append(_params(bp_run.module)))
    _say(f"  BP: {config.epochs} epoch(s) in {time.perf_counter() - t:.1f} s; now Z-IL from the same start "
         "(loss: training batch mean, acc: held-out accuracy)")
    zil_run = _mlp_run(cfg, data, config.hidden)
    divergence, relative = [], []

    def compare(row):
        mine, theirs = _params(zil_run.module), snapshots[row["epoch"] - 1]
        divergence.append(max(float((mine[k] - theirs[k]).abs().max()) for k in theirs))
        relative.append(float(torch.cat([(mine[k] - theirs[k]).reshape(-1) for k in theirs]).norm()
                              / torch.cat([theirs[k].reshape(-1) for k in theirs]).norm()))
        bp = bp_rows[row["epoch"] - 1]
        _say(f"  epoch {row['epoch']}/{config.epochs}  Z-IL loss {row['train_loss']:.4f} acc {row['test_acc']:.3f} | "
             f"BP loss {bp['train_loss']:.4f} acc {bp['test_acc']:.3f} | Z-IL gradient vs autograd "
             f"{row['max_deviation']:.0e}, max |theta - theta_BP| {divergence[-1]:.0e}")

    zil_rows = train(zil_run, progress=progress, on_epoch=compare)  # stops with TrainingError if Z-IL deviates
    limit = 100 * tolerance(torch.float64)  # the bound the training tests hold Z-IL to (1e-10)
    if relative[-1] > limit:
        stage.fail(f"Z-IL's parameters ended {relative[-1]:.1e} (relative) from BP's, above {limit:.0e}")
    from pcsim.plots.demo import plot_training

    epochs = [r["epoch"] for r in zil_rows]
    curves = {"BP": _columns(bp_rows), "Z-IL": _columns(zil_rows)}
    path = out / "training.png"
    plot_training(epochs, curves, divergence, title=f"digits, MLP {shape}, float64: BP and Z-IL from the same "
                                                    "initial weights").savefig(path, dpi=110)
    stage.files.append(path)
    table = ["| epoch | BP train loss | Z-IL train loss | BP test acc | Z-IL test acc | max abs param diff | "
             "Z-IL grad deviation |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for b, z, d in zip(bp_rows, zil_rows, divergence, strict=True):
        table.append(f"| {z['epoch']} | {b['train_loss']:.6f} | {z['train_loss']:.6f} | {b['test_acc']:.4f} | "
                     f"{z['test_acc']:.4f} | {d:.1e} | {z['max_deviation']:.1e} |")
    stage.markdown += [f"![BP and Z-IL training]({path.name})", "",
                       f"MLP {shape} (tanh) on scikit-learn's digits, float64, SGD (lr {cfg.lr}, momentum "
                       f"{cfg.momentum}), batch {cfg.batch_size}, {config.epochs} epoch(s). Z-IL's gradients were "
                       "compared with autograd's at every step (largest relative deviation per epoch in the last "
                       f"column); the parameters end {relative[-1]:.1e} apart (relative).", "", *table]


def _mlp_run(cfg, data, hidden):
    """A training run of the zoo MLP at the demo's hidden widths (build_run uses the full-size default)."""
    from pcsim.training.loop import build_run
    from pcsim.zoo import load_model_file

    spec = load_model_file(cfg.model)
    module, _, _ = spec.build_model(seed=cfg.seed, input_shape=data.input_shape, n_classes=data.n_classes,
                                    hidden=hidden)
    return build_run(cfg, data, module=module, loss=spec.loss)


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in module.named_parameters()}


def _columns(rows: list[dict]) -> dict[str, list[float]]:
    return {k: [r[k] for r in rows] for k in ("train_loss", "test_acc")}


# name -> stage function (run in this order)
STAGE_FUNCTIONS = {"table": stage_table, "dynamics": stage_dynamics, "training": stage_training}
