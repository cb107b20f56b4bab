"""The paper's Table 1 for pcsim's zoo: each model's Z-IL and Fa-Z-IL updates against autograd.

For every zoo model at the size its `build()` gives by default: the traced graph's latent
vertices, the identity vertices `level()` adds, and the maximum relative deviation from torch
autograd's gradients (`pcsim.check`, per parameter ||pc - bp|| / ||bp||, the largest) of
Z-IL, Fa-Z-IL (wavefront and autonomous) on the levelled graph, and of Z-IL on the graph as
traced (`level=False`), which is exact only when the graph is levelled already.
`zoo_table()` computes the rows; `markdown()` renders them. No printing here.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from pcsim.capture import trace
from pcsim.check import check
from pcsim.numerics import tolerance
from pcsim.zoo import load_model_file, zoo_names

# column -> (rule passed to check(), extra keyword arguments, whether exactness is expected)
COLUMNS: dict[str, tuple[str, dict, bool]] = {
    "Z-IL": ("zil", {}, True),
    "Fa-Z-IL wavefront": ("fa-zil-wavefront", {}, True),
    "Fa-Z-IL autonomous": ("fa-zil-autonomous", {}, True),
    "Z-IL unlevelled": ("zil", {"level": False}, False),
}


@dataclass(frozen=True)
class ZooRow:
    """One model's line of the table."""

    model: str
    params: int  # number of parameter entries
    input_shapes: tuple[tuple[int, ...], ...]
    vertices: int  # latent vertices of the graph as traced
    identity: int  # identity vertices level() adds
    depth: int  # levels of the levelled graph (Z-IL runs depth + 1 steps)
    deviation: dict[str, float] = field(default_factory=dict)  # column -> max relative deviation
    seconds: dict[str, float] = field(default_factory=dict)  # column -> seconds the rule ran
    total_seconds: float = 0.0  # everything for this model: build, trace, oracles, rules
    tolerance: float = 0.0

    @property
    def passed(self) -> bool:
        """Every rule that must be exact is within the tolerance."""
        return all(self.deviation[c] <= self.tolerance for c, (_, _, exact) in COLUMNS.items()
                   if exact and c in self.deviation)


def zoo_row(name: str, dtype: torch.dtype = torch.float64, columns: Sequence[str] | None = None,
            dims: dict | None = None, progress: Callable[[str], None] | None = None) -> ZooRow:
    """Build zoo model `name` (default size, or `dims`) and run every column's rule on it."""
    start = time.perf_counter()
    spec = load_model_file(name)
    module, inputs, target = spec.build_model(seed=0, **(dims or {}))
    module = module.to(dtype)
    inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
    graph = trace(module, *inputs)
    levelled = graph.level()
    deviation, seconds = {}, {}
    for column in columns or COLUMNS:
        rule, kwargs, _ = COLUMNS[column]
        report = check(module, inputs, target, rule=rule, loss=spec.loss, dtype=dtype, **kwargs)
        deviation[column], seconds[column] = report.max_rel_diff, report.seconds
        if progress:
            progress(f"{name}: {column} max relative deviation {report.max_rel_diff:.2e} ({report.seconds:.1f} s)")
    return ZooRow(model=name, params=sum(p.numel() for p in module.parameters()),
                  input_shapes=tuple(tuple(x.shape) for x in inputs), vertices=len(graph.latent),
                  identity=levelled.n_identity, depth=levelled.depth, deviation=deviation, seconds=seconds,
                  total_seconds=time.perf_counter() - start, tolerance=tolerance(dtype))


def zoo_table(models: Sequence[str] | None = None, dtype: torch.dtype = torch.float64,
              columns: Sequence[str] | None = None, dims: dict[str, dict] | None = None,
              progress: Callable[[str], None] | None = None) -> list[ZooRow]:
    """One row per model (default: every zoo model, in name order); `dims` maps a model to build() dims."""
    names = list(models) if models is not None else zoo_names()
    unknown = [c for c in columns or () if c not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; choose from {list(COLUMNS)}")
    return [zoo_row(n, dtype, columns, (dims or {}).get(n), progress) for n in names]


def fmt_deviation(x: float | None) -> str:
    return "" if x is None else (f"{x:.1e}" if math.isfinite(x) else str(x))


def _shape(shapes: tuple[tuple[int, ...], ...]) -> str:
    return ", ".join("×".join(map(str, s)) for s in shapes)


def markdown(rows: Sequence[ZooRow], dtype: torch.dtype = torch.float64, wall_seconds: float | None = None,
             command: str = "pcsim check --all") -> str:
    """The table as Markdown, with a header saying how and where it was made."""
    columns = [c for c in COLUMNS if any(c in r.deviation for r in rows)]
    dt = str(dtype).replace("torch.", "")
    lines = [
        "# Table 1: Z-IL and Fa-Z-IL against backprop on the model zoo",
        "",
        f"Generated by `{command}` ({dt}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{platform.machine()} with {_cpus()} CPU(s)). Deviation: the largest over parameters of "
        "||update - autograd|| / ||autograd||; tolerance "
        f"{tolerance(dtype):.0e}. *Vertices*: latent vertices as traced; *identity*: vertices `level()` adds; "
        "*depth*: Z-IL steps - 1. *Z-IL unlevelled* runs on the graph as traced and is exact only where "
        "no identity vertex is needed. Seconds: the rule alone (Z-IL / wavefront / autonomous / unlevelled), "
        "then everything for the model (build, trace, autograd oracles, rules).",
        "",
        "| model | parameters | input | vertices | identity | depth | "
        + " | ".join(columns) + " | seconds | total s |",
        "|---|---:|---|---:|---:|---:|" + "---:|" * len(columns) + "---|---:|",
    ]
    for r in rows:
        devs = [fmt_deviation(r.deviation.get(c)) for c in columns]
        secs = " / ".join(f"{r.seconds[c]:.1f}" for c in columns if c in r.seconds)
        lines.append(f"| {r.model} | {r.params:,} | {_shape(r.input_shapes)} | {r.vertices} | {r.identity} | "
                     f"{r.depth} | " + " | ".join(devs) + f" | {secs} | {r.total_seconds:.1f} |")
    lines.append("")
    failed = [r.model for r in rows if not r.passed]
    verdict = ("Every levelled rule is within the tolerance on every model." if not failed
               else f"Outside the tolerance: {', '.join(failed)}.")
    lines.append(verdict + (f" Wall time for the whole table: {wall_seconds:.0f} s." if wall_seconds else ""))
    return "\n".join(lines) + "\n"


def _cpus() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
