"""Fixed-step paths converge to the scipy reference at their order; leaky errors tend to instant ones."""

import numpy as np
import pytest
import torch

import pcsim
from tests.dynamics.models import deep_tanh_problem

T_END = 1.0


def _final_values(graph, inputs, target, **kw):
    tr = pcsim.simulate(graph, inputs, target, t_end=T_END, tau_x=0.5, record={"times": [T_END]}, **kw)
    assert abs(tr.t[-1] - T_END) < 1e-12
    return np.concatenate([tr.values[n][-1].ravel() for n in graph.latent])


@pytest.fixture(scope="module")
def problem():
    model, inputs, target = deep_tanh_problem(depth=3)
    graph = pcsim.trace(model, *inputs)
    reference = _final_values(graph, inputs, target, method="DOP853", rtol=1e-11, atol=1e-12)
    return graph, inputs, target, reference


@pytest.mark.parametrize("method,order,steps", [("euler", 1, (40, 80, 160, 320)), ("rk4", 4, (10, 20, 40, 80))])
@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_fixed_step_order(problem, method, order, steps, backend):
    graph, inputs, target, reference = problem
    dts = [T_END / n for n in steps]
    errors = [np.abs(_final_values(graph, inputs, target, method=method, dt=dt, backend=backend) - reference).max()
              for dt in dts]
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.3, (slope, errors)


def test_leaky_errors_tend_to_instantaneous_ones(problem):
    graph, inputs, target, reference = problem
    gaps = [np.abs(_final_values(graph, inputs, target, tau_e=te, method="BDF", rtol=1e-10, atol=1e-12)
                   - reference).max() for te in (1e-1, 1e-2, 1e-3)]
    assert gaps[0] > gaps[1] > gaps[2], gaps
    assert gaps[2] < 0.02 * gaps[0], gaps


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_backend_on_cuda_matches_scipy(problem):
    _, _, _, reference = problem
    model, inputs, target = deep_tanh_problem(depth=3)
    model, inputs, target = model.cuda(), tuple(x.cuda() for x in inputs), target.cuda()
    graph = pcsim.trace(model, *inputs)
    tr = pcsim.simulate(graph, inputs, target, backend="torch", t_end=T_END, tau_x=0.5, method="rk4",
                        dt=T_END / 40, record={"times": [T_END]})
    got = np.concatenate([tr.values[n][-1].ravel() for n in graph.latent])
    assert np.abs(got - reference).max() < 1e-6  # RK4's error at this step, on the GPU
