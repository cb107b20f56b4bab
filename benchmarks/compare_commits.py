"""Fa-Z-IL wavefront against BP, old commit against the working tree: time ratio and peak-memory ratio.

    .venv/bin/python benchmarks/compare_commits.py [--old 976b27a] [--models mlp resnet18 transformer lstm gru]
        [--rounds 3] [--reps 5] [--threads 1] [--batch 32 | --batch resnet18=32 ...]
        [--out benchmarks/results/capture_before_after]

What it measures: for every model, the ratio of pcsim.fa_zil(mode="wavefront")'s time per weight
update to BP's (autograd on the nn.Module), and the ratio of their peak memories, both exactly as
benchmarks/bench_rules.py measures them (`--rules bp fa-zil-wavefront`): each ratio is taken within
one process (median over repetitions of the per-repetition ratio), so load on a shared machine
that hits both rules alike cancels. OLD is the commit given by --old, checked out as a detached
git worktree under build/compare-<sha> (reused when present) and run with its own
benchmarks/bench_rules.py and PYTHONPATH=<worktree>; NEW is this working tree, uncommitted changes
included, run the same way with PYTHONPATH=<this tree>. Same Python, machine and environment.
Each round runs every model once per side, one bench_rules.py process per (side, model), and
which side goes first alternates from round to round (and from model to model). Which pcsim each
side imports is checked once per side before the rounds (its __file__ must lie in that side's
tree). Writes OUT.json (every run's raw figures) and OUT.md (medians over rounds, min-max).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("mlp", "resnet18", "transformer", "lstm", "gru")
RULE = "fa-zil-wavefront"
TIME_FLAG, MEM_FLAG = 1.05, 1.2  # new/old time ratio; peak-memory ratio to BP (the Done-when target)

PROBE = """\
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("bench_rules", sys.argv[1])
m = sys.modules["bench_rules"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)  # bench_rules' own sys.path set-up and imports, main() not run
print(json.dumps({"pcsim": m.pcsim.__file__, "trace": m.pcsim.trace.__module__,
                  "torch": m.torch.__version__}))
"""


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def worktree(old: str) -> tuple[Path, str]:
    """The detached worktree of `old` under build/compare-<sha>, made if absent."""
    sha = git("rev-parse", "--verify", f"{old}^{{commit}}")
    path = ROOT / "build" / f"compare-{sha[:7]}"
    if path.exists():
        head = git("rev-parse", "HEAD", cwd=path)
        if head != sha:
            sys.exit(f"{path} exists at {head[:7]}, not {sha[:7]}: remove it (git worktree remove {path})")
        print(f"reusing worktree {path}", flush=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        git("worktree", "add", "--detach", str(path), sha)
        print(f"made worktree {path}", flush=True)
    return path, sha


def env_for(root: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


def probe(root: Path, tmp: Path) -> dict:
    """Which pcsim bench_rules.py of `root` imports, from a script outside both trees as bench_rules is run."""
    script = tmp / "probe_pcsim.py"
    script.write_text(PROBE)
    proc = subprocess.run([sys.executable, str(script), str(root / "benchmarks" / "bench_rules.py")], cwd=root,
                          env=env_for(root), capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"importing {root}/benchmarks/bench_rules.py failed:\n{proc.stderr}")
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    if not Path(found["pcsim"]).resolve().is_relative_to(root.resolve()):
        sys.exit(f"bench_rules.py in {root} imports pcsim from {found['pcsim']}, not from its own tree")
    return found


def parse_batch(items: list[str] | None) -> dict[str, int]:
    """--batch 32 (every model) or --batch resnet18=32 transformer=16; '*' holds the every-model value."""
    out = {}
    for it in items or []:
        name, _, val = it.rpartition("=")
        out[name or "*"] = int(val)
    return out


def run_one(side: str, root: Path, model: str, args, batch: int | None, tmp: Path, tag: str) -> dict:
    stem = tmp / f"{tag}-{side}-{model}"
    cmd = [sys.executable, str(root / "benchmarks" / "bench_rules.py"), "--rules", "bp", args.rule, "--models", model,
           "--reps", str(args.reps), "--threads", str(args.threads), "--out", str(stem)]
    if batch:
        cmd += ["--batch", str(batch)]
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, cwd=root, env=env_for(root), capture_output=True, text=True)
    wall = time.monotonic() - t0
    stem.with_suffix(".log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    rec = {"side": side, "model": model, "tag": tag, "wall_s": round(wall, 1), "loadavg_1m_at_start": load,
           "returncode": proc.returncode}
    try:
        res = json.loads(stem.with_suffix(".json").read_text())
        mod = res["models"][0]
    except (OSError, ValueError, IndexError, KeyError):
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("USDT:")]
        rec["error"] = next((ln for ln in reversed(lines) if not ln.startswith(" ")), "no output") if lines else (
            f"exit {proc.returncode}, no output")
        rec["stderr_tail"] = "\n".join(lines[-25:])
        return rec
    bp, fa = mod["rules"]["bp"], mod["rules"][args.rule]
    rec.update({"batch": mod["batch"], "depth": mod["depth"], "dims": mod["dims"], "machine": res["machine"],
                "time_ratio": fa["ratio_to_bp"], "time_ratio_q1": fa["ratio_q1"], "time_ratio_q3": fa["ratio_q3"],
                "mem_ratio": fa["peak_mem_ratio"], "bp_ms": bp["median_ms"], "fa_ms": fa["median_ms"],
                "bp_mib": bp["peak_mem_mb"], "fa_mib": fa["peak_mem_mb"], "runs": fa["runs"]})
    return rec


def spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)} if xs else {}


def aggregate(runs: list[dict], models: list[str]) -> dict:
    out = {}
    for m in models:
        ok = {s: [r for r in runs if r["model"] == m and r["side"] == s and "error" not in r] for s in ("old", "new")}
        errs = {s: [r["error"] for r in runs if r["model"] == m and r["side"] == s and "error" in r]
                for s in ("old", "new")}
        row = {s: {k: spread([r[k] for r in ok[s]]) for k in ("time_ratio", "mem_ratio", "bp_ms", "fa_ms", "bp_mib",
                                                              "fa_mib")} for s in ("old", "new")}
        row["errors"] = {s: e for s, e in errs.items() if e}
        row["batch"] = next((r["batch"] for r in runs if r["model"] == m and "batch" in r), None)
        row["depth"] = {s: ok[s][0]["depth"] for s in ok if ok[s]}
        if ok["old"] and ok["new"]:
            row["new_over_old_time"] = row["new"]["time_ratio"]["median"] / row["old"]["time_ratio"]["median"]
            row["new_over_old_mem"] = row["new"]["mem_ratio"]["median"] / row["old"]["mem_ratio"]["median"]
            paired = {}  # the same round's old and new run (run one after the other)
            for r in ok["new"]:
                o = next((x for x in ok["old"] if x["tag"] == r["tag"]), None)
                if o:
                    paired[r["tag"]] = r["time_ratio"] / o["time_ratio"]
            row["new_over_old_time_paired"] = spread(list(paired.values()))
        out[m] = row
    return out


def _r(s: dict, fmt: str = "{:.2f}") -> str:
    if not s:
        return "-"
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})" if s["n"] > 1 else (
        fmt.format(s["median"]))


def markdown(result: dict) -> str:
    h, m = result["header"], result["header"].get("machine") or {}
    lines = [
        f"# Before/after: {h.get('rule', RULE)} vs BP, old commit against new code", "",
        f"- Date: {h['date']} (finished {h.get('finished', 'not yet')}); total runtime "
        f"{h.get('runtime_s', float('nan')) / 60:.1f} min",
        f"- Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('platform', '?')}; Python "
        f"{h['python']}; torch {h['torch']} (both sides, same interpreter and environment)",
        f"- OLD: {h['old']['sha'][:7]} ({h['old']['subject']}), worktree {h['old']['worktree']}, pcsim from "
        f"{h['old']['pcsim']}, pcsim.trace from `{h['old']['trace']}`",
        f"- NEW: {h['new']['sha'][:7]}{' + uncommitted changes' if h['new']['dirty'] else ''} "
        f"(working tree {h['new']['tree']}), pcsim from {h['new']['pcsim']}, pcsim.trace from `{h['new']['trace']}`",
        f"- {h['rounds']} rounds x {len(h['models'])} models x 2 sides; bench_rules.py --rules bp "
        f"{h.get('rule', RULE)} --reps {h['reps']} --threads {h['threads']}; batch: {h['batch_note']}",
        f"- Load average (1 min) at start {h['loadavg_start']:.2f}, at end "
        f"{h.get('loadavg_end', float('nan')):.2f}; other processes shared the machine",
        "",
        f"Each ratio (time: median over repetitions of the per-repetition ratio of {h.get('rule', RULE)}'s time "
        "to BP's; memory: peak memory of one call each, torch.profiler allocation curve) is taken within one "
        "bench_rules.py process, so machine load affecting both rules alike cancels. Cells: median over rounds "
        "(min-max). new/old: ratio of the two medians; paired: median over rounds of new/old of the same "
        f"round. Flags: new/old time > {TIME_FLAG}, new memory ratio > {MEM_FLAG}, or new/old memory > {MEM_FLAG}.",
        "",
        "| model | batch | OLD time ratio | NEW time ratio | new/old | paired new/old | OLD mem ratio | "
        "NEW mem ratio | flags |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, row in result["summary"].items():
        flags = []
        if row.get("new_over_old_time", 0) > TIME_FLAG:
            flags.append(f"time new/old > {TIME_FLAG}")
        if row["new"]["mem_ratio"] and row["new"]["mem_ratio"]["median"] > MEM_FLAG:
            flags.append(f"new mem ratio > {MEM_FLAG}")
        if row.get("new_over_old_mem", 0) > MEM_FLAG:
            flags.append(f"mem new/old > {MEM_FLAG}")
        for s, e in row["errors"].items():
            flags.append(f"{s.upper()} failed ({len(e)}x): {e[0]}")
        no = f"{row['new_over_old_time']:.3f}" if "new_over_old_time" in row else "-"
        lines.append(f"| {name} | {row['batch'] or '-'} | {_r(row['old']['time_ratio'])} | "
                     f"{_r(row['new']['time_ratio'])} | {no} | {_r(row.get('new_over_old_time_paired', {}), '{:.3f}')} "
                     f"| {_r(row['old']['mem_ratio'])} | {_r(row['new']['mem_ratio'])} | "
                     f"{'; '.join(flags) or 'ok'} |")
    lines += ["", "Absolute figures (medians over rounds; load-dependent, for context only):", "",
              "| model | OLD BP ms | OLD Fa-Z-IL ms | NEW BP ms | NEW Fa-Z-IL ms | OLD BP / Fa-Z-IL MiB | "
              "NEW BP / Fa-Z-IL MiB | depth old/new |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, row in result["summary"].items():
        o, n = row["old"], row["new"]

        def med(s, f="{:.1f}"):
            return f.format(s["median"]) if s else "-"

        lines.append(f"| {name} | {med(o['bp_ms'])} | {med(o['fa_ms'])} | {med(n['bp_ms'])} | {med(n['fa_ms'])} | "
                     f"{med(o['bp_mib'])} / {med(o['fa_mib'])} | {med(n['bp_mib'])} / {med(n['fa_mib'])} | "
                     f"{row['depth'].get('old', '-')}/{row['depth'].get('new', '-')} |")
    errors = [r for r in result["runs"] if "error" in r]
    if errors:
        lines += ["", "Failed runs:"]
        lines += [f"- round {r['tag']}, {r['side'].upper()}, {r['model']}: `{r['error']}`" for r in errors]
    return "\n".join(lines) + "\n"


def write(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="976b27a", help="commit to compare against (default 976b27a)")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--rule", default=RULE, help=f"the rule timed against BP on both sides (default {RULE})")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5, help="bench_rules.py --reps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", nargs="*", default=None,
                    help="bench_rules.py --batch: N for every model, or MODEL=N per model (the same on both sides)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "capture_before_after"))
    ap.add_argument("--keep-tmp", action="store_true", help="keep the per-run JSON/logs (path printed)")
    args = ap.parse_args(argv)
    started = time.monotonic()
    out = Path(args.out)
    batches = parse_batch(args.batch)
    old_root, old_sha = worktree(args.old)
    tmp = Path(tempfile.mkdtemp(prefix="compare_commits-"))
    sides = {"old": old_root, "new": ROOT}
    probes = {s: probe(r, tmp) for s, r in sides.items()}
    for s, p in probes.items():
        print(f"{s.upper()}: pcsim from {p['pcsim']} (pcsim.trace in {p['trace']}), torch {p['torch']}", flush=True)
    batch_note = ", ".join(f"{k}={v}" for k, v in batches.items() if k != "*")
    batch_note = (f"{batches['*']} for every model" + (f"; {batch_note}" if batch_note else "")) if "*" in batches \
        else (f"bench_rules' DIMS defaults except {batch_note}" if batch_note else "bench_rules' DIMS defaults")
    header = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(), "python": platform.python_version(), "torch": probes["new"]["torch"],
        "old": {"sha": old_sha, "subject": git("log", "-1", "--format=%s", old_sha)[:80] + "...",
                "worktree": str(old_root), **probes["old"]},
        "new": {"sha": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
                "tree": str(ROOT), **probes["new"]},
        "models": args.models, "rule": args.rule, "rounds": args.rounds, "reps": args.reps, "threads": args.threads,
        "batch": batches, "batch_note": batch_note, "loadavg_start": os.getloadavg()[0], "tmpdir": str(tmp)}
    result = {"header": header, "runs": [], "summary": {}}
    failed: set[tuple[str, str]] = set()  # (side, model): a failure is not retried in later rounds
    for rnd in range(args.rounds):
        for i, model in enumerate(args.models):
            order = ("old", "new") if (rnd + i) % 2 == 0 else ("new", "old")
            for side in order:
                if (side, model) in failed:
                    continue
                rec = run_one(side, sides[side], model, args, batches.get(model, batches.get("*")), tmp, str(rnd))
                rec["order"] = list(order)
                result["runs"].append(rec)
                machine = rec.pop("machine", None)  # once, in the header
                if machine and not header.get("machine"):
                    header["machine"] = machine
                if "error" in rec:
                    failed.add((side, model))
                    print(f"round {rnd} {side} {model}: FAILED ({rec['wall_s']} s): {rec['error']}", flush=True)
                else:
                    print(f"round {rnd} {side} {model}: time ratio {rec['time_ratio']:.3f}, mem ratio "
                          f"{rec['mem_ratio']:.2f} ({rec['wall_s']} s, load {rec['loadavg_1m_at_start']:.1f})",
                          flush=True)
            result["summary"] = aggregate(result["runs"], args.models)
            header["runtime_s"] = time.monotonic() - started
            write(out, result)  # after every model: a stopped run keeps what it finished
    if not args.keep_tmp and not failed:  # per-run JSON and logs are kept where a run failed
        for f in sorted(tmp.iterdir()):
            f.unlink()
        tmp.rmdir()
        header["tmpdir"] = None
    header.update(finished=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                  runtime_s=time.monotonic() - started, loadavg_end=os.getloadavg()[0])
    write(out, result)
    print(markdown(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
