"""Adaptive Runge-Kutta solvers on torch (torchode): error-controlled steps on any device.

The state is one flat (1, n) tensor on the data's device (torchode's batch of one system); the field reads and
writes its components as views (`VectorField.views`), with no packing per evaluation. torchode's Runge-Kutta step
and IntegralController are driven by a plain loop rather than `AutoDiffAdjoint.solve`, whose per-instance batch
bookkeeping one system does not need; as with scipy, the solve runs in pieces between switches (`Recorder.pieces`).
torchode over torchdiffeq: benchmarks/results/torch_adaptive.md.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from pcsim.backends.torch_fused import fused_step
from pcsim.dynamics.recording import SimulationError
from pcsim.dynamics.solver import SOLVERS, Solver, check_positive
from pcsim.graph.argument import check_fields
from pcsim.graph.provenance import user_stacklevel


@dataclass(frozen=True)
class _Adaptive(Solver):
    """An embedded Runge-Kutta pair of torchode with rtol and atol; max_step caps the steps. compile=True: on
    plain-inference pieces a step is one function compiled by inductor (`torch_fused`); elsewhere eager."""

    rtol: float = 1e-6
    atol: float = 1e-8
    max_step: float | None = None
    compile: bool = False
    backend: ClassVar[str] = "torch"

    def __post_init__(self):
        check_fields(self)
        check_positive(rtol=self.rtol, atol=self.atol, max_step=self.max_step)

    def run(self, field, recorder, *, t_end, progress=False):
        import torchode  # imported when a solve runs: `import pcsim` stays light

        if recorder.sample_times() is None:
            raise ValueError(f"torch's {self.method} reports the solution at given times, not at each accepted step: "
                             "record snapshots (the default, or Record(snapshots=N)) or Record(times=[...])")

        inside = [0.0]  # a time inside the piece being solved: its regime holds up to the stage at its end

        def rhs(t, y):  # each component written into its place in a fresh flat vector
            out = torch.empty_like(y)
            field(float(t[0]), field.views(y[0]), field.views(out[0]), regime=inside[0], piece=True)
            return out

        term = torchode.ODETerm(rhs, with_stats=False)
        step = {"dopri5": torchode.Dopri5, "tsit5": torchode.Tsit5}[self.method](term=term)
        control = torchode.IntegralController(atol=self.atol, rtol=self.rtol, term=term, dt_max=self.max_step)
        y = torch.zeros(1, field.size, dtype=field.dtype, device=field.device)
        eager = []
        with torch.no_grad():
            for a, b, wanted in recorder.pieces(self.method, progress):
                inside[0] = 0.5 * (a + b)
                fused, why = fused_step(field, step, y, self.method, a, b) if self.compile else (None, None)
                if why:
                    eager.append(f"[{a:.6g}, {b:.6g}]: {why}")
                y = self._piece(step, control, y, a, b, wanted, field, recorder, fused)
        if eager:
            warnings.warn(f"pcsim: {self.method}(compile=True) ran these pieces eagerly: " + "; ".join(eager),
                          RuntimeWarning, stacklevel=user_stacklevel())
        return field.views(y[0])

    def _piece(self, step, control, y, a: float, b: float, wanted: np.ndarray, field, recorder, fused=None):
        """Integrate from (a, y) to b with torchode's Runge-Kutta step (or its `fused` compiled form) and controller,
        recording at the `wanted` times from the step's dense output; returns y(b)."""
        import torchode
        from torchode.single_step_methods import StepResult
        from torchode.single_step_methods.runge_kutta import ERKInterpolationData, ERKState

        def times(v):  # time in float64 whatever the data's dtype (torchode converts dt for the data)
            return torch.tensor(v, dtype=torch.float64, device=y.device)
        t, end = times([a]), times([b])
        problem = torchode.InitialValueProblem(y0=y, t_start=t, t_end=end)
        stats: dict = {}
        dt, cstate, f0 = control.init(None, problem, step.convergence_order(), None, stats=stats, args=None)
        mstate = step.init(None, problem, f0, stats=stats, args=None)
        running = torch.ones(1, dtype=torch.bool, device=y.device)
        now, pending = a, list(wanted)
        while now < b:
            dt = torch.minimum(dt, end - t)  # never step past the switch at b
            if fused is None:
                result, interp, mstate_next, _ = step.step(None, running, y, t, dt, mstate, stats=stats, args=None)
            else:  # the same step, compiled with the field: torchode's state, result and dense output from its stages
                y1, error, k = fused(y, mstate.prev_vf1, dt.to(y.dtype))
                result, interp = StepResult(y1, error), ERKInterpolationData(mstate.tableau, t, dt, y, y1, k)
                mstate_next = ERKState(mstate.tableau, k[-1])
            accept, dt_next, cstate, status = control.adapt_step_size(t, dt, y, result, cstate, stats)
            ok, accepted = torch.stack([status == torchode.Status.SUCCESS.value, accept]).view(-1).tolist()  # one sync
            if not ok:
                raise SimulationError(f"torch {self.method} failed between t = {a:.6g} and {b:.6g} "
                                      f"({torchode.Status(int(status[0])).name}): {_why_failed(y.dtype, control)}")
            if accepted:
                t_next = t + dt
                now = float(t_next[0])
                inside = [s for s in pending if s <= now and s < b]  # from this step's interpolant (b: below, from y)
                pending = [s for s in pending if s > now]
                if inside:
                    at = step.build_interpolation(interp).evaluate(
                        times(inside), torch.zeros(len(inside), dtype=torch.long, device=y.device))
                    for i, s in enumerate(inside):
                        recorder.see(float(s), field.views(at[i]))
                t, y, mstate = t_next, result.y, mstate_next
                recorder.reached(now)
            dt = dt_next
        recorder.see(b, field.views(y[0]), len(wanted) > 0 and wanted[-1] == b)
        return y


@dataclass(frozen=True)
class Dopri5(_Adaptive):
    """Dormand-Prince 5(4), the workhorse (diffrax's Dopri5, scipy's RK45)."""

    method: ClassVar[str] = "dopri5"
    order: ClassVar[int] = 5


@dataclass(frozen=True)
class Tsit5(_Adaptive):
    """Tsitouras 5(4), diffrax's default: a little cheaper per step than Dopri5 at the same order."""

    method: ClassVar[str] = "tsit5"
    order: ClassVar[int] = 5


for _cls in (Dopri5, Tsit5):
    SOLVERS.register("torch", _cls.method,
                     lambda *, dt=None, rtol=1e-8, atol=1e-10, compile=False, _cls=_cls:
                     _cls(rtol=rtol, atol=atol, max_step=dt, compile=compile))


def _why_failed(dtype: torch.dtype, control) -> str:
    """The likely cause of a failed adaptive solve: torchode's error norm, error / (atol + rtol |y|) in the data's
    dtype, overflows float16 from the first step at an atol finer than about 1e-4, which is no blow-up."""
    finfo = torch.finfo(dtype)
    if float(control.atol) * finfo.max < 10:  # an error of 0.1 over atol overflows
        return (f"the step's error norm, error / (atol + rtol |y|), overflows {str(dtype).replace('torch.', '')} "
                f"(largest {finfo.max:g}) at atol {float(control.atol):g}: pass atol >= {10 / finfo.max:.0e}, "
                "or simulate the module in float32")
    return "the system may have blown up; try larger time constants"

