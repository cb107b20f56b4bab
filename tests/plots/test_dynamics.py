"""pcsim.plots.dynamics: a figure asked for what the trajectories lack says what they hold."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import pcsim  # noqa: E402
from pcsim.plots.dynamics import plot_backends, plot_trajectory  # noqa: E402


@pytest.fixture(scope="module")
def runs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x, y = torch.randn(5, 3), torch.randn(5, 2)
    graph = pcsim.trace(net, x)
    every = pcsim.simulate(graph, (x,), y, t_end=0.5, method="RK45")
    return every, pcsim.simulate(graph, (x,), y, t_end=0.5, method="RK45", record=["0"])


def test_a_float32_trajectory_and_one_population_by_name_are_drawn(runs):
    fig = plot_trajectory(runs[0], populations="0", sample=-1)  # a name alone, not its letters
    assert len(fig.axes) == 2


@pytest.mark.parametrize("call, error, message", [
    # before: numpy's 'index 7 is out of bounds for axis 1 with size 5'
    (lambda every, some: plot_trajectory(every, sample=7), ValueError,
     "sample 7 is outside population '0' of trajectory 'scipy RK45', which holds 5 samples"),
    # before: KeyError 'nope'; a name given as a string: KeyError 'n', its first letter
    (lambda every, some: plot_trajectory(every, populations="nope"), ValueError,
     r"trajectory 'scipy RK45' has no population 'nope'; it recorded \['0', '1', '2'\]"),
    # before: KeyError '1' from the second trajectory, which recorded one population
    (lambda every, some: plot_backends({"all": every, "some": some}), ValueError,
     r"trajectory 'some' has no population '1', '2'; it recorded \['0'\]"),
    # before: empty panels and matplotlib's 'No artists with labels found to put in legend'
    (lambda every, some: plot_trajectory(every, neurons=0), ValueError, "neurons must be >= 1, got 0"),
    # before: AttributeError: 'dict' object has no attribute 'meta'
    (lambda every, some: plot_trajectory({"t": 1}), TypeError, "trajectory 'trajectory' is a dict, not a pcsim"),
])
def test_what_the_trajectories_lack_is_refused_by_name(runs, call, error, message):
    with pytest.raises(error, match=message):
        call(*runs)
