"""Build the rendered network as Brian2 objects, run it on a code-generation target, read it back.

Schedule of one Euler step (all within `when='before_groups'`, then the groups' state updaters):
  order 0..   forward summed variables  mu_k = sum over synapses (reads the values x of step k), then
              what circuits pool from them (circuits.py: a softmax's normaliser, a norm's variance)
  order 10..  feedback summed variables fb_m = sum of J^T err (err depends on this step's mu)
  order 20    synaptic plasticity       w += dt gate hebb / tau_w (err_post, x_pre of step k)
  order 21    monitors                  x, err, mu of step k
  groups   x += dt (fb - err) / tau_x, leaky errors, bias accumulators: all from step k's state
so one step reads only the previous step's state, as explicit Euler does.

Time is in Brian2's seconds: pcsim's time unit is one second of Brian2 time.
"""

from __future__ import annotations

import gc
import logging
import math
import re
import sys
from contextlib import nullcontext

import numpy as np
import torch

from pcsim.backends.brian2 import environment
from pcsim.backends.brian2.activations import FUNCTIONS
from pcsim.backends.brian2.circuits import BACKWARD
from pcsim.backends.brian2.environment import CythonFallbackWarning  # noqa: F401 - where users import it from
from pcsim.backends.brian2.render import Network as Spec
from pcsim.backends.brian2.render import checked_steps, render
from pcsim.dynamics.field import VectorField, observation
from pcsim.dynamics.recording import Recorder, guard
from pcsim.errors import PcsimError

PLASTICITY = 2 * BACKWARD  # synaptic accumulators after every summed variable (circuits.py's stages)


class Brian2Unavailable(PcsimError, ImportError):
    """Brian2 is not installed (or fails at import)."""


def import_brian2():
    first, hook = "brian2" not in sys.modules, sys.excepthook
    try:
        import brian2
    except ImportError as e:
        raise Brian2Unavailable(f"the brian2 backend needs Brian2, which could not be imported ({e}); install it "
                                "with `pip install 'brian2>=2.7' 'numpy<2.4'` (Brian2 2.9 fails at import with numpy "
                                ">= 2.4), or run `make install`, which puts it in .venv") from e
    if first:  # Brian2's import routes every Python warning into its log (logging.captureWarnings): pcsim's own
        logging.captureWarnings(False)  # warnings went missing from warnings.catch_warnings and pytest.warns
        # and takes over sys.excepthook: any error the script left uncaught afterwards (pcsim's, the user's own)
        # printed 'Brian 2 encountered an unexpected error', asking for a report on Brian2's tracker
        sys.excepthook = hook
    return brian2


class Built:
    """The Brian2 objects of one rendered network, in their own Network (what `Brian2(on_build=f)` hands f).

    network: the `Network`; groups: vertex name -> `NeuronGroup` (value `x`, error `err`); drives: the input drive
    groups; synapses: (projection spec, `Synapses`) pairs; monitors: vertex -> pcsim's own `StateMonitor`; clock:
    the simulation clock (step dt); spec: the rendered network.
    """

    def __init__(self, b2, spec: Spec, populations, monitor_every: int | None, final_recorded: bool):
        second = b2.second
        n = spec.n_steps
        self.spec = spec
        self.clock = b2.Clock(dt=spec.dt * second, name="pcsim_clock")
        # ticks once, at t = 0, within the n + 1 steps of the run: constant input drives
        once = b2.Clock(dt=(n + 1) * spec.dt * second, name="pcsim_once_clock")
        self.drives, self.synapses, self.monitors = [], [], {}

        functions = {}

        def namespace(obj):
            ns = {k: v * second for k, v in obj.times.items()}
            ns.update({k: b2.TimedArray(v, dt=spec.dt * second) for k, v in obj.tables.items()})
            text = "\n".join(obj.equations)
            for fname in FUNCTIONS:  # functions Brian2 lacks (erf), where an expression calls them
                if re.search(rf"\b{fname}\s*\(", text):
                    ns[fname] = functions[fname] = functions.get(fname) or environment.brian2_function(b2, fname)
            return ns

        by_name = {}
        for pop in [*spec.populations.values(), *spec.helpers]:
            g = b2.NeuronGroup(pop.n, "\n".join(pop.equations), method="euler", namespace=namespace(pop),
                               clock=self.clock, name=pop.name)
            for var, value in pop.values.items():
                setattr(g, var, value)
            for k, (code, stage) in enumerate(pop.code):
                g.run_regularly(code, when="before_groups", order=stage, name=f"{pop.name}_code{k}")
            by_name[pop.name] = g
        self.groups = {vertex: by_name[p.name] for vertex, p in spec.populations.items()}
        self.helpers = [by_name[p.name] for p in spec.helpers]
        for proj in spec.projections:
            pre, post = by_name[proj.pre], by_name[proj.post]
            if proj.once:
                drive = b2.NeuronGroup(post.N, f"{proj.forward} : 1", clock=once, name=f"d_{proj.name}")
                setattr(post, proj.forward, b2.linked_var(drive, proj.forward))
                self.drives.append(drive)
                post = drive
            s = b2.Synapses(pre, post, "\n".join(proj.equations), method="euler", namespace=namespace(proj),
                            clock=self.clock, name=proj.name)
            s.connect(i=proj.i.astype(np.int32), j=proj.j.astype(np.int32))
            for var, value in proj.values.items():
                setattr(s, var, value)
            for var, updater in s.summed_updaters.items():
                updater.when = "before_groups"
                updater.order = proj.orders.get(var, 0 if updater.target is post else BACKWARD)  # mu, then fb
            if getattr(s, "state_updater", None) is not None:
                s.state_updater.when, s.state_updater.order = "before_groups", PLASTICITY
            self.synapses.append((proj, s))

        def monitor(name, variables, clock, prefix):
            return b2.StateMonitor(self.groups[name], list(variables), record=True, when="before_groups",
                                   order=PLASTICITY + 1, clock=clock, name=f"{prefix}_{spec.populations[name].name}")

        # the state at t_end: recorded at steps 0 and n of the n + 1 the network runs (unless the
        # populations' own monitors record step n)
        last = b2.Clock(dt=n * spec.dt * second, name="pcsim_final_clock")
        self.final = {name: monitor(name, ["x", "err"] if pop.leaky else ["x"], last, "f")
                      for name, pop in spec.populations.items()
                      if not pop.clamped and not (final_recorded and name in populations)}
        if monitor_every is not None:
            every = b2.Clock(dt=monitor_every * spec.dt * second, name="pcsim_monitor_clock")
            self.monitors = {name: monitor(name, spec.populations[name].monitor, every, "m") for name in populations}
        monitors = [*self.final.values(), *self.monitors.values()]
        self.network = environment.network_class(b2)(list(self.groups.values()), self.helpers, self.drives,
                                                      [s for _, s in self.synapses], monitors, name="pcsim_network")


def run(solver, field: VectorField, recorder: Recorder, *, t_end: float, progress: bool):
    """Integrate on Brian2 with explicit Euler; returns the final state in the field's layout (see `Brian2`)."""
    b2, dt = import_brian2(), solver.dt
    n = checked_steps(t_end, dt)
    spec = render(field, dt=dt, n_steps=n, inputs_once=solver.inputs_once)
    wanted = recorder.plan_grid(n, dt)
    pops = [p for p in recorder.populations if p in spec.populations]
    every = (math.gcd(*wanted) or n) if pops and wanted else None
    # Brian2 calls gc.collect() at every run; with torch loaded that scans ~10^5 objects each time.
    # Freezing what exists now leaves those collections only the objects made here.
    gc.freeze()
    try:
        with environment.preferences(b2, solver.target) as target:
            with environment.standalone(b2, solver.threads) if target == "cpp_standalone" else nullcontext() as device:
                built = Built(b2, spec, pops, every, n in wanted)
                if solver.on_build is not None:
                    solver.on_build(built)
                if device is not None and type(device.clocks) is set:  # (as for the network's clocks: network_class)
                    device.clocks = environment.ByName(device.clocks)
                # Euler's n steps, and one more that only observes the state at t_end (the gates are shut)
                built.network.run((n + 1) * dt * b2.second, report="text" if progress else None, namespace={})
                if device is not None:
                    folder = environment.standalone_folder(spec, solver.directory)
                    device.build(directory=str(folder), compile=True, run=True, with_output=False)
                final, monitors = _read(built, field)
        gc.collect()  # free this run's Brian2 objects now, so the next run's names (and code) repeat
    finally:
        gc.unfreeze()
    guard(t_end, final)
    for k in wanted:
        t = min(k * dt, t_end) if k else 0.0
        seen = _Monitored(field, monitors, k)
        errors = {n: seen.read(n, "err") for n in recorder.populations}
        recorder.add_observation(t, observation(seen, errors, field.shown(t), recorder.populations))
    return final


def _read(built: Built, field: VectorField):
    """Final state in the field's layout, and the monitors' arrays (read before a device is reset)."""
    spec = built.spec
    found = {}
    acc = {p: np.zeros(int(np.prod(s, dtype=np.int64))) for p, s in spec.param_shapes.items()}
    for name, pop in spec.populations.items():
        if pop.clamped:
            continue
        mon = built.final.get(name, built.monitors.get(name))
        found["u", name] = np.asarray(mon.x[:])[:, -1] - pop.values["x"]
        if pop.leaky:
            found["e", name] = np.asarray(mon.err[:])[:, -1]
        for var, param, index in pop.accumulators:
            w = np.asarray(getattr(built.groups[name], var)[:])
            acc[param] += np.bincount(index, weights=w, minlength=acc[param].size)
    for proj, s in built.synapses:
        if proj.param is not None:
            # a weight shared across batch copies or positions sums its synapses' accumulators
            kidx = np.asarray(s.kidx[:], dtype=np.int64)
            acc[proj.param] += np.bincount(kidx, weights=np.asarray(s.w[:]), minlength=acc[proj.param].size)
    state = {key: torch.as_tensor(acc[key[1]] if key[0] == "w" else found[key], dtype=field.dtype,
                                  device=field.device).reshape(field.shapes[key]) for key in field.layout}
    monitors = {}
    for name, mon in built.monitors.items():
        steps = np.rint(np.asarray(mon.t_[:]) / spec.dt).astype(np.int64)
        monitors[name] = {var: dict(zip(steps.tolist(), np.asarray(getattr(mon, var)[:]).T, strict=True))
                          for var in spec.populations[name].monitor}
    return state, monitors


class _Monitored:
    """The monitors' arrays at recorded step k, read as `observation` reads IL's step: value `x`, prediction `mu`."""

    def __init__(self, field: VectorField, monitors: dict, k: int):
        self.problem, self.base, self.outputs = field.problem, field.base, field.outputs
        self.monitors, self.k = monitors, k

    def read(self, name: str, var: str) -> torch.Tensor:
        return torch.as_tensor(self.monitors[name][var][self.k].reshape(self.base[name].shape))

    def value(self, name: str) -> torch.Tensor:
        return self.read(name, "x")

    def prediction(self, name: str) -> torch.Tensor:
        return self.read(name, "mu")
