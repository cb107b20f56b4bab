"""The torch backend: fixed-step Euler and RK4 on tensors, on whatever device the data is on.

The state stays in torch from step to step (no NumPy round trip), so large batched networks run
as fast as their VJPs do; on a CUDA machine, trace and pass CUDA tensors to run there. Euler with
instantaneous errors and one value time constant runs as IL's own inference step
(`pcsim.dynamics.relaxed`); `fast=False` evaluates the vector field instead (the same dynamics,
for comparison).
"""

from __future__ import annotations

from pcsim.backends.scipy import _run_fixed
from pcsim.dynamics import relaxed
from pcsim.dynamics.fixed_step import FIXED_METHODS

METHODS = FIXED_METHODS
DEFAULT_METHOD = "euler"


def run(field, recorder, *, method, t_end, dt, rtol=None, atol=None, progress=False, fast: bool = True):
    if dt is None:
        raise ValueError("the torch backend integrates with a fixed step: pass dt=")
    if fast and relaxed.applies(field, method):
        return relaxed.run(field, recorder, t_end=t_end, dt=dt, progress=progress)
    return _run_fixed(field, recorder, method=method, t_end=t_end, dt=dt, progress=progress)
