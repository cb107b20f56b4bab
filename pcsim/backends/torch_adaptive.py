"""Adaptive Runge-Kutta solvers on torch (torchode): error-controlled steps on any device.

The state is packed into one (1, n) tensor on the data's device (torchode's layout: a batch of one
system), so on a CUDA machine the whole solve runs there. As with scipy, the interval is integrated
piecewise between target onset and the gates' switching times, so no step straddles a
discontinuity; each piece starts just after its switch, where the field is evaluated from the
right. torchode was chosen over torchdiffeq by measurement on the MLP 784-300-300-10 at
rtol = atol = 1e-3: the same number of field evaluations, and torchdiffeq's own stepping costing
more than they do (benchmarks/bench_torch_adaptive.py, benchmarks/results/torch_adaptive.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from pcsim.dynamics.protocol import window_grid
from pcsim.dynamics.recording import SimulationError
from pcsim.dynamics.solver import SOLVERS, Solver, check_positive


@dataclass(frozen=True)
class _Adaptive(Solver):
    """An embedded Runge-Kutta pair of torchode with rtol and atol; max_step caps the steps."""

    rtol: float = 1e-6
    atol: float = 1e-8
    max_step: float | None = None
    backend: ClassVar[str] = "torch"
    adaptive: ClassVar[bool] = True

    def __post_init__(self):
        check_positive(rtol=self.rtol, atol=self.atol, max_step=self.max_step)

    @property
    def step(self) -> float | None:
        return self.max_step

    def run(self, field, recorder, *, t_end, progress=False):
        return _solve(self, field, recorder, t_end, progress)


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


def _solve(solver: _Adaptive, field, recorder, t_end: float, progress: bool):
    import torchode  # imported when a solve runs: `import pcsim` stays light

    sample = recorder.sample_times()
    if sample is None:
        raise ValueError(f"torch's {solver.method} reports the solution at given times, not at each accepted step: "
                         "record snapshots (the default, or Record(snapshots=N)) or Record(times=[...])")
    layout, sizes = field.layout, [field.sizes[k] for k in field.layout]

    def unpack(flat: torch.Tensor) -> dict:
        return {k: p.reshape(field.shapes[k]) for k, p in zip(layout, torch.split(flat, sizes), strict=True)}

    def rhs(t, y):
        d = field(float(t[0]), unpack(y[0]))
        return torch.cat([d[k].reshape(-1) for k in layout])[None]

    term = torchode.ODETerm(rhs)
    step = {"dopri5": torchode.Dopri5, "tsit5": torchode.Tsit5}[solver.method](term=term)
    control = torchode.IntegralController(atol=solver.atol, rtol=solver.rtol, term=term, dt_max=solver.max_step)
    ode = torchode.AutoDiffAdjoint(step, control)
    grid = window_grid(0.0, t_end, [field.t_on, *field.gate.breakpoints(field.levels)])
    y = torch.zeros(1, field.size, dtype=field.dtype, device=field.device)
    if sample[0] == 0.0:
        recorder.add(0.0, unpack(y[0]))
    bar = tqdm(total=t_end, desc=f"pcsim {solver.method}", disable=not progress, leave=False)
    try:
        for a, b in zip(grid[:-1], grid[1:], strict=True):
            wanted = sample[(sample > a) & (sample <= b)]
            times = np.union1d(wanted, [a, b])  # the piece's end is always evaluated: the next piece starts there
            t_eval = torch.tensor(times[None], dtype=field.dtype, device=field.device)
            with torch.no_grad():
                sol = ode.solve(torchode.InitialValueProblem(y0=y, t_eval=t_eval))
            status = torchode.Status(int(sol.status[0]))
            if status is not torchode.Status.SUCCESS:
                raise SimulationError(f"torch {solver.method} failed between t = {a:.6g} and {b:.6g} "
                                      f"({status.name}): the system may have blown up; try larger time constants")
            for i, t in enumerate(times[1:], start=1):
                at = unpack(sol.ys[0, i])
                recorder.guard(float(t), at)
                if np.any(wanted == t):
                    recorder.add(float(t), at)
            y = sol.ys[:, -1]
            bar.update(b - a)
    finally:
        bar.close()
    return unpack(y[0])


for _cls in (Dopri5, Tsit5):
    SOLVERS.register("torch", _cls.method,
                     lambda *, dt=None, rtol=1e-8, atol=1e-10, _cls=_cls: _cls(rtol=rtol, atol=atol, max_step=dt))
