"""Timing and peak-memory helpers of the benchmarks: interleaved repetitions and allocation curves."""

from __future__ import annotations

import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call; the result is dropped inside the timed region, as a training step would."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def interleaved(runs: Mapping[str, Callable[[], object]], counts: Mapping[str, int], device: torch.device,
                log: Callable[[str], None] = print) -> dict[str, list[tuple[int, float]]]:
    """Repetitions in which every rule still short of its count runs once, the order rotated each time.

    Returns rule -> [(repetition index, seconds)], so ratios can pair each time with the
    baseline's time of the same repetition (drift on a shared machine hits both alike).
    """
    names = list(runs)
    times: dict[str, list[tuple[int, float]]] = {n: [] for n in names}
    rep = 0
    while any(len(times[n]) < counts[n] for n in names):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for n in order:
            if len(times[n]) < counts[n]:
                gc.collect()
                times[n].append((rep, timed(runs[n], device)))
        log(f"    rep {rep}: " + ", ".join(f"{n} {1e3 * times[n][-1][1]:.1f}" for n in names
                                          if times[n] and times[n][-1][0] == rep) + " ms")
        rep += 1
    return times


def summary(times: Mapping[str, list[tuple[int, float]]], base: str = "bp") -> dict[str, dict[str, float]]:
    """Median time, and median over repetitions of the ratio to the baseline's time in that repetition.

    The ratio's quartiles over the repetitions (`ratio_q1`, `ratio_q3`) say how far a single run
    can move on a shared machine: a target missed inside that range is a miss within the noise.
    """
    ref = dict(times[base])
    out = {}
    for n, ts in times.items():
        ratios = [t / ref[r] for r, t in ts if r in ref]
        q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (float("nan"),) * 3
        out[n] = {"median_ms": 1e3 * statistics.median(t for _, t in ts),
                  "ratio_to_bp": statistics.median(ratios) if ratios else float("nan"),
                  "ratio_q1": q1, "ratio_q3": q3, "runs": len(ts)}
    return out


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory allocated during one call, above what was allocated before it, in MiB.

    CUDA: torch.cuda.max_memory_allocated after a reset. CPU: torch.profiler with
    profile_memory=True records every allocation and free with the running total; the peak of
    that cumulative curve (relative to the start of the call) is the figure.
    """
    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events
              if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0]
    return max([0, *totals]) / 2**20


def write_results(out: str | Path, result: dict, lines: list[str], echo: bool = True) -> None:
    """OUT.json (the numbers) and OUT.md (the table) side by side; the table is printed too (`echo`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    if echo:
        print("\n".join(lines))

