"""`simulate`: run the PC populations in continuous time on a backend; returns a Trajectory."""

from __future__ import annotations

import inspect
import warnings

from pcsim.algorithms.losses import Loss, get_loss
from pcsim.algorithms.problem import NO_TARGET, Problem
from pcsim.dynamics.discretise import zil_mismatch
from pcsim.dynamics.divergence import warn_if_diverged
from pcsim.dynamics.field import VectorField
from pcsim.dynamics.protocol import Windows, make_gate
from pcsim.dynamics.recording import Record, Recorder
from pcsim.dynamics.solver import SOLVERS, Solver, check_number, warn_if_long
from pcsim.dynamics.trajectory import Trajectory
from pcsim.graph.argument import takes_graph
from pcsim.graph.ir import Graph
from pcsim.graph.provenance import user_stacklevel
from pcsim.ops.local import records_autograd


@takes_graph
@records_autograd
def simulate(graph: Graph, inputs, target=None, *, solver: Solver | None = None, backend: str = "scipy",
             loss="mse", t_end: float = 10.0, tau_x=1.0, tau_e=0.0, tau_w: float | None = None, t_on: float = 0.0,
             method: str | None = None, dt: float | None = None, plasticity="off", record=None,
             rtol: float = 1e-8, atol: float = 1e-10, progress: bool = False, params=None, level: bool = True,
             **backend_options) -> Trajectory:
    """Integrate value and error populations from the feed-forward state at t = 0 to t_end.

    target: shown from t_on (None: never; the network stays at its feed-forward fixed point).
    tau_x, tau_e: time constants, a float or a dict per population; tau_e = 0 means instantaneous
        errors. tau_w: plasticity time constant (default: the smallest tau_x).
    solver: a solver object, e.g. pcsim.Euler(dt), pcsim.RK4(dt), pcsim.Scipy("LSODA", rtol=, atol=),
        pcsim.Brian2(dt, target="cython"). Without one, `backend` and `method` name a registered solver
        (`pcsim.SOLVERS`), built from dt, rtol, atol and backend_options: scipy's solve_ivp methods
        (RK45 by default) or 'euler' / 'rk4' with step dt; Euler on the other backends. dt also caps
        adaptive steps.
    plasticity: 'off', 'always', 'zil' (Z-IL windows at each vertex's level, following leaky
        errors' delay), a pcsim Gate (e.g. pcsim.after(t)), or a function (vertex, t) -> bool.
    record: a pcsim Record, a list of populations, or a dict of Record's fields; None: every population
        at a few evenly spaced times (`Record()`); every step is `Record(every_step=True)`.
    level: with plasticity='zil', level the graph first as `pcsim.zil` does (identity populations on
        edges that skip levels; `traj.meta["identity_populations"]` names them). Z-IL's windows equal
        BP's gradients only on a levelled graph: level=False runs the graph as traced, to study that.
    """
    named = solver is None
    if named and isinstance(method, Solver | type) and (not isinstance(method, type) or issubclass(method, Solver)):
        raise TypeError(f"method= takes a method's name ('euler', 'tsit5', 'RK45'); a solver object such as "
                        f"{method!r} goes to solver= (simulate(graph, inputs, target, solver=...))")
    if named:
        solver = SOLVERS.make(backend, method, dt=dt, rtol=rtol, atol=atol, **backend_options,
                              _suggest=_KEYWORDS)
    elif method is not None or dt is not None or backend_options:
        raise ValueError("pass either solver= or backend=/method=/dt= and backend options, not both")
    elif not isinstance(solver, Solver):
        what = f"the class {solver.__name__}: make one, e.g. {solver.__name__}(...)" if isinstance(solver, type) \
            else repr(solver)
        raise TypeError(f"solver= takes a solver object such as pcsim.Euler(dt), pcsim.Scipy('RK45') or pcsim.Tsit5() "
                        f"(a name goes to backend= and method=); got {what}")
    check_number(tau_x=tau_x, tau_e=tau_e)  # a number or a dict of them; the annotated settings are `checked`
    target_shown = target is not None
    t_on = t_on if target_shown else float(t_on)
    if not 0 < t_end < float("inf") or (target_shown and not t_end > t_on) or t_on < 0:
        raise ValueError(f"need 0 <= t_on < t_end < inf; got t_on = {t_on}, t_end = {t_end}")
    graph, added = _levelled(graph, plasticity, level)
    problem = Problem.build(graph, inputs, target if target_shown else NO_TARGET, loss, params)
    leaky = (max(tau_e.values()) if isinstance(tau_e, dict) else tau_e) > 0
    tau_x_min = min(tau_x.values()) if isinstance(tau_x, dict) else tau_x
    gate = make_gate(plasticity, t_on=t_on, dt=solver.step, tau_x=tau_x_min, leaky=leaky, graph=problem.graph)
    field = VectorField(problem, tau_x=tau_x, tau_e=tau_e, tau_w=tau_w, t_on=t_on, gate=gate,
                        target_shown=target_shown, grid=getattr(solver, "dt", None))
    if isinstance(gate, Windows) and target_shown:
        _warn_unfinished(gate, problem.graph, float(t_end))
        if plasticity == "zil" and solver.order == 1 and solver.step is not None:  # Euler: what discretise maps
            why = zil_mismatch(tau_x=tau_x, tau_e=tau_e, tau_w=field.tau_w, dt=solver.step)
            if why is not None:
                warnings.warn(f"plasticity='zil' at dt = {solver.step:g}: {why}", stacklevel=user_stacklevel())
        elif plasticity == "zil":  # RK4, scipy, adaptive: the ODE's own updates under the gates
            warnings.warn(f"plasticity='zil' with {type(solver).__name__} ({solver.method}): the updates are the ODE's "
                          "under Z-IL's gates, not BP's gradients; Euler at dt = tau_x is Z-IL, exactly",
                          stacklevel=user_stacklevel())
    recorder = Recorder(field, Record.parse(record), t_end)
    warn_if_long(solver, float(t_end), min([*field.tau_x.values(), *(field.tau_e[n] for n in field.leaky)]))
    final = solver.run(field, recorder, t_end=float(t_end), progress=progress)
    warn_if_diverged(field, final, solver.step)
    meta = {"dt": solver.step, **solver.meta(), "t_end": t_end, "t_on": t_on,
            "tau_x": tau_x, "tau_e": tau_e, "tau_w": field.tau_w, "target_shown": target_shown,
            "plasticity": plasticity if isinstance(plasticity, str) else type(gate).__name__,
            "loss": _loss_names(loss, problem)}
    meta.update({k: v for k, v in backend_options.items() if isinstance(v, str | int | float | bool)})
    if added is not None:
        meta["identity_populations"] = added
    unrecorded = [n for n in field.latent if n not in recorder.populations]
    if unrecorded:  # total_energy then covers part of F only, and says so
        meta["unrecorded_populations"] = unrecorded
    if named:  # as asked: scipy's fixed-step methods run torch's integrator on the field
        meta["backend"] = backend
    return recorder.trajectory(final, meta)


# what a misspelt backend option is matched against besides the solver's options (read once, not per call)
_KEYWORDS = tuple(inspect.signature(simulate).parameters)


def _loss_names(loss, problem: Problem):
    """`loss` as names for the record: one, or one per output."""
    return get_loss(loss).name if isinstance(loss, str | Loss) else [problem.losses[o].name
                                                                     for o in problem.graph.outputs]


def _warn_unfinished(gate: Windows, graph: Graph, t_end: float) -> None:
    """A run that ends before the last Z-IL window closes returns part of the updates: say which, and how long."""
    late = gate.unfinished(graph, t_end)
    if late:
        close, last = late[0]
        params = [p for _, n in late for p in graph[n].params]
        warnings.warn(f"t_end = {t_end:g} ends before the Z-IL windows of {len(late)} vertices with parameters close "
                      f"(the last, '{last}', at t = {close:.6g}): the updates of {len(params)} parameters "
                      f"({', '.join(repr(p) for p in params[:3])}{', ...' if len(params) > 3 else ''}) are partial, "
                      f"not BP's gradients; run to t_end >= {close:.6g} for all of them", stacklevel=user_stacklevel())


def _levelled(graph: Graph, plasticity, level: bool) -> tuple[Graph, list[str] | None]:
    """The graph Z-IL's windows need, and the identity populations levelling added (None: not asked)."""
    if not (isinstance(plasticity, str) and plasticity == "zil"):
        return graph, None
    if graph.is_levelled:
        return graph, []
    if not level:
        warnings.warn("plasticity='zil' on a graph that is not levelled (level=False): edges that skip levels "
                      "break Z-IL's schedule, so the updates are not BP's gradients", stacklevel=user_stacklevel())
        return graph, None
    levelled = graph.level()
    return levelled, [n for n in levelled.identity_vertices if n not in graph.identity_vertices]

