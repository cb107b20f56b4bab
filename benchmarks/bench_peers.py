"""pcsim against its peers JPC (continuous time) and PCX (IL), timed interleaved in one process each (issue 21).

    make peers                       # builds build/peers-jpc and build/peers-pcx, then runs this with --reps 10
    .venv/bin/python benchmarks/bench_peers.py [--reps 10] [--out benchmarks/results/peers]
        [--jpc-python build/peers-jpc/bin/python] [--pcx-python build/peers-pcx/bin/python]
    build/peers-jpc/bin/python benchmarks/bench_peers.py --part jpc --reps 10 --out /tmp/jpc.json   # one part alone

JPC (jax 0.5, diffrax 0.7) and PCX 0.6.3 (which pins jax < 0.5) cannot share one environment, so each
part runs in its own venv, pcsim installed beside the peer, and pcsim and the peer are interleaved in that
one process (`pcsim.bench.measure.interleaved`: the order rotated each repetition); every ratio is taken
between two times of the same repetition, and the table gives its median and quartiles over repetitions.
One thread everywhere: `torch.set_num_threads(1)`, XLA_FLAGS and numpy's BLAS (set below, before any import).
Every jax function is jitted and run once before timing; each timed call ends in `block_until_ready`.

Part jpc: the MLP 784-300-300-10 (tanh), batch 64, float32.
- pcsim: `pcsim.il(steps=200, gamma=0.1)`; `simulate` with torch Euler at dt = 0.1, tau_x = 1, t_end = 20
  (default recording, and end only; and `Euler(dt, compile=True)`, default recording); `simulate` with scipy RK45, and with torch Tsit5 and Dopri5 where this
  pcsim has them (`pcsim.Tsit5`, `pcsim.Dopri5`; eager, and `compile=True`: the step fused with the field and
  compiled, whose compile time is in the first call, left out of the timings as JAX's jit is), at
  rtol = atol = 1e-3.
- JPC: `jpc.solve_inference` (diffrax) from `jpc.init_activities_with_ffwd`, on a model with one activity
  per op (Linear, tanh, Linear, tanh, Linear: the populations of pcsim's traced graph). JPC's energy is
  divided by the batch size N, so its activities move N times slower: JPC's time runs to N * 20 with Euler
  steps of N * 0.1, which gives the same iterates. Euler (constant steps), Tsit5 and Dopri5 (PID controller,
  rtol = atol = 1e-3).
- Checks in float64 before timing: JPC's vector field (`jpc.neg_pc_activity_grad`) times N against pcsim's
  (`pcsim.dynamics.VectorField`) at the feed-forward state and at a random state, and the end states of
  the two Euler solves.

Part pcx: the MLP 784-1000-1000-10 (tanh, `models/mlp.py`), batch 256, float32, MSE to one-hot targets.
- pcsim: `pcsim.il(steps=T)` at its defaults (gamma 0.1): T inference steps, then the weight gradients.
- PCX 0.6.3, as in its examples (`train_on_batch`: forward init, T steps of optax SGD on the vodes, the
  energy summed over the batch; then the weight gradient and an optax SGD weight step), jitted:
  with one vode per op (the same energy and iterates as pcsim.il; checked in float64 against
  pcsim.il's gradients) and one vode per layer (PCX's own MLP); and the per-op one returning the weight
  gradients without the weight step (what pcsim.il computes).
Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import os

_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _XLA).strip()  # before jax is imported
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # numpy's BLAS (scipy's solver) too
    os.environ[_v] = "1"
# XLA keeps a thread pool its flags do not reach: on an idle machine JAX used 1.4-1.9 cores. One core for the
# whole process (and the peers' processes, which inherit it) makes "one thread" hold for every library.
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# --pcsim-src DIR: import pcsim from DIR (say a `git archive` of a commit) rather than this checkout
_SRC = Path(sys.argv[sys.argv.index("--pcsim-src") + 1]).resolve() if "--pcsim-src" in sys.argv[:-1] else ROOT
sys.path.insert(0, str(_SRC))
sys.path.insert(0, str(_SRC / "models"))

T_END, DT, TAU, STEPS, GAMMA, TOL = 20.0, 0.1, 1.0, 200, 0.1, 1e-3
JPC_BATCH, PCX_BATCH, PCX_T = 64, 256, (5, 20)


# -- timing helpers ----------------------------------------------------------------------------------------
def _timed_runs(fns: dict, reps: int) -> dict:
    """Interleaved repetitions (order rotated); also each run's CPU time over wall time (1.0: one thread)."""
    import torch

    from pcsim.bench.measure import interleaved

    cpu: dict[str, list[float]] = {n: [] for n in fns}

    def with_cpu(name, fn):
        def run():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            cpu[name].append((time.process_time() - c0) / (time.perf_counter() - t0))
        return run

    times = interleaved({n: with_cpu(n, f) for n, f in fns.items()}, dict.fromkeys(fns, reps), torch.device("cpu"))
    return {"times": {n: [[r, t] for r, t in ts] for n, ts in times.items()},
            "cpu_over_wall": {n: statistics.median(c) for n, c in cpu.items()},
            "load_average": os.getloadavg()}


def _blocked(fn, *args, **kwargs):
    """Call a jax function and wait for its results (jax dispatches asynchronously)."""
    import jax

    return jax.block_until_ready(fn(*args, **kwargs))


def _ratio(times: dict, a: str, b: str) -> dict:
    ref = dict((r, t) for r, t in times[b])
    rs = [t / ref[r] for r, t in times[a] if r in ref]
    q1, _, q3 = statistics.quantiles(rs, n=4) if len(rs) > 1 else (float("nan"),) * 3
    return {"median": statistics.median(rs), "q1": q1, "q3": q3, "reps": len(rs)}


def _versions(names) -> dict:
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def _maxdiff(a, b) -> tuple[float, float]:
    """Largest absolute difference, and it over the largest magnitude of b."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return d, (d / scale if scale else d)


# -- part jpc: continuous time on the MLP 784-300-300-10 ----------------------------------------------------
def _small_mlp(dtype):
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(784, 300), nn.Tanh(), nn.Linear(300, 300), nn.Tanh(), nn.Linear(300, 10))
    x, y = torch.randn(JPC_BATCH, 784, generator=gen), torch.randn(JPC_BATCH, 10, generator=gen)
    return net.to(dtype), x.to(dtype), y.to(dtype)


def _jpc_model(net, jnp_dtype):
    """One JPC 'layer' per op of the torch Sequential: each Linear and each tanh its own activity."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from torch import nn

    layers = []
    for m in net:
        if isinstance(m, nn.Linear):
            lin = eqx.nn.Linear(m.in_features, m.out_features, key=jax.random.PRNGKey(0))
            w = jnp.asarray(m.weight.detach().numpy(), dtype=jnp_dtype)
            b = jnp.asarray(m.bias.detach().numpy(), dtype=jnp_dtype)
            layers.append(eqx.tree_at(lambda lin: (lin.weight, lin.bias), lin, (w, b)))
        elif isinstance(m, nn.Tanh):
            layers.append(eqx.nn.Lambda(jnp.tanh))
        else:
            raise TypeError(f"unexpected layer {m}")
    return layers


def _jpc_solver(model, x, y, solver, controller, dt):
    """A jitted JPC solve (feed-forward init + solve_inference) on the N-times-longer time axis."""
    import equinox as eqx
    import jpc

    n = x.shape[0]

    @eqx.filter_jit
    def run(model, x, y):
        acts = jpc.init_activities_with_ffwd(model, x)
        return jpc.solve_inference((model, None), acts, y, input=x, solver=solver, max_t1=n * T_END,
                                   dt=None if dt is None else n * dt, stepsize_controller=controller)
    return lambda: run(model, x, y)


def _jpc_steps(model, x, y, solver, controller, dt) -> int:
    """The number of steps of the same diffeqsolve call as jpc.solve_inference (its stats are not returned)."""
    import diffrax
    import jpc
    from jpc._core._infer import steady_state_event_with_timeout

    n = x.shape[0]
    acts = jpc.init_activities_with_ffwd(model, x)
    sol = diffrax.diffeqsolve(diffrax.ODETerm(jpc.neg_pc_activity_grad), solver, t0=0, t1=n * T_END,
                              dt0=None if dt is None else n * dt, y0=acts,
                              args=((model, None), y, x, "mse", "sp", 0.0, 0.0, 0.0, None, None, controller),
                              stepsize_controller=controller, event=diffrax.Event(steady_state_event_with_timeout),
                              saveat=diffrax.SaveAt(t1=True))
    return int(sol.stats["num_steps"])


def _jpc_checks() -> dict:
    """float64: JPC's field x N against pcsim's, and the Euler end states."""
    import jax
    import jax.numpy as jnp
    import jpc
    import numpy as np
    import torch

    import pcsim
    from pcsim.algorithms.problem import Problem
    from pcsim.dynamics.field import VectorField

    jax.config.update("jax_enable_x64", True)
    try:
        net, x, y = _small_mlp(torch.float64)
        n = x.shape[0]
        graph = pcsim.trace(net, x)
        field = VectorField(Problem.build(graph, (x,), y, "mse"), tau_x=TAU)
        latent = list(graph.latent)
        model = _jpc_model(net, jnp.float64)
        xj, yj = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
        ffwd = jpc.init_activities_with_ffwd(model, xj)
        args = ((model, None), yj, xj, "mse", "sp", 0.0, 0.0, 0.0, None, None, None)
        out = {"populations": latent, "batch": n,
               "ffwd_state": max(_maxdiff(a, field.base[v].numpy())[0] for a, v in zip(ffwd, latent, strict=True))}
        gen = torch.Generator().manual_seed(1)
        for name, scale in (("feedforward", 0.0), ("random", 0.3)):
            u = {v: scale * torch.randn(field.base[v].shape, generator=gen, dtype=torch.float64) for v in latent}
            mine = field(0.0, {("u", v): u[v] for v in latent})
            acts = [a + jnp.asarray(u[v].numpy()) for a, v in zip(ffwd, latent, strict=True)]
            theirs = jpc.neg_pc_activity_grad(0.0, acts, args)
            diffs = [_maxdiff(n * np.asarray(t), mine["u", v].numpy()) for t, v in zip(theirs, latent, strict=True)]
            out[f"field_{name}"] = {"max_abs": max(d[0] for d in diffs), "max_rel": max(d[1] for d in diffs),
                                    "max_abs_field": max(float(mine["u", v].abs().max()) for v in latent)}
        # the Euler solves: 200 steps of dt = 0.1 against JPC's 200 steps of N * 0.1 on [0, N * 20]
        import diffrax

        traj = pcsim.simulate(graph, (x,), y, solver=pcsim.Euler(DT), t_end=T_END, tau_x=TAU,
                              record={"times": [T_END]})
        ys = _jpc_solver(model, xj, yj, diffrax.Euler(), diffrax.ConstantStepSize(), DT)()
        hidden = latent[:-1]  # the output is clamped to the target in both (JPC's last activity is unused)
        d = [_maxdiff(np.asarray(a)[-1], traj.values[v][-1]) for a, v in zip(ys, hidden, strict=False)]
        out["euler_end_state"] = {"max_abs": max(e[0] for e in d), "max_rel": max(e[1] for e in d),
                                  "jpc_steps": _jpc_steps(model, xj, yj, diffrax.Euler(),
                                                          diffrax.ConstantStepSize(), DT)}
        tsit = _jpc_solver(model, xj, yj, diffrax.Tsit5(), diffrax.PIDController(rtol=TOL, atol=TOL), None)()
        rk45 = pcsim.simulate(graph, (x,), y, solver=pcsim.Scipy("RK45", rtol=TOL, atol=TOL), t_end=T_END,
                              tau_x=TAU, record={"times": [T_END]})
        d = [_maxdiff(np.asarray(a)[-1], traj.values[v][-1]) for a, v in zip(tsit, hidden, strict=False)]
        d2 = [_maxdiff(rk45.values[v][-1], traj.values[v][-1]) for v in hidden]
        out["adaptive_end_state_vs_euler"] = {"jpc_tsit5": max(e[0] for e in d), "pcsim_rk45": max(e[0] for e in d2)}
        if hasattr(pcsim, "Tsit5"):
            ts = pcsim.simulate(graph, (x,), y, solver=pcsim.Tsit5(rtol=TOL, atol=TOL), t_end=T_END, tau_x=TAU,
                                record={"times": [T_END]})
            out["adaptive_end_state_vs_euler"]["pcsim_tsit5"] = max(
                _maxdiff(ts.values[v][-1], traj.values[v][-1])[0] for v in hidden)
        if "compile" in getattr(getattr(pcsim, "Tsit5", None), "__dataclass_fields__", {}):
            ts = pcsim.simulate(graph, (x,), y, solver=pcsim.Tsit5(rtol=TOL, atol=TOL, compile=True), t_end=T_END,
                                tau_x=TAU, record={"times": [T_END]})
            out["adaptive_end_state_vs_euler"]["pcsim_tsit5_compiled"] = max(
                _maxdiff(ts.values[v][-1], traj.values[v][-1])[0] for v in hidden)
        return out
    finally:
        jax.config.update("jax_enable_x64", False)


def _count_field_calls(fn) -> int:
    """How many times one run evaluates pcsim's vector field (VectorField.__call__ wrapped for that run only)."""
    from pcsim.dynamics.field import VectorField

    calls, orig = [0], VectorField.__call__

    def counting(self, *args, **kwargs):
        calls[0] += 1
        return orig(self, *args, **kwargs)
    VectorField.__call__ = counting
    try:
        fn()
    finally:
        VectorField.__call__ = orig
    return calls[0]


def part_jpc(reps: int, baseline: str | None = None) -> dict:
    import diffrax
    import jax.numpy as jnp
    import torch

    import pcsim

    torch.set_num_threads(1)
    checks = _jpc_checks()
    print("float64 checks:", json.dumps(checks), flush=True)
    net, x, y = _small_mlp(torch.float32)
    graph = pcsim.trace(net, x)
    model = _jpc_model(net, jnp.float32)
    xj, yj = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
    pid = diffrax.PIDController(rtol=TOL, atol=TOL)
    solvers = {"JPC Euler": (diffrax.Euler(), diffrax.ConstantStepSize(), DT),
               "JPC Tsit5 1e-3": (diffrax.Tsit5(), pid, None), "JPC Dopri5 1e-3": (diffrax.Dopri5(), pid, None)}
    fns = {"pcsim.il": lambda: pcsim.il(graph, (x,), y, steps=STEPS, gamma=GAMMA),
           "pcsim Euler": lambda: pcsim.simulate(graph, (x,), y, solver=pcsim.Euler(DT), t_end=T_END, tau_x=TAU),
           "pcsim Euler, end only": lambda: pcsim.simulate(graph, (x,), y, solver=pcsim.Euler(DT), t_end=T_END,
                                                           tau_x=TAU, record={"times": [T_END]}),
           "pcsim Euler compiled": lambda: pcsim.simulate(graph, (x,), y, solver=pcsim.Euler(DT, compile=True),
                                                          t_end=T_END, tau_x=TAU),
           "pcsim scipy RK45 1e-3": lambda: pcsim.simulate(graph, (x,), y, t_end=T_END, tau_x=TAU,
                                                           solver=pcsim.Scipy("RK45", rtol=TOL, atol=TOL),
                                                           record={"times": [T_END]})}
    for name in ("Tsit5", "Dopri5"):  # pcsim's adaptive solvers on torch, where this pcsim has them
        if hasattr(pcsim, name):
            fns[f"pcsim {name} 1e-3"] = partial(pcsim.simulate, graph, (x,), y, t_end=T_END, tau_x=TAU,
                                                solver=getattr(pcsim, name)(rtol=TOL, atol=TOL),
                                                record={"times": [T_END]})
        if "compile" in getattr(getattr(pcsim, name, None), "__dataclass_fields__", {}):  # the fused, compiled step
            fns[f"pcsim {name} 1e-3 compiled"] = partial(pcsim.simulate, graph, (x,), y, t_end=T_END, tau_x=TAU,
                                                         solver=getattr(pcsim, name)(rtol=TOL, atol=TOL, compile=True),
                                                         record={"times": [T_END]})
    if baseline:  # the adaptive solves of another pcsim (say the commit before a change), in the same repetitions
        from baseline import import_pcsim_from  # benchmarks/baseline.py, beside this script

        other = import_pcsim_from(baseline, ("pcsim.backends.torch_adaptive",))
        other_graph = other.trace(net, x)
        for name in ("Tsit5", "Dopri5"):
            fns[f"baseline pcsim {name} 1e-3"] = partial(other.simulate, other_graph, (x,), y, t_end=T_END, tau_x=TAU,
                                                         solver=getattr(other, name)(rtol=TOL, atol=TOL),
                                                         record={"times": [T_END]})
    steps = {}
    for name, (solver, ctrl, dt) in solvers.items():
        run = _jpc_solver(model, xj, yj, solver, ctrl, dt)
        fns[name] = partial(_blocked, run)
        steps[name] = _jpc_steps(model, xj, yj, solver, ctrl, dt)
    steps["pcsim scipy RK45 1e-3 (field evaluations)"] = _count_field_calls(
        lambda: pcsim.simulate(graph, (x,), y, solver=pcsim.Scipy("RK45", rtol=TOL, atol=TOL), t_end=T_END,
                               tau_x=TAU, record={"times": [T_END]}))
    first_call_s = {}
    for name, f in fns.items():  # warm-up; jit and inductor compile here (the first call's time is kept)
        start = time.perf_counter()
        f()
        first_call_s[name] = time.perf_counter() - start
        f()
    res = _timed_runs(fns, reps)
    t = res["times"]
    ratios = {"pcsim Euler / pcsim.il": _ratio(t, "pcsim Euler", "pcsim.il"),
              "pcsim Euler / JPC Euler": _ratio(t, "pcsim Euler", "JPC Euler"),
              "pcsim Euler, end only / JPC Euler": _ratio(t, "pcsim Euler, end only", "JPC Euler"),
              "pcsim Euler, end only / pcsim.il": _ratio(t, "pcsim Euler, end only", "pcsim.il"),
              "pcsim.il / JPC Euler": _ratio(t, "pcsim.il", "JPC Euler"),
              "pcsim Euler compiled / JPC Euler": _ratio(t, "pcsim Euler compiled", "JPC Euler"),
              "pcsim Euler compiled / pcsim.il": _ratio(t, "pcsim Euler compiled", "pcsim.il"),
              "pcsim scipy RK45 1e-3 / JPC Tsit5 1e-3": _ratio(t, "pcsim scipy RK45 1e-3", "JPC Tsit5 1e-3"),
              "pcsim scipy RK45 1e-3 / JPC Dopri5 1e-3": _ratio(t, "pcsim scipy RK45 1e-3", "JPC Dopri5 1e-3"),
              "pcsim scipy RK45 1e-3 / pcsim Euler": _ratio(t, "pcsim scipy RK45 1e-3", "pcsim Euler")}
    for name in ("Tsit5", "Dopri5"):
        if f"pcsim {name} 1e-3" in t:
            ratios[f"pcsim {name} 1e-3 / JPC {name} 1e-3"] = _ratio(t, f"pcsim {name} 1e-3", f"JPC {name} 1e-3")
            ratios[f"pcsim {name} 1e-3 / pcsim.il"] = _ratio(t, f"pcsim {name} 1e-3", "pcsim.il")
            steps[f"pcsim {name} 1e-3 (field evaluations)"] = _count_field_calls(fns[f"pcsim {name} 1e-3"])
        if f"pcsim {name} 1e-3 compiled" in t:
            ratios[f"pcsim {name} 1e-3 compiled / JPC {name} 1e-3"] = _ratio(t, f"pcsim {name} 1e-3 compiled",
                                                                           f"JPC {name} 1e-3")
            ratios[f"pcsim {name} 1e-3 compiled / pcsim {name} 1e-3"] = _ratio(t, f"pcsim {name} 1e-3 compiled",
                                                                             f"pcsim {name} 1e-3")
        if f"baseline pcsim {name} 1e-3" in t:
            ratios[f"baseline pcsim {name} 1e-3 / JPC {name} 1e-3"] = _ratio(t, f"baseline pcsim {name} 1e-3",
                                                                           f"JPC {name} 1e-3")
            ratios[f"pcsim {name} 1e-3 / baseline pcsim {name} 1e-3"] = _ratio(t, f"pcsim {name} 1e-3",
                                                                             f"baseline pcsim {name} 1e-3")
    return {"setting": f"MLP 784-300-300-10 tanh, batch {JPC_BATCH}, float32, 1 thread; pcsim: t_end = {T_END}, "
                       f"tau_x = {TAU}, Euler dt = {DT} ({STEPS} steps), il steps = {STEPS}, gamma = {GAMMA}; JPC: "
                       f"t1 = N * {T_END}, Euler dt = N * {DT}, adaptive rtol = atol = {TOL}, N = {JPC_BATCH}",
            "checks_float64": checks, "solver_steps": steps, "first_call_s": first_call_s, **res,
            "median_ms": {n: 1e3 * statistics.median(x for _, x in ts) for n, ts in t.items()}, "ratios": ratios,
            "versions": _versions(["torch", "numpy", "scipy", "jax", "jaxlib", "diffrax", "equinox", "optax",
                                   "jaxtyping", "lineax", "optimistix", "jpc"])}


# -- part pcx: IL on the MLP 784-1000-1000-10 ----------------------------------------------------------------
def _pcx_model_class():
    import jax
    import pcx as px
    import pcx.nn as pxnn
    import pcx.predictive_coding as pxc

    class PCXMLP(pxc.EnergyModule):
        """PCX's MLP; per_op: a vode after each Linear and each tanh (pcsim's populations), else after each layer."""

        def __init__(self, sizes, per_op: bool):
            super().__init__()
            self.act_fn = px.static(jax.numpy.tanh)
            self.per_op = px.static(per_op)
            self.layers = [pxnn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
            hidden = len(sizes) - 2
            self.vodes = [pxc.Vode() for _ in range((2 if per_op else 1) * hidden)] + [pxc.Vode()]
            self.vodes[-1].h.frozen = True

        def __call__(self, x, y):
            k = 0
            for layer in self.layers[:-1]:
                if self.per_op.get():
                    x = self.vodes[k](layer(x))
                    x = self.vodes[k + 1](self.act_fn(x))
                    k += 2
                else:
                    x = self.vodes[k](self.act_fn(layer(x)))
                    k += 1
            x = self.vodes[-1](self.layers[-1](x))
            if y is not None:
                self.vodes[-1].set("h", y)
            return self.vodes[-1].get("u")

    return PCXMLP


def _pcx_functions():
    """PCX's forward/energy/train_on_batch, as in its examples; plus the same inference returning the gradients."""
    import jax
    import pcx.functional as pxf
    import pcx.nn as pxnn
    import pcx.predictive_coding as pxc
    import pcx.utils as pxu

    @pxf.vmap(pxu.M(pxc.VodeParam | pxc.VodeParam.Cache).to((None, 0)), in_axes=(0, 0), out_axes=0)
    def forward(x, y, *, model):
        return model(x, y)

    @pxf.vmap(pxu.M(pxc.VodeParam | pxc.VodeParam.Cache).to((None, 0)), in_axes=(0,), out_axes=(None, 0),
              axis_name="batch")
    def energy(x, *, model):
        y_ = model(x, None)
        return jax.lax.psum(model.energy(), "batch"), y_

    def infer(T, x, y, model, optim_h):
        with pxu.step(model, pxc.STATUS.INIT, clear_params=pxc.VodeParam.Cache):
            forward(x, y, model=model)
        optim_h.init(pxu.M_hasnot(pxc.VodeParam, frozen=True)(model))
        for _ in range(T):
            with pxu.step(model, clear_params=pxc.VodeParam.Cache):
                _, g = pxf.value_and_grad(pxu.M_hasnot(pxc.VodeParam, frozen=True).to([False, True]),
                                          has_aux=True)(energy)(x, model=model)
            optim_h.step(model, g["model"])
        optim_h.clear()
        with pxu.step(model, clear_params=pxc.VodeParam.Cache):
            (e, _), g = pxf.value_and_grad(pxu.M(pxnn.LayerParam).to([False, True]), has_aux=True)(energy)(
                x, model=model)
        return e, g["model"]

    @pxf.jit(static_argnums=0)
    def train_on_batch(T, x, y, *, model, optim_w, optim_h):
        model.train()
        e, g = infer(T, x, y, model, optim_h)
        optim_w.step(model, g, scale_by=1.0 / x.shape[0])
        return e

    @pxf.jit(static_argnums=0)
    def grads(T, x, y, *, model, optim_h):
        model.train()
        e, g = infer(T, x, y, model, optim_h)
        return e, [(lay.nn.weight.get(), lay.nn.bias.get()) for lay in g.layers]

    return forward, train_on_batch, grads


def _pcx_setup(net, x, per_op: bool, jnp_dtype, lr_w=1e-3):
    import jax.numpy as jnp
    import optax
    import pcx.nn as pxnn
    import pcx.predictive_coding as pxc
    import pcx.utils as pxu
    from torch import nn

    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    sizes = [linears[0].in_features] + [m.out_features for m in linears]
    model = _pcx_model_class()(sizes, per_op)
    for lay, m in zip(model.layers, linears, strict=True):
        lay.nn.weight.set(jnp.asarray(m.weight.detach().numpy(), dtype=jnp_dtype))
        lay.nn.bias.set(jnp.asarray(m.bias.detach().numpy(), dtype=jnp_dtype))
    forward, train_on_batch, grads = _pcx_functions()
    with pxu.step(model, pxc.STATUS.INIT, clear_params=pxc.VodeParam.Cache):  # the examples' dummy pass
        forward(jnp.zeros((x.shape[0], sizes[0]), dtype=jnp_dtype), None, model=model)
    optim_h = pxu.Optim(lambda: optax.sgd(GAMMA))  # IL's inference step: x -= gamma dE/dx
    optim_w = pxu.Optim(lambda: optax.sgd(lr_w), pxu.M(pxnn.LayerParam)(model))
    return model, optim_h, optim_w, train_on_batch, grads


def _pcx_checks() -> dict:
    """float64: PCX's weight gradients (one vode per op) against pcsim.il's, at T = 5 and 20."""
    import jax
    import jax.numpy as jnp
    import mlp
    import torch

    import pcsim

    jax.config.update("jax_enable_x64", True)
    try:
        net, (x,), labels = mlp.build(batch=PCX_BATCH)
        net = net.double()
        x = x.double()
        y = torch.nn.functional.one_hot(labels, 10).double()
        graph = pcsim.trace(net.layers, x)
        out = {"populations": list(graph.latent)}
        model, optim_h, _, _, grads = _pcx_setup(net.layers, x, True, jnp.float64)
        xj, yj = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
        for T in PCX_T:
            mine = pcsim.il(graph, (x,), y, steps=T, gamma=GAMMA)
            _, theirs = grads(T, xj, yj, model=model, optim_h=optim_h)
            names = [n for n in graph.param_names]
            flat = [a for wb in theirs for a in wb]
            d = [_maxdiff(t, mine[n].numpy()) for t, n in zip(flat, names, strict=True)]
            out[f"grads_T{T}"] = {"max_abs": max(e[0] for e in d), "max_rel": max(e[1] for e in d)}
        return out
    finally:
        jax.config.update("jax_enable_x64", False)


def part_pcx(reps: int) -> dict:
    import jax.numpy as jnp
    import mlp
    import torch

    import pcsim

    torch.set_num_threads(1)
    checks = _pcx_checks()
    print("float64 checks:", json.dumps(checks), flush=True)
    net, (x,), labels = mlp.build(batch=PCX_BATCH)
    y = torch.nn.functional.one_hot(labels, 10).float()
    graph = pcsim.trace(net.layers, x)  # the Sequential: MLP.forward's flatten(1) would add a population
    xj, yj = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
    per_op = _pcx_setup(net.layers, x, True, jnp.float32)
    per_layer = _pcx_setup(net.layers, x, False, jnp.float32)
    fns = {}
    for T in PCX_T:
        fns[f"pcsim.il T={T}"] = partial(pcsim.il, graph, (x,), y, steps=T, gamma=GAMMA)
        m, oh, ow, tob, gr = per_op
        fns[f"PCX per op T={T}"] = partial(_blocked, tob, T, xj, yj, model=m, optim_w=ow, optim_h=oh)
        fns[f"PCX per op, grads only T={T}"] = partial(_blocked, gr, T, xj, yj, model=m, optim_h=oh)
        m, oh, ow, tob, _ = per_layer
        fns[f"PCX per layer T={T}"] = partial(_blocked, tob, T, xj, yj, model=m, optim_w=ow, optim_h=oh)
    first_call_s = {}
    for name, f in fns.items():  # warm-up; jit and inductor compile here (the first call's time is kept)
        start = time.perf_counter()
        f()
        first_call_s[name] = time.perf_counter() - start
        f()
    res = _timed_runs(fns, reps)
    t = res["times"]
    ratios = {}
    for T in PCX_T:
        for peer in ("PCX per op", "PCX per op, grads only", "PCX per layer"):
            ratios[f"pcsim.il / {peer}, T={T}"] = _ratio(t, f"pcsim.il T={T}", f"{peer} T={T}")
    return {"setting": f"MLP 784-1000-1000-10 tanh (models/mlp.py), batch {PCX_BATCH}, float32, 1 thread, MSE to "
                       f"one-hot targets, T = {PCX_T}; pcsim.il(steps=T) at gamma = {GAMMA}; PCX: SGD({GAMMA}) on "
                       "the vodes, energy summed over the batch, SGD weight step (per op / per layer rows)",
            "checks_float64": checks, **res,
            "median_ms": {n: 1e3 * statistics.median(x for _, x in ts) for n, ts in t.items()}, "ratios": ratios,
            "first_call_s": first_call_s,
            "versions": _versions(["torch", "numpy", "jax", "jaxlib", "equinox", "optax", "pcx"])}


# -- the two parts, each in its venv, and the report --------------------------------------------------------
def _markdown(result: dict) -> str:
    m = result["machine"]
    lines = ["# pcsim against JPC and PCX (issue 21)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; created {result['created']}; `{result['command']}`.", "",
             f"pcsim measured: {result['pcsim_source']}. JPC source: {result['jpc_source']}.", "",
             *([f"Baseline pcsim (rows \"baseline pcsim ...\", part jpc, imported beside pcsim in the same process): "
                f"{result['baseline_source']}.", ""] if "baseline_source" in result else []),
             "Each part runs in its own venv (JPC needs jax 0.5; PCX 0.6.3 pins jax < 0.5), pcsim and the peer "
             "interleaved in that one process, the order rotated each repetition; one thread (torch and XLA), "
             "the process pinned to one core. "
             "Ratios: median over repetitions of the ratio of two times of the same repetition (quartiles in "
             "brackets). cpu/wall: the process's CPU time over wall time, median (1.0: one busy thread).", ""]
    for key, title in (("jpc", "Continuous time: pcsim against JPC"), ("pcx", "IL: pcsim against PCX")):
        p = result.get(key)
        if p is None:
            continue
        if "error" in p:
            lines += [f"## {title}", "", f"Not measured: {p['error']}", ""]
            continue
        lines += [f"## {title}", "", f"Setting: {p['setting']}; {p['reps']} repetitions; load average at the end "
                  f"{', '.join(f'{v:.1f}' for v in p['load_average'])}.", "",
                  "Versions: " + ", ".join(f"{k} {v}" for k, v in p["versions"].items()) + ".", "",
                  "| run | median ms | cpu/wall |", "|---|---:|---:|"]
        for n, ms in p["median_ms"].items():
            lines.append(f"| {n} | {ms:.1f} | {p['cpu_over_wall'][n]:.2f} |")
        lines += ["", "| ratio | median (quartiles) |", "|---|---:|"]
        for n, r in p["ratios"].items():
            lines.append(f"| {n} | {r['median']:.2f} ({r['q1']:.2f}-{r['q3']:.2f}) |")
        lines += ["", "float64 checks: `" + json.dumps(p["checks_float64"]) + "`", ""]
        if "solver_steps" in p:
            lines += ["Solver steps: `" + json.dumps(p["solver_steps"]) + "`", ""]
        if "first_call_s" in p:  # jax's jit and inductor compile on the first call, which the timings leave out
            lines += ["First call, compiling included, in s: `" + json.dumps({k: round(v, 2) for k, v in
                                                                            p["first_call_s"].items()}) + "`", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "peers"))
    ap.add_argument("--part", choices=["jpc", "pcx"], help="run one part here and write its JSON to --out")
    ap.add_argument("--jpc-python", default=str(ROOT / "build" / "peers-jpc" / "bin" / "python"))
    ap.add_argument("--pcx-python", default=str(ROOT / "build" / "peers-pcx" / "bin" / "python"))
    ap.add_argument("--baseline-src", help="part jpc: also time the Tsit5/Dopri5 of the pcsim in this folder (a "
                    "`git archive` of another commit, its hash in COMMIT), interleaved with the rest")
    ap.add_argument("--pcsim-src", default=str(ROOT), help="the folder whose pcsim (and models/) is measured "
                    "(default: this checkout, as it is on disk)")
    args = ap.parse_args(argv)
    if args.part:
        res = part_jpc(args.reps, args.baseline_src) if args.part == "jpc" else part_pcx(args.reps)
        res["reps"] = args.reps
        import pcsim

        res["pcsim_imported_from"] = str(Path(pcsim.__file__).resolve().parent)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
        return 0
    import torch

    from pcsim.bench.rules import machine

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(torch.device("cpu")),
              "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "xla_flags": _XLA, "jpc_source": _jpc_source(), "pcsim_source": _pcsim_source(Path(args.pcsim_src))}
    if args.baseline_src:
        result["baseline_source"] = _pcsim_source(Path(args.baseline_src))
    for part, py in (("jpc", args.jpc_python), ("pcx", args.pcx_python)):
        tmp = out.with_name(f"{out.name}.{part}.tmp.json")
        print(f"== part {part} ({py})", flush=True)
        extra = ["--baseline-src", str(Path(args.baseline_src).resolve())] if args.baseline_src else []
        proc = subprocess.run([py, __file__, "--part", part, "--reps", str(args.reps), "--out", str(tmp),
                               "--pcsim-src", str(Path(args.pcsim_src).resolve()), *extra], cwd=ROOT)
        if proc.returncode == 0 and tmp.exists():
            result[part] = json.loads(tmp.read_text())
            tmp.unlink()
        else:
            result[part] = {"error": f"{py} --part {part} exited {proc.returncode} (its output above)"}
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    md = _markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0 if all("error" not in result[p] for p in ("jpc", "pcx")) else 1


def _pcsim_source(src: Path) -> str:
    """Which pcsim was measured: the folder, and its commit with any uncommitted changes under pcsim/."""
    stamp = src / "COMMIT"
    if stamp.exists():
        return f"{src}: {stamp.read_text().strip()}"
    try:
        git = lambda *a: subprocess.run(["git", "-C", str(src), *a], capture_output=True, text=True,  # noqa: E731
                                        check=True).stdout.strip()
        dirty = git("status", "--porcelain", "--", "pcsim", "models")
        return f"{src}: {git('rev-parse', 'HEAD')}" + (f" with uncommitted changes: {dirty}" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return str(src)


def _jpc_source() -> str:
    stamp = ROOT / "build" / "jpc-src" / "COMMIT"
    return stamp.read_text().strip() if stamp.exists() else "unknown"


if __name__ == "__main__":
    sys.exit(main())
