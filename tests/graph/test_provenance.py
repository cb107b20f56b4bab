"""Errors name the user's line: unsupported ops, data-dependent control flow, failures on the inputs.

The expected line numbers come from the test's own source (`inspect`), never from pcsim's output.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import pcsim
from pcsim.graph.provenance import UserLine, user_line

THIS_FILE = __file__


def line_of(fn, text: str) -> int:
    """The line number of the first source line of `fn` containing `text`."""
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if text in line)


class Zeta(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        h = self.lin(x)
        return torch.special.zeta(h.exp() + 1.0, torch.tensor(2.0, dtype=h.dtype))


class Inner(nn.Module):
    def forward(self, h):
        return torch.igamma(h.exp(), torch.ones_like(h))


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.inner = nn.Linear(4, 4), Inner()

    def forward(self, x):
        return self.inner(self.lin(x))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        h = self.lin(x)
        if h.sum() > 0:
            return h
        return -h


class BadShapes(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.gru = nn.Linear(4, 4), nn.GRU(5, 3)

    def forward(self, x):
        return self.gru(self.lin(x).unsqueeze(0))[0]


def _x():
    return torch.randn(3, 4, dtype=torch.float64)


def _error(exc, module) -> str:
    with pytest.raises(exc) as info:
        pcsim.trace(module.double(), _x())
    return str(info.value)


# An op with no derivative: any op that reads a population is pulled back through, so it is refused.
def test_op_without_a_derivative_names_the_op_and_the_users_line():
    msg = _error(pcsim.UnsupportedOpError, Zeta())
    line = line_of(Zeta.forward, "torch.special.zeta")
    first = msg.splitlines()[0]
    assert "zeta" in first and f"test_provenance.py:{line}" in first and "derivative" in first
    assert f'File "{THIS_FILE}", line {line}, in forward' in msg
    assert "torch.special.zeta(h.exp() + 1.0" in msg
    assert "torch/" not in msg and "site-packages" not in msg


def test_op_without_a_derivative_inside_a_submodule_names_that_line():
    msg = _error(pcsim.UnsupportedOpError, Nested())
    assert "igamma" in msg.splitlines()[0]
    assert f"line {line_of(Inner.forward, 'torch.igamma')}, in forward" in msg
    assert "return torch.igamma(h.exp(), torch.ones_like(h))" in msg


def test_control_flow_on_tensor_values_names_the_line_and_what_to_do():
    msg = _error(pcsim.TraceError, DataDependent())
    line = line_of(DataDependent.forward, "if h.sum() > 0")
    assert f"test_provenance.py:{line}" in msg.splitlines()[0]
    assert "if h.sum() > 0:" in msg and "data-dependent" in msg and "*values* of a tensor" in msg
    assert "site-packages" not in msg


def test_module_failing_on_the_example_inputs_names_the_line():
    msg = _error(pcsim.TraceError, BadShapes())
    assert "example inputs" in msg
    assert f"test_provenance.py:{line_of(BadShapes.forward, 'self.gru(')}" in msg


def test_user_line_skips_torch_and_pcsim_frames():
    torch_file = torch.__file__
    text = (f'File "{THIS_FILE}", line 10, in forward\n    y = self.m(x)\n'
            f'  File "{torch_file}", line 5, in __call__\n    return f()\n')
    assert user_line(text) == UserLine(THIS_FILE, 10, "forward", "y = self.m(x)")
    assert user_line(f'File "{torch_file}", line 5, in f\n    g()\n') is None
    assert user_line(None) is None
    assert UserLine("/a/b/model.py", 3, "forward", "x").short == "model.py:3"


def _warnings_of(call) -> list:
    import warnings

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        call()
    return list(record)


def test_warnings_name_the_users_call_through_any_decorators():
    """A stacklevel written by hand went stale when a decorator came in between: simulate's and the analysis
    tools' warnings named pcsim/graph/argument.py:40. The oracle: this file, and the line of each call."""
    from pcsim.analysis import timing_sensitivity

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Dropout(0.5), nn.Linear(5, 3)).double().train()
    x, y = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    calls = {"trace (dropout)": lambda: pcsim.trace(net, x)}
    graph = pcsim.trace(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double(), x)
    calls["simulate (partial Z-IL window)"] = lambda: pcsim.simulate(graph, (x,), y, backend="torch", t_end=1.0,
                                                                       tau_x=1.0, dt=1.0, plasticity="zil")
    twice = nn.Linear(4, 4).double()
    calls["timing_sensitivity (shared rows)"] = lambda: timing_sensitivity(
        pcsim.trace(nn.Sequential(twice, nn.Tanh(), twice, nn.Tanh(), nn.Linear(4, 3)).double(), x), x, y,
        offsets=[0])
    for what, call in calls.items():
        record = _warnings_of(call)
        assert record, what
        assert {r.filename for r in record} == {THIS_FILE}, (what, [(r.filename, str(r.message)[:60]) for r in record])
