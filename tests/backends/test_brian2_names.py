"""Brian2 names its objects after the vertices, and takes ASCII identifiers alone: a module attribute may be any Python
identifier (`self.ñame`), which stopped the backend with Brian2's 'Name p3_ñame not valid variable name'.

Oracle: torch autograd on the module (Z-IL at dt = tau_x gives its gradients).
"""

import numpy as np
import torch

import pcsim
from pcsim.numerics import tolerance
from tests.backends.brian2_oracle import quiet_pyparsing

pytestmark = quiet_pyparsing


class Named(torch.nn.Module):
    """Attribute names Brian2 cannot take as they are: non-ASCII letters, a digit first in a ModuleDict key."""

    def __init__(self):
        super().__init__()
        self.enc = torch.nn.ModuleDict({"0a": torch.nn.Linear(3, 4)})
        self.ñame = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.ñame(torch.tanh(self.enc["0a"](x)))


def test_non_ascii_attribute_names_render_and_give_autograds_gradients():
    gen = torch.Generator().manual_seed(0)
    module = Named().double()
    x = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 2, generator=gen, dtype=torch.float64)
    graph = pcsim.trace(module, x)
    assert "ñame" in graph.latent
    tr = pcsim.simulate(graph, (x,), y, solver=pcsim.Brian2(1.0), t_end=4.0, tau_x=1.0, plasticity="zil",
                        record=[])
    loss = 0.5 * ((module(x) - y) ** 2).sum()
    names = [n for n, _ in module.named_parameters()]
    for name, ref in zip(names, torch.autograd.grad(loss, list(module.parameters())), strict=True):
        err = np.abs(tr.updates[name] - ref.numpy()).max() / ref.abs().max().item()
        assert err <= 10 * tolerance(torch.float64), name
