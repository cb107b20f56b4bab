"""pcsim/ops/products.py: oneDNN's products where MKL's GEMM is the slow one, against torch's own product.

The oracles: torch's `@` for the products, and the same rule run in float64 for IL and iPC, whose float32
runs must stay as close to it with packed weights as with torch's product. The CPU vendor is set by hand,
so the packed path runs on every machine whose torch has MKL and oneDNN.
"""

import pytest
import torch
from torch import nn

import pcsim
from pcsim.numerics import relative_difference, tolerance
from pcsim.ops import products
from tests.graph.helpers import seeded

pytestmark = pytest.mark.skipif(
    not (torch.backends.mkl.is_available() and torch.backends.mkldnn.is_available()
         and hasattr(torch.ops.mkldnn, "_linear_pointwise")), reason="this torch is built without MKL or oneDNN")
F32 = torch.float32


@pytest.fixture
def intel(monkeypatch):
    """intel(flag): the machine's CPU an Intel one (True) or an AMD one (False), as `packs` sees it."""
    return lambda flag: monkeypatch.setattr(products, "_cpu_vendor", lambda: "GenuineIntel" if flag else "AuthenticAMD")


def test_packed_products_equal_torch_products_to_float32_rounding():
    with seeded(0):
        w, a, b = torch.randn(7, 5, dtype=F32), torch.randn(3, 5, dtype=F32), torch.randn(3, 7, dtype=F32)
        bias = torch.randn(7, dtype=F32)
    packed = products.Packed(w, batch=3)
    assert relative_difference(packed.times_t(a), a @ w.t()) <= tolerance(F32)
    assert relative_difference(packed.times_t(a, bias), a @ w.t() + bias) <= tolerance(F32)  # IL's forward pass
    assert relative_difference(packed.times(b), b @ w) <= tolerance(F32)


@pytest.mark.parametrize("amd", [True, False])
def test_gram_is_the_batch_summed_outer_product(amd, intel):
    intel(not amd)
    with seeded(0):
        a, b = torch.randn(6, 4, dtype=F32), torch.randn(6, 3, dtype=F32)
    assert relative_difference(products.gram(a, b), sum(torch.outer(a[i], b[i]) for i in range(6))) <= tolerance(F32)


def test_only_float32_cpu_matrices_pack_and_only_on_amd_cpus(intel, monkeypatch):
    intel(False)
    assert products.packs(torch.zeros(3, 4, dtype=F32))
    assert not products.packs(torch.zeros(3, 4, dtype=torch.float64))  # oneDNN's linear is float32 here
    assert not products.packs(torch.zeros(4, dtype=F32))
    intel(True)  # MKL takes its fast path on Intel CPUs: torch's product stays
    assert not products.packs(torch.zeros(3, 4, dtype=F32))
    monkeypatch.setattr(products, "_cpu_vendor", lambda: "")  # no x86 vendor (ARM, macOS): no MKL to avoid
    assert not products.packs(torch.zeros(3, 4, dtype=F32))


def _mlp(dtype):
    with seeded(0):
        net = nn.Sequential(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3))
        x, y = torch.randn(8, 20), torch.randn(8, 3)
    return net.to(dtype), x.to(dtype), y.to(dtype)


RULES = {"il": lambda g, x, y: pcsim.il(g, (x,), y, steps=30, gamma=0.2),
         # a large lr: weights that moved since they were packed would show at once
         "ipc": lambda g, x, y: pcsim.ipc(g, (x,), y, steps=30, gamma=0.2, lr=0.05)}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_float32_run_with_packed_weights_is_as_close_to_float64_as_torchs_product(rule, intel):
    reference = RULES[rule](pcsim.trace(*_mlp(torch.float64)[:2]), *_mlp(torch.float64)[1:])
    net, x, y = _mlp(F32)
    graph = pcsim.trace(net, x)
    runs = {}
    for vendor in (False, True):  # packed, then torch's product
        intel(vendor)
        runs[vendor] = RULES[rule](graph, x, y)
    for name, ref in reference.items():  # (iPC's update is a difference of weights: float32 keeps few digits)
        plain = relative_difference(runs[True][name].double(), ref)
        packed = relative_difference(runs[False][name].double(), ref)
        assert packed <= 2 * plain + tolerance(F32) / 10, (name, packed, plain)
