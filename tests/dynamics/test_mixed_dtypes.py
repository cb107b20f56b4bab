"""A module whose populations compute in more than one dtype (Hugging Face's RMSNorm upcasts to float32 inside a float64
or bfloat16 model) runs in continuous time as it runs in torch: each population in its own dtype. The field's state held
every population in the first one's dtype and loaded a float64 displacement into the float32 norm, whose predictions
then left their feed-forward values: errors of 2e-6 at the fixed point, and a tiny Llama blew up to NaN by t = 2 on
every solver that evaluates the field (torch's Euler with fast=False or leaky errors, RK4, scipy),
with or without a target.

Oracles: torch autograd on the module (Z-IL at dt = tau_x gives its gradients); with no target the network stays at its
feed-forward state (README: continuous time), torch's forward pass on the module.
"""

import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import pcsim
from pcsim.numerics import tolerance


class UpcastNorm(nn.Module):
    """Linear, an RMSNorm computed in float32 (as transformers' LlamaRMSNorm does), tanh, Linear."""

    def __init__(self):
        super().__init__()
        self.inp, self.out = nn.Linear(3, 4), nn.Linear(4, 2)
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, 4))

    def forward(self, x):
        h = self.inp(x).to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.out(torch.tanh(self.weight * h.to(x.dtype)))


def _problem():
    gen = torch.Generator().manual_seed(0)
    module = UpcastNorm().double()
    x = 0.05 * torch.randn(2, 3, generator=gen, dtype=torch.float64)  # small activations: rsqrt is steep there
    return module, x, torch.randn(2, 2, generator=gen, dtype=torch.float64)


SOLVERS = [pcsim.Euler(0.5, fast=False), pcsim.SOLVERS.make("scipy", "euler", dt=0.5)]


@pytest.mark.parametrize("tau_e", [0.0, 0.5])
@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: f"{s.backend}-{s.method}")
def test_zil_on_a_float32_norm_in_a_float64_model_equals_autograd(solver, tau_e):
    module, x, y = _problem()
    graph = pcsim.trace(module, x)
    assert {graph[n].dtype for n in graph.latent} == {torch.float32, torch.float64}
    traj = pcsim.simulate(graph, (x,), y, solver=solver, tau_x=0.5, tau_e=tau_e, t_on=0.5, t_end=15.0,
                          plasticity="zil", record=[])
    loss = 0.5 * ((module(x) - y) ** 2).sum()
    grads = torch.autograd.grad(loss, list(module.parameters()))
    # the norm's float32 rounding is autograd's too: what Z-IL and autograd compute there agree to float64 rounding
    for (name, _), ref in zip(module.named_parameters(), grads, strict=True):
        got = torch.as_tensor(traj.updates[name])
        assert (got - ref).norm() <= tolerance(torch.float64) * ref.norm(), name


@pytest.mark.parametrize("solver", [*SOLVERS, pcsim.RK4(0.5), pcsim.Scipy("RK45")],
                         ids=lambda s: f"{s.backend}-{s.method}")
def test_with_no_target_a_mixed_dtype_network_stays_at_its_feedforward_state(solver):
    module, x, _ = _problem()
    graph = pcsim.trace(module, x)
    (out,) = graph.outputs
    traj = pcsim.simulate(graph, (x,), None, solver=solver, tau_x=0.5, t_end=10.0)
    with torch.no_grad():
        free = module(x).numpy()
    assert np.abs(traj.values[out] - free).max() <= tolerance(torch.float64) * np.abs(free).max()
    assert all(np.abs(e).max() == 0.0 for e in traj.errors.values())


def test_brian2_says_it_computes_the_narrow_populations_in_float64():
    # before: Brian2 rendered the float32 norm in float64 without a word; its Z-IL updates were 4e-8 relative off
    # autograd's (the torch and scipy backends: float64 rounding)
    module, x, y = _problem()
    graph = pcsim.trace(module, x).level()  # as simulate levels it
    narrow = [n for n in graph.latent if graph[n].dtype == torch.float32]
    kw = dict(tau_x=0.5, t_on=0.5, t_end=2.0, dt=0.5, method="euler", plasticity="zil", record=[])

    def said(g):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pcsim.simulate(g, (x,), y, backend="brian2", **kw)
        return [w for w in caught if "computes every population in float64" in str(w.message)]
    (warning,) = said(graph)
    assert warning.filename == __file__  # names the user's call
    assert re.search(rf"module computes '{narrow[0]}' \(float32\), .* and {len(narrow) - 4} more in a narrower "
                     r"dtype.*backend='torch' or 'scipy'", str(warning.message)), warning.message
    plain = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    assert said(pcsim.trace(plain, x)) == []  # one dtype: nothing to say
