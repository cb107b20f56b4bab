"""Time per weight update and peak memory of BP, Z-IL, Fa-Z-IL and IL on every zoo model (issue 8), for
`pcsim bench` and benchmarks/bench_rules.py (the repository's tables); options: `add_arguments`.

Every rule runs on the same module, data and float32 parameters. BP is torch autograd on the
nn.Module itself; "bp-graph" is autograd over pcsim's traced graph of it (`pcsim.bp`), what the
decomposition alone costs. Every timed call of a PC rule includes building its Problem (validation,
clamped values) and the feed-forward pass; the rest of the method is `METHOD`. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import pcsim
from pcsim.algorithms.losses import get_loss
from pcsim.bench.measure import interleaved, peak_memory_mb, summary, timed, write_results
from pcsim.rules import RULES as REGISTERED
from pcsim.zoo import load_model_file, zoo_names

# "bp" here is autograd on the nn.Module itself (the baseline); the registry's "bp" (over the traced graph)
# is "bp-graph"; "fa-zil" is "fa-zil-wavefront" under its short name. Every other registered rule is
# benchmarked under its own name, a rule taking IL's inference settings at T = 5, 20 and 100 steps.
INFERENCE_STEPS = (5, 20, 100)
_SKIPPED = {"bp": "bp-graph", "fa-zil": "fa-zil-wavefront"}
RULES = ("bp", "bp-graph", *(n for n, r in REGISTERED.items() if n not in _SKIPPED and not r.inference),
         *(f"{n}-T{t}" for n, r in REGISTERED.items() if r.inference for t in INFERENCE_STEPS))
_INFERENCE = re.compile(r"(.+)-T(\d+)")  # an inference rule's family and its steps T
# compile=True (pcsim.algorithms.compiled): chosen with --rules only; each compiles once, in its warm-up
COMPILED = ("fa-zil-wavefront-compiled", *(f"il-T{t}-compiled" for t in INFERENCE_STEPS))
# Realistic sizes and batches (issue 8): the MLP at 256, the image models at 128 on 32x32x3, sequences
# at 128. Zoo models whose defaults are the paper's toy figures (8 -> 16 -> 4, 8x8 digits, 8 hidden
# units) are widened here to the sizes a researcher trains; on toy sizes every rule is dominated by
# per-call overhead rather than arithmetic (`--toy` measures the defaults).
DIMS = {
    "mlp": {"batch": 256},  # 784-1000-1000-10, tanh
    "alexnet": {"batch": 128},
    "resnet18": {"batch": 128},
    "densenet_block": {"batch": 128},
    "cnn": {"input_shape": (3, 32, 32), "channels": (32, 64), "batch": 128},
    "rnn": {"input_shape": (10, 32), "hidden_size": 256, "n_out": 10, "batch": 128},
    "lstm": {"input_shape": (10, 32), "hidden_size": 256, "batch": 128},
    "gru": {"input_shape": (10, 32), "hidden_size": 256, "batch": 128},  # two layers
    "transformer": {"batch": 32},  # 64 tokens, d_model 256, 8 heads
    "residual_mlp": {"input_shape": (784,), "hidden": 1000, "n_out": 10, "batch": 256},
    "tied_autoencoder": {"batch": 256},  # 784-256-784
}
METHOD = ("time per weight update, {device}, float32, {threads} torch thread(s); tracing and levelling once "
          "outside the timed region; one warm-up call per rule; repetitions interleave every rule (order "
          "rotated); median time and median per-repetition ratio to BP of the same repetition; a slow rule "
          "runs fewer repetitions (at least 3) where {reps} would exceed the per-model budget ({budget:.0f} s); "
          "peak memory: "
          "{memory}, one call per rule")


@dataclass
class Case:
    name: str
    batch: int
    depth: int
    runs: dict
    dims: str = ""


def case(name: str, device: torch.device, rules: list[str], batch: int | None = None, toy: bool = False,
         fused: bool = False) -> Case:
    dims = {**({} if toy else DIMS.get(name, {})), **({"batch": batch} if batch else {})}
    spec = load_model_file(name)
    module, inputs, target = spec.build_model(0, **dims)
    module = module.to(device=device).eval()
    for m in module.modules():  # cuDNN runs no backward in eval mode; without dropout, train mode is the same map
        if isinstance(m, nn.RNNBase) and (m.dropout == 0 or m.num_layers == 1):
            m.train()
    inputs = tuple(x.to(device) for x in inputs)
    target = target.to(device)
    # per-shape setup, outside the timed region; `fused`: each nn.RNN/LSTM/GRU one vertex (torch's fused kernel)
    graph = pcsim.trace(module, *inputs, fused=fused)
    levelled = graph.level()
    loss = get_loss(spec.loss)
    used = [p for n, p in module.named_parameters() if graph.users.get(n)]

    def bp():
        total = loss.value(module(*inputs), target)
        return torch.autograd.grad(total, used, allow_unused=True)

    def registered(rule, **options):
        g = levelled if rule.levelled else graph
        return lambda: rule(g, inputs, target, spec.loss, **options)

    every = {"bp": bp, "bp-graph": registered(REGISTERED["bp"]),
             "fa-zil-wavefront-compiled": registered(REGISTERED["fa-zil-wavefront"], compile=True),
             **{f"il-T{t}-compiled": registered(REGISTERED["il"], steps=t, compile=True) for t in INFERENCE_STEPS},
             **{n: registered(r) for n, r in REGISTERED.items() if n not in _SKIPPED and not r.inference},
             **{f"{n}-T{t}": registered(r, steps=t) for n, r in REGISTERED.items() if r.inference
                for t in INFERENCE_STEPS}}
    size = ", ".join(f"{k}={v}" for k, v in dims.items() if k != "batch") or "zoo default"
    fused = fused and any(isinstance(m, pcsim.RECURRENT_LAYERS) for m in module.modules())  # label what ran
    label = f"{name}, fused layers" if fused else name
    return Case(label, int(inputs[0].shape[0]), levelled.depth, {r: every[r] for r in rules}, size)


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    dev = "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device)
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": dev}


def measure(c: Case, device: torch.device, reps: int, budget_s: float, log=print) -> dict:
    """Warm-up, per-rule repetition counts within the budget, interleaved timing, then peak memory."""
    first = {}
    for rule, fn in c.runs.items():  # warm-up; IL at larger T is estimated from smaller T first
        est = _estimate(rule, first)
        if est is not None and 3 * est > budget_s:
            log(f"  {rule}: skipped (about {est:.0f} s per update, over the budget)")
            continue
        first[rule] = timed(fn, device)
        if rule in COMPILED:  # the first call compiled: time one more for the estimates and the budget
            log(f"  compile and run {rule}: {1e3 * first[rule]:.1f} ms")
            first[rule] = timed(fn, device)
        log(f"  warm-up {rule}: {1e3 * first[rule]:.1f} ms")
    counts = {r: reps if r == "bp" else min(reps, max(3, int(budget_s / max(first[r], 1e-9)))) for r in first}
    times = interleaved({r: c.runs[r] for r in first}, counts, device, log)
    stats = summary(times, "bp") if "bp" in times else summary(times, next(iter(times)))
    mem = {r: peak_memory_mb(c.runs[r], device) for r in first}
    for r in stats:
        stats[r]["peak_mem_mb"] = mem[r]
        stats[r]["peak_mem_ratio"] = mem[r] / mem["bp"] if mem.get("bp") else float("nan")
    return {"model": c.name, "dims": c.dims, "batch": c.batch, "depth": c.depth,
            "rules": {r: stats[r] for r in RULES + COMPILED if r in stats}}


def _estimate(rule: str, first: dict) -> float | None:
    """An inference rule costs about T times one step: extrapolate T=100 from T=20, T=20 from T=5."""
    this = _INFERENCE.match(rule)  # il-T20 -> (il, 20), ipc-T5-compiled -> (ipc, 5)
    if this is None:
        return None
    known = [(int(m[2]), t) for r, t in first.items() if (m := _INFERENCE.match(r)) and m[1] == this[1]]
    return max((t * int(this[2]) / s for s, t in known), default=None)


def _quartiles(s: dict) -> str:
    """The ratio's quartiles over the repetitions, '-' where not recorded (older runs) or one run."""
    q1, q3 = s.get("ratio_q1", float("nan")), s.get("ratio_q3", float("nan"))
    return "-" if math.isnan(q1) or math.isnan(q3) else f"{q1:.2f}-{q3:.2f}"


def markdown(result: dict) -> list[str]:
    m = result["machine"]
    lines = [f"# Exact rules vs BP: time per weight update and peak memory ({m['device']}, float32)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; torch {m['torch']} on {m['threads']} "
             f"thread(s); created {result['created']}.", "", f"Method: {result['method']}.", "",
             "Ratios are to BP in the same repetition (median of per-repetition ratios; quartiles: their 25th and "
             "75th percentiles, how far one run moves on this shared machine); "
             "Done-when targets: Fa-Z-IL wavefront <= 1.05x BP time and <= 1.2x BP peak memory, "
             "Z-IL <= depth x BP.", "",
             "| model | batch | depth | rule | median ms | x BP time | quartiles | peak MiB | x BP memory | runs |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    sizes = [f"- {mod['model']}: {mod['dims']}" + (f" (measured {mod['measured']})" if mod.get("measured") else "")
             for mod in result["models"] if mod.get("dims")]
    for mod in result["models"]:
        for r, s in mod["rules"].items():
            lines.append(f"| {mod['model']} | {mod['batch']} | {mod['depth']} | {r} | {s['median_ms']:.1f} | "
                         f"{s['ratio_to_bp']:.2f} | {_quartiles(s)} | {s['peak_mem_mb']:.1f} | "
                         f"{s['peak_mem_ratio']:.2f} | {s['runs']} |")
    if sizes:
        lines += ["", "Sizes (besides the batch):", *sizes]
    if result.get("not_measured"):
        lines += ["", "Not measured:", *(f"- {m['model']}: {m['reason']}" for m in result["not_measured"])]
    return lines


def _positive(kind, zero: bool = False):
    """An argparse type: a number > 0 (>= 0 with `zero`) (a zero --batch or --threads was taken as 'not given',
    a zero --reps failed after the warm-up with 'no median for empty data')."""
    def parse(text: str):
        value = kind(text)  # argparse reports a ValueError as "invalid <kind> value"
        if not (value >= 0 if zero else value > 0):
            raise argparse.ArgumentTypeError(f"must be {'>=' if zero else '>'} 0, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def _device(text: str) -> str:
    """An argparse type: a device torch has here, checked before the first model's setup."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:1)") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"must be cpu or cuda, got {text}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: this torch sees no CUDA device (torch {torch.__version__})")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options shared by `pcsim bench` and benchmarks/bench_rules.py (each adds its own --out)."""
    ap.add_argument("--models", nargs="*", default=None, help="zoo names (default: all)")
    ap.add_argument("--rules", nargs="*", default=list(RULES), choices=RULES + COMPILED,
                    help="the rules to time; BP always runs, as the baseline (default: all but the compiled)")
    ap.add_argument("--reps", type=_positive(int), default=10, help="timed repetitions per rule (default: 10)")
    ap.add_argument("--device", type=_device, default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument("--threads", type=_positive(int), default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--budget-s", type=_positive(float), default=240.0,
                    help="per model and rule: timed seconds before fewer runs (min 3); skip a rule over a third "
                         "(default: 240)")
    ap.add_argument("--batch", type=_positive(int), default=None, help="override every selected model's batch")
    ap.add_argument("--toy", action="store_true", help="the zoo's default (toy) sizes instead of realistic ones")
    ap.add_argument("--fused", action="store_true",
                    help="trace nn.RNN/LSTM/GRU as one vertex per layer call (rows named 'MODEL, fused layers')")
    ap.add_argument("--append", action="store_true", help="add to the JSON table's models instead of starting anew")
    ap.add_argument("--deadline-s", type=_positive(float, zero=True), default=None,  # 0: list all as left out
                    help="start no model after this many seconds of the run (a lent machine's time is counted)")
    ap.add_argument("--keep-going", action="store_true",
                    help="a model that raises is listed under 'Not measured' with its error; the run goes on")


def run(args: argparse.Namespace, out: Path) -> int:
    """Measure every selected model; writes OUT.json and OUT.md after each one (`out` is the stem)."""
    started = time.monotonic()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    rules = ["bp", *[r for r in args.rules if r != "bp"]]
    memory = ("torch.cuda.max_memory_allocated above the allocation before the call" if device.type == "cuda" else
              "peak of the cumulative allocation curve recorded by torch.profiler(profile_memory=True)")
    result = {"machine": machine(device), "dtype": "float32",
              "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "method": METHOD.format(device=device.type, threads=torch.get_num_threads(), reps=args.reps,
                                      budget=args.budget_s, memory=memory),
              "models": []}
    if args.append and out.with_suffix(".json").exists():
        try:
            old = json.loads(out.with_suffix(".json").read_text())
            old["models"], old["method"]  # noqa: B018 - what --append reads
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise ValueError(f"--append: {out.with_suffix('.json')} is not a table pcsim bench wrote "
                             f"({type(e).__name__}: {e}); move it away or leave out --append") from None
        result["models"] = old["models"]
        result["not_measured"] = old.get("not_measured", [])
        result["method"] = old["method"] if old["method"] == result["method"] else (
            old["method"] + "; later models: " + result["method"])
    for name in args.models or zoo_names():
        if args.deadline_s is not None and time.monotonic() - started > args.deadline_s:
            _not_measured(out, result, name, f"the run's deadline ({args.deadline_s:.0f} s) had passed")
            continue
        print(f"{name}:", flush=True)
        try:
            c = case(name, device, rules, args.batch, args.toy, args.fused)
            stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")  # --append mixes runs
            entry = {**measure(c, device, args.reps, args.budget_s), "measured": stamp}
        except Exception as e:  # noqa: BLE001 - reported in the table, not hidden
            if not args.keep_going:
                raise
            _not_measured(out, result, name, f"{type(e).__name__}: {e}".splitlines()[0])
            continue
        result["not_measured"] = [m for m in result.get("not_measured", []) if m["model"] != c.name]
        models = {m["model"]: m for m in result["models"]}
        models[c.name] = entry  # a rerun keeps the model's place in the table
        result["models"] = list(models.values())
        write_results(out, result, markdown(result), echo=False)  # after every model: a long run keeps its part
    print("\n".join(markdown(result)) + "\n")
    return 0


def _not_measured(out: Path, result: dict, name: str, reason: str) -> None:
    print(f"{name}: not measured ({reason})", flush=True)
    result.setdefault("not_measured", []).append({"model": name, "reason": reason})
    write_results(out, result, markdown(result), echo=False)
