"""Adaptive solvers on torch (torchode): the same trajectory as scipy's DOP853, piecewise across switches."""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

import pcsim
from tests.dynamics.models import deep_tanh_problem

TIMES = [0.25, 0.5, 1.0, 2.0]


@pytest.fixture(scope="module")
def net():
    model, inputs, target = deep_tanh_problem(depth=3)
    return pcsim.trace(model, *inputs), inputs, target


@pytest.mark.parametrize("solver", [pcsim.Dopri5(rtol=1e-10, atol=1e-12), pcsim.Tsit5(rtol=1e-10, atol=1e-12)])
@pytest.mark.parametrize("tau_e", [0.0, 0.2])
def test_torch_adaptive_solvers_follow_scipy_dop853(net, solver, tau_e):
    """Onset at 0.3 and a gate opening at 0.7 are switches inside the run: each piece is solved on its own,
    so the plasticity integrated after the gate opens is scipy's too."""
    graph, inputs, target = net
    kw = dict(t_end=2.0, tau_x=0.5, tau_e=tau_e, t_on=0.3, plasticity=pcsim.after(0.7), record={"times": TIMES})
    ref = pcsim.simulate(graph, inputs, target, solver=pcsim.Scipy("DOP853", rtol=1e-12, atol=1e-14), **kw)
    got = pcsim.simulate(graph, inputs, target, solver=solver, **kw)
    np.testing.assert_allclose(got.t, TIMES, rtol=0, atol=0)
    assert got.meta["method"] == solver.method and got.meta["order"] == 5
    for name in graph.latent:
        np.testing.assert_allclose(got.values[name], ref.values[name], rtol=0, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(got.errors[name], ref.errors[name], rtol=0, atol=1e-9, err_msg=name)
    assert any(np.abs(u).max() > 1e-3 for u in ref.updates.values())  # the gate did open
    for p, u in ref.updates.items():
        np.testing.assert_allclose(got.updates[p], u, rtol=0, atol=1e-9, err_msg=p)


def test_the_tolerance_is_honoured(net):
    """Looser tolerance, larger error, both within a small multiple of what was asked for."""
    graph, inputs, target = net
    kw = dict(t_end=2.0, tau_x=0.5, record={"times": [2.0]})
    ref = pcsim.simulate(graph, inputs, target, solver=pcsim.Scipy("DOP853", rtol=1e-12, atol=1e-14), **kw)
    errors = []
    for tol in (1e-4, 1e-8):
        got = pcsim.simulate(graph, inputs, target, solver=pcsim.Dopri5(rtol=tol, atol=tol), **kw)
        errors.append(max(np.abs(got.values[n] - ref.values[n]).max() for n in graph.latent))
        assert errors[-1] < 100 * tol
    assert errors[1] < errors[0]


def test_named_and_refused(net):
    graph, inputs, target = net
    tr = pcsim.simulate(graph, inputs, target, backend="torch", method="tsit5", rtol=1e-6, atol=1e-8, t_end=1.0)
    assert tr.meta["backend"] == "torch" and tr.meta["method"] == "tsit5" and len(tr.t) == 21
    with pytest.raises(ValueError, match="not at each accepted step"):
        pcsim.simulate(graph, inputs, target, solver=pcsim.Dopri5(), t_end=1.0, record=pcsim.Record(every_step=True))
    with pytest.raises(ValueError, match="rtol must be > 0"):
        pcsim.Tsit5(rtol=0.0)


def test_scipy_solves_with_one_blas_thread(net):
    """numpy's BLAS threads would contend with torch's: the scipy backend limits them while it runs."""
    graph, inputs, target = net
    seen = []

    def gate(vertex, t):  # called inside every field evaluation
        seen.append(max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))
        return False
    pcsim.simulate(graph, inputs, target, solver=pcsim.Scipy("RK45"), t_end=0.5, plasticity=gate)
    assert seen and set(seen) == {1}


@pytest.mark.parametrize("tau_e,t", [(0.0, 1.0), (0.2, 1.0), (0.2, 0.0)])
def test_the_field_writes_every_component_into_a_flat_vector(net, tau_e, t):
    """The adaptive solvers' evaluation: `field(t, state, out=field.views(buf))` fills a flat vector in place
    (a buffer full of NaN: zeros are written too) with the literal equations' values, open gates
    and leaky errors included, before and after the target is shown."""
    from pcsim.algorithms.problem import Problem
    from pcsim.dynamics.field import VectorField
    from tests.dynamics.reference_field import literal_field

    graph, inputs, target = net
    field = VectorField(Problem.build(graph, inputs, target, "mse"), tau_x=0.7, tau_e=tau_e, t_on=0.5,
                        gate=pcsim.dynamics.Always())
    gen = torch.Generator().manual_seed(2)
    flat = 0.1 * torch.randn(field.size, generator=gen, dtype=torch.float64)
    buf = torch.full((field.size,), float("nan"), dtype=torch.float64)
    got = field(t, field.views(flat), out=field.views(buf))
    ref = literal_field(field, t, field.views(flat.clone()))
    assert set(got) == set(ref) == set(field.layout)
    assert all(got[k].data_ptr() == field.views(buf)[k].data_ptr() for k in field.layout)  # written in place
    assert bool(torch.isfinite(buf).all())
    for k in field.layout:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-12, msg=str(k))


def test_float32_snapshots_inside_steps_follow_scipy_dop853():
    """float32, recorded times falling inside steps (read from the step's interpolant) and on the switch,
    against scipy's DOP853 on the same network in float64 (the global error at 1e-5 is about 2e-4 here)."""
    model, inputs, target = deep_tanh_problem(depth=3, dtype=torch.float64)
    kw = dict(t_end=3.0, tau_x=0.5, t_on=0.3, record=pcsim.Record(snapshots=31))
    ref = pcsim.simulate(pcsim.trace(model, *inputs), inputs, target,
                         solver=pcsim.Scipy("DOP853", rtol=1e-10, atol=1e-12), **kw)
    model32, inputs32, target32 = model.float(), tuple(x.float() for x in inputs), target.float()
    graph = pcsim.trace(model32, *inputs32)
    for solver in (pcsim.Tsit5(rtol=1e-5, atol=1e-5), pcsim.Dopri5(rtol=1e-5, atol=1e-5)):
        got = pcsim.simulate(graph, inputs32, target32, solver=solver, **kw)
        np.testing.assert_allclose(got.t, ref.t, rtol=0, atol=1e-12)
        for name in graph.latent:
            np.testing.assert_allclose(got.values[name], ref.values[name], rtol=0, atol=50 * 1e-5, err_msg=name)


def test_a_float16_tolerance_overflow_is_named_and_a_coarser_atol_follows_scipy():
    """In float16 torchode's error norm, error / (atol + rtol |y|), overflows at the default atol from the
    first step (the displacements start at zero): this was reported as a blow-up ('try larger time
    constants'). It now names the overflow and the atol to use; at that atol the run follows DOP853 on the
    float64 copy of the same network to float16's resolution."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).half()
    x, y = torch.randn(2, 4).half(), torch.randn(2, 3).half()
    kw = dict(t_end=1.0, tau_x=0.5, record={"times": [1.0]})
    with pytest.raises(pcsim.SimulationError, match=r"overflows float16 .* pass atol >= 2e-04"):
        pcsim.simulate(pcsim.trace(model, x), (x,), y, solver=pcsim.Tsit5(), **kw)
    got = pcsim.simulate(pcsim.trace(model, x), (x,), y, solver=pcsim.Tsit5(rtol=1e-3, atol=1e-3), **kw)
    ref = pcsim.simulate(pcsim.trace(model.double(), x.double()), (x.double(),), y.double(),
                         solver=pcsim.Scipy("DOP853", rtol=1e-12, atol=1e-14), **kw)
    for n in ref.values:
        np.testing.assert_allclose(got.values[n][-1].astype(np.float64), ref.values[n][-1], rtol=0, atol=2e-2)
