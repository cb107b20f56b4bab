"""The Brian2 backend: pcsim's value and error populations as NeuronGroups, projections as Synapses.

`render.py` turns the vector field's populations into Brian2 equations (from
`pcsim.dynamics.equations.EQUATIONS`) and connectivity, op by op; `runner.py` builds them as real
Brian2 objects in their own `Network`, runs them on a code-generation target ('numpy', 'cython',
'cpp_standalone') and reads the monitors and synaptic accumulators back into a Trajectory.

Brian2 is imported only when a simulation runs: `import pcsim` never imports it.
"""

from __future__ import annotations

METHODS = ("euler",)
DEFAULT_METHOD = "euler"
TARGETS = ("numpy", "cython", "cpp_standalone")


def run(field, recorder, *, method, t_end, dt, rtol=None, atol=None, progress=False, **backend_options):
    """Integrate with explicit Euler on Brian2's clock; see `pcsim.backends.brian2.runner.run`."""
    from pcsim.backends.brian2.runner import run as _run

    return _run(field, recorder, method=method, t_end=t_end, dt=dt, rtol=rtol, atol=atol, progress=progress,
                **backend_options)


def describe(field, *, dt: float, t_end: float) -> str:
    """The Brian2 equations the backend writes for a vector field (no Brian2 needed)."""
    from pcsim.backends.brian2.render import checked_steps, render

    return render(field, dt=dt, n_steps=checked_steps(t_end, dt)).describe()
