"""Figure 6: time per weight update of IL, Z-IL and Fa-Z-IL relative to BP, per architecture.

The full configuration reads the benchmark's JSON (benchmarks/results/rules_cpu.json, written by
`make bench`): per model, each rule's median time and its ratio to BP measured in the same run.
The smoke configuration does not need that file: it times a small MLP in this process (BP by
torch autograd on the module, the PC rules by pcsim on its traced graph), repetitions interleaved
across rules so that load from other processes hits all of them alike, into the same schema.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

import pcsim
from pcsim.check import autograd_gradients
from pcsim.errors import InputError

try:
    from ._common import script_main, small_mlp
except ImportError:  # run as a file, `python figures/figN_name.py`: Python put its folder on sys.path
    from _common import script_main, small_mlp

ROOT = Path(__file__).resolve().parent.parent
CONFIG = {"source": "benchmarks/results/rules_cpu.json"}
SMOKE = {"measure": {"seed": 0, "sizes": [16, 16, 16, 4], "batch": 8, "reps": 5, "il_steps": [5, 20]}}

# rule key in the JSON -> (legend label, colour); keys not listed here are drawn after these, in grey
RULES = {"bp-graph": ("BP on the traced graph", "#999999"), "zil": ("Z-IL", "#1c4587"),
         "fa-zil-wavefront": ("Fa-Z-IL wavefront", "#38761d"),
         "fa-zil-autonomous": ("Fa-Z-IL autonomous", "#6aa84f"), "il-T5": ("IL, T = 5", "#f6b26b"),
         "il-T20": ("IL, T = 20", "#e69138"), "il-T100": ("IL, T = 100", "#b45f06")}


def _machine() -> dict:
    """The keys benchmarks/bench_rules.py records."""
    return {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu"}


def _measure(cfg: dict) -> dict:
    """A tiny benchmark in the benchmark's schema: interleaved repetitions, the order rotated each
    time; median time, and median over repetitions of the ratio to BP's time in the same one."""
    module = small_mlp(cfg["seed"], sizes=tuple(cfg["sizes"]))
    gen = torch.Generator().manual_seed(cfg["seed"])
    x = torch.randn(cfg["batch"], cfg["sizes"][0], generator=gen, dtype=torch.float64)
    y = torch.randn(cfg["batch"], cfg["sizes"][-1], generator=gen, dtype=torch.float64)
    graph = pcsim.trace(module, x)  # traced and levelled once, outside the timing: the cost per update
    levelled = graph.level()
    runs = {
        "bp": lambda: autograd_gradients(module, (x,), y, "mse"),
        "zil": lambda: pcsim.zil(levelled, (x,), y, "mse"),
        "fa-zil-wavefront": lambda: pcsim.fa_zil(levelled, (x,), y, "mse", mode="wavefront"),
        "fa-zil-autonomous": lambda: pcsim.fa_zil(levelled, (x,), y, "mse", mode="autonomous"),
        **{f"il-T{t}": (lambda t=t: pcsim.il(graph, (x,), y, "mse", steps=t)) for t in cfg["il_steps"]},
    }
    names = list(runs)
    times: dict[str, list[float]] = {k: [] for k in names}
    for fn in runs.values():  # warm-up: first calls pay for lazy imports and allocator growth
        fn()
    for rep in range(cfg["reps"]):
        for key in names[rep % len(names):] + names[:rep % len(names)]:
            start = time.perf_counter()
            runs[key]()
            times[key].append((time.perf_counter() - start) * 1e3)
    rules = {k: {"median_ms": statistics.median(v),
                 "ratio_to_bp": statistics.median(t / b for t, b in zip(v, times["bp"], strict=True)),
                 "peak_mem_mb": None, "peak_mem_ratio": None, "runs": len(v)} for k, v in times.items()}
    model = "mlp " + "-".join(map(str, cfg["sizes"]))
    return {"machine": _machine(), "dtype": "float64", "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "method": f"in-process smoke benchmark: {cfg['reps']} repetitions interleaved across rules (order "
                      "rotated) after one warm-up; BP is torch autograd on the module; memory not measured",
            "models": [{"model": model, "batch": cfg["batch"], "depth": levelled.depth, "rules": rules}]}


def compute(config: dict) -> dict:
    if "measure" in config:
        return {"source": "measured in process (smoke)", "bench": _measure(config["measure"])}
    import json

    path = ROOT / config["source"]
    if not path.exists():
        raise InputError(f"{path} is missing: run `make bench` (the rules benchmark writes it) before this figure")
    bench = json.loads(path.read_text())
    if not bench.get("models"):
        raise InputError(f"{path} holds no 'models': expected the rules benchmark's JSON")
    return {"source": config["source"], "bench": bench}


def _machine_name(machine: dict) -> str:
    cpu = machine.get("cpu") or machine.get("processor") or machine.get("cpu_model") or machine.get("name") or ""
    extras = [f"{machine[k]} {label}" for k, label in (("cores", "cores"), ("threads", "torch thread(s)"))
              if machine.get(k)]
    return ", ".join([str(cpu)] * bool(cpu) + extras) or ", ".join(f"{k} {v}" for k, v in machine.items())


def _rule_keys(models: list[dict]) -> list[str]:
    present = {k for m in models for k in m["rules"] if k != "bp"}
    return [k for k in RULES if k in present] + sorted(present - set(RULES))


def _ratio(h: float) -> str:
    return "" if math.isnan(h) else (f"{h:.0f}" if h >= 10 else f"{h:.2g}")


def _finite(v) -> bool:
    """A number to draw: None (not measured), NaN and infinities are left out."""
    return isinstance(v, int | float) and math.isfinite(v)


def plot(data: dict) -> Figure:
    bench = data["bench"]
    models = bench["models"]
    keys = _rule_keys(models)
    memory = any(_finite(m["rules"].get(k, {}).get("peak_mem_ratio")) for m in models for k in keys)
    fig = Figure(figsize=(max(7.0, 1.1 * len(models) + 3.0), 7.2 if memory else 4.6), layout="constrained")
    axes = fig.subplots(2 if memory else 1, 1, sharex=True, squeeze=False)[:, 0]
    x = np.arange(len(models))
    width = 0.8 / max(len(keys), 1)
    panels = [("ratio_to_bp", "time per weight update / BP's")]
    if memory:
        panels.append(("peak_mem_ratio", "peak memory / BP's"))
    for ax, (field, ylabel) in zip(axes, panels, strict=True):
        for i, key in enumerate(keys):
            label, colour = RULES.get(key, (key, "#999999"))
            values = [m["rules"].get(key, {}).get(field) for m in models]
            heights = [v if _finite(v) else np.nan for v in values]
            bars = ax.bar(x + (i - (len(keys) - 1) / 2) * width, heights, width, color=colour, label=label)
            ax.bar_label(bars, labels=[_ratio(h) for h in heights], fontsize=6, rotation=90, padding=2)
        ax.axhline(1.0, color="black", linewidth=1.0, label="BP (1x)")
        ax.set_yscale("log")
        drawn = [v for m in models for k in keys if _finite(v := m["rules"].get(k, {}).get(field)) and v > 0]
        room = 8.0 if ax is axes[0] else 1.8  # above the tallest bar: its label, and the legend on top
        ax.set_ylim(min([0.5, *drawn]) * 0.7, max([1.0, *drawn]) * room)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", which="both", alpha=0.25)
    axes[0].legend(fontsize=7, ncol=4, loc="upper left", frameon=False)
    axes[-1].set_xticks(x, [f"{m['model']}\nbatch {m.get('batch', '?')}\ndepth {m.get('depth', '?')}"
                            for m in models], fontsize=8)
    fig.suptitle(f"IL, Z-IL and Fa-Z-IL cost per weight update relative to BP ({bench.get('dtype', '')}; "
                 f"{data['source']})\nmachine: {_machine_name(bench.get('machine', {}))}; "
                 f"{bench.get('created', '')}", fontsize=8)
    return fig


if __name__ == "__main__":
    raise SystemExit(script_main(__file__))
