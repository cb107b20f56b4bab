"""`Schedule`, the one object holding Z-IL's C2: steps per vertex, due sets, windows in time.

Oracles: distances counted by hand on a residual block, torch autograd on the module, and the
Euler grid k * dt (each vertex's window must hold exactly its own step's grid point).
"""

import pytest
import torch
from torch import nn

import pcsim
from pcsim import Schedule
from pcsim.check import autograd_gradients
from pcsim.numerics import relative_difference, tolerance

TOL = tolerance(torch.float64)
# The mutation tests' margin: a broken schedule misses BP by far more than rounding.
BROKEN = 1e-3


class Residual(nn.Module):
    """x -> a -> tanh -> b -> tanh_1 -> add -> c, with tanh skipping to add."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.c(torch.tanh(self.b(h)) + h)


# Edges to the output on the levelled graph, counted on the picture above: the skip edge
# tanh -> add becomes two identity vertices, so tanh sits at 4 and a at 5 on every path.
BY_HAND = {"c": 0, "add": 1, "tanh_1": 2, "tanh__level2": 2, "b": 3, "tanh__level3": 3, "tanh": 4, "a": 5}


@pytest.fixture(scope="module")
def residual():
    torch.manual_seed(0)
    module = Residual().double()
    x = torch.randn(5, 3, dtype=torch.float64)
    target = torch.randn(5, 2, dtype=torch.float64)
    return module, pcsim.trace(module, x).level(), (x,), target


def test_steps_and_due_sets_follow_the_distances_counted_by_hand(residual):
    _, graph, _, _ = residual
    schedule = Schedule.of(graph)
    assert schedule.steps == BY_HAND
    assert {n: schedule.step(n) for n in BY_HAND} == BY_HAND  # the README's per-vertex reading
    assert schedule.last == 5
    assert [schedule.due(t) for t in range(-1, 7)] == [
        set(), {"c"}, {"add"}, {"tanh_1", "tanh__level2"}, {"b", "tanh__level3"}, {"tanh"}, {"a"}, set()]
    leaky = Schedule.of(graph, leaky=True)
    assert leaky.steps == {n: 2 * d + 1 for n, d in BY_HAND.items()} and leaky.last == 11


def test_shifts_and_overrides_move_only_the_named_vertices(residual):
    _, graph, _, _ = residual
    schedule = Schedule.of(graph)
    late = schedule.shifted({"b": 1}).shifted({"b": 1, "a": -2})
    assert late.steps == {**BY_HAND, "b": 5, "a": 3}
    assert schedule.moved_to({"b": 7}).steps == {**BY_HAND, "b": 7}
    assert schedule.steps == BY_HAND  # frozen: shifting returns a new schedule
    with pytest.raises(ValueError, match="not in the graph"):
        schedule.shifted({"x": 1})  # the clamped input has no step
    # before: a vertex due at step -1 never updated, and zil returned zero for its parameters
    with pytest.raises(ValueError, match=r"before step 0, where they would never update: \{'b': -1\}"):
        schedule.moved_to({"b": -1})


def test_discretise_holds_the_rule_of_the_schedule(residual):
    _, graph, _, _ = residual
    instant = pcsim.discretise(tau_x=1.0, dt=1.0)
    leaky = pcsim.discretise(tau_x=1.0, dt=1.0, tau_e=1.0)
    assert instant.schedule.on(graph) == Schedule.of(graph)
    assert leaky.schedule.on(graph) == Schedule.of(graph, leaky=True)
    assert (leaky.first_step, leaky.steps_per_level, leaky.update_step(graph.depth)) == (1, 2, 11)


@pytest.mark.parametrize("t_on,dt", [(0.0, 0.25), (0.3, 0.1), (2.1, 0.7)])
def test_each_window_holds_exactly_its_own_euler_grid_point(residual, t_on, dt):
    """Euler evaluates the gate at t = k * dt (rounded): vertex v must be open at k = t_on / dt + step(v) only."""
    _, graph, _, _ = residual
    schedule = Schedule.of(graph, leaky=True)
    onset = round(t_on / dt)
    assert onset * dt == pytest.approx(t_on)
    for name, step in schedule.steps.items():
        start, stop = schedule.window(name, t_on, dt)
        open_at = [k for k in range(onset + schedule.last + 3) if start <= k * dt < stop]
        assert open_at == [onset + step], name


def test_zil_on_the_schedule_object_is_backprop_and_a_late_vertex_is_not(residual):
    module, graph, inputs, target = residual
    reference = autograd_gradients(module, inputs, target)
    schedule = Schedule.of(graph)
    got = pcsim.zil(graph, inputs, target, schedule=schedule)
    assert max(relative_difference(got[p], r) for p, r in reference.items()) <= TOL
    late = pcsim.zil(graph, inputs, target, schedule=schedule.shifted({"b": 1}))
    assert relative_difference(late["b.weight"], reference["b.weight"]) > BROKEN
    assert relative_difference(late["c.weight"], reference["c.weight"]) <= TOL  # the others keep their steps
    mapping = pcsim.zil(graph, inputs, target, schedule={"b": BY_HAND["b"] + 1})
    assert all(torch.equal(mapping[p], late[p]) for p in late)
    unlevelled = pcsim.trace(module, *inputs)  # its skip edge has no identity vertices: other distances
    with pytest.raises(ValueError, match="another graph"):
        pcsim.zil(graph, inputs, target, schedule=Schedule.of(unlevelled))


@pytest.mark.parametrize("shift", [0, 1], ids=["on-time", "one-step-late"])
def test_leaky_euler_on_the_2d_plus_1_schedule_is_backprop_and_one_step_late_is_not(residual, shift):
    """The same Schedule, as a continuous-time gate: with leaky errors at tau_e = dt it gives BP's gradients."""
    module, graph, inputs, target = residual
    dt = 0.25
    schedule = Schedule.of(graph, leaky=True)
    schedule = schedule.shifted(dict.fromkeys(schedule.levels, shift))
    gate = pcsim.dynamics.Windows(schedule, t_on=0.0, width=dt)
    tr = pcsim.simulate(graph, inputs, target, t_end=(schedule.last + 1) * dt, tau_x=dt, tau_e=dt, method="euler",
                        dt=dt, plasticity=gate, record=[])
    reference = autograd_gradients(module, inputs, target)
    worst = max(relative_difference(torch.as_tensor(tr.updates[p]), r) for p, r in reference.items())
    assert worst <= TOL if shift == 0 else worst > BROKEN


def test_a_fraction_of_a_step_is_refused(residual):
    # before: 'b' shifted by 0.5 matched no step, so zil gave its parameters a zero update, silently
    _, graph, _, _ = residual
    schedule = Schedule.of(graph)
    with pytest.raises(ValueError, match=r"offset of vertex 'b' must be a whole number of steps, got 0.5"):
        schedule.shifted({"b": 0.5})
    with pytest.raises(ValueError, match=r"step of vertex 'b' must be a whole number of steps, got 3.5"):
        schedule.moved_to({"b": 3.5})
    assert schedule.shifted({"b": torch.tensor(1)}).steps["b"] == BY_HAND["b"] + 1  # an integer tensor is whole


@pytest.mark.parametrize("setting", [dict(first=-1), dict(per_level=-1), dict(first="0"), dict(per_level=0.5),
                                     dict(first=True)])
def test_a_negative_or_non_whole_clock_is_refused_by_name(residual, setting):
    # before: per_level=-1 was taken (its levels due before step 0: zero updates, silently), first='0' failed
    # inside `steps` with Python's TypeError
    _, graph, _, _ = residual
    with pytest.raises(ValueError, match=rf"Schedule's {next(iter(setting))} must be a whole number of steps >= 0"):
        Schedule(**setting).on(graph)
    assert Schedule(first=2, per_level=3).on(graph).steps == {n: 2 + 3 * d for n, d in BY_HAND.items()}
