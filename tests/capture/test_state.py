"""A buffer forward() registers itself (a lazily built cache) is left as the module had it before the trace.

x-transformers' ALiBi bias registers its bias in forward(); torch.export left a fake tensor there, and the next call
of the module (check's autograd oracle) stopped inside torch. The oracle is autograd on the module itself.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import pcsim
from tests.graph.helpers import DT, TOL, seeded

pytestmark = pytest.mark.usefixtures("one_thread")


class LazyBias(nn.Module):
    """An ALiBi-style distance bias built on first use and kept as a buffer."""

    def __init__(self, prebuilt: int = 0):
        super().__init__()
        self.register_buffer("slope", torch.tensor(0.5), persistent=False)
        self.register_buffer("bias", None, persistent=False)
        if prebuilt:  # a cache too short for the inputs: forward() registers a longer one
            self._build(prebuilt)

    def _build(self, n: int):
        pos = torch.arange(n, dtype=self.slope.dtype)
        self.register_buffer("bias", -(pos[None, :] - pos[:, None]).abs() * self.slope, persistent=False)

    def forward(self, n: int):
        if self.bias is None or self.bias.shape[-1] < n:
            self._build(n)
        return self.bias[:n, :n]


class Attention(nn.Module):
    # the bias is a submodule's, as in x-transformers (on the root module itself torch.export copies a buffer
    # registered in forward() into another of the graph's inputs, a bug of its own)
    def __init__(self, dim: int = 4, prebuilt: int = 0):
        super().__init__()
        self.q, self.k = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.alibi = LazyBias(prebuilt)

    def forward(self, x):
        scores = self.q(x) @ self.k(x).transpose(1, 2) / math.sqrt(x.shape[-1]) + self.alibi(x.shape[1])
        return torch.softmax(scores, -1) @ x


def _autograd(module, x, y):
    module.zero_grad()
    (0.5 * ((module(x) - y) ** 2).sum()).backward()
    return {n: p.grad.clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("prebuilt", [0, 2])
def test_a_buffer_registered_in_forward_is_left_as_it_was(prebuilt):
    with seeded(0):
        module = Attention(prebuilt=prebuilt).to(DT)
        x, y = torch.randn(2, 5, 4, dtype=DT), torch.randn(2, 5, 4, dtype=DT)
    before = dict(module.named_buffers())
    graph = pcsim.trace(module, x)
    after = dict(module.named_buffers())
    assert after.keys() == before.keys() and all(after[k] is v for k, v in before.items())
    # the graph's updates are autograd's on the module (a copy: a real call registers the longer cache, a buffer
    # replaced since the trace, which the rules refuse), and so are check's, which copies the module itself
    grads = pcsim.zil(graph, (x,), y)
    reference = _autograd(copy.deepcopy(module), x, y)
    for rule in ("zil", "fa-zil-wavefront", "fa-zil-autonomous"):
        rep = pcsim.check(module, (x,), y, rule=rule, dtype=DT)
        assert rep.passed and rep.max_rel_diff <= TOL, rep.table()
    for n, ref in reference.items():
        torch.testing.assert_close(grads[n], ref, rtol=TOL, atol=TOL * ref.abs().max().item())


class RootBias(Attention):
    """The bias registered on the traced module itself, as LazyBias does on its own."""

    def __init__(self):
        super().__init__()
        self.register_buffer("slope", torch.tensor(0.5), persistent=False)
        self.register_buffer("bias", None, persistent=False)

    def forward(self, x):
        LazyBias.forward(self, x.shape[1])
        return super().forward(x)

    _build = LazyBias._build


def test_a_buffer_registered_in_forward_on_the_traced_module_itself_is_refused_by_name():
    # torch.export copies such a buffer into the input in its index's place: x here, whose shape it does not fit,
    # and torch's 'expand: attempting to expand a dimension of length 5 -> 4' was all the user read
    with seeded(0):
        module = RootBias().to(DT)
        x = torch.randn(2, 5, 4, dtype=DT)
    with pytest.raises(pcsim.TraceError, match="registers buffer 'bias' on the module itself"):
        pcsim.trace(module, x)
    assert module.bias is None
