"""Products with a weight matrix, `a @ W` and `a @ W^T`, through oneDNN where torch's own GEMM is slow.

torch's CPU float32 GEMM is MKL's, which picks a slow code path on AMD CPUs (benchmarks/results/kernels_cpu.md).
There IL packs each weight once per run (`Packed`) for its two products per linear vertex and step, and forms its
linear Hebbian terms through oneDNN too (`gram`); other CPUs, float64 and GPUs keep torch's product. The choice
depends on the machine alone, never on a timing, so one machine rounds a run the same way every time.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def _cpu_vendor() -> str:
    """The x86 vendor string of /proc/cpuinfo ("AuthenticAMD", "GenuineIntel"), "" where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")), "")
    except OSError:
        return ""


def packs(weight: torch.Tensor) -> bool:
    """Whether products with `weight` go through oneDNN: a float32 matrix on an AMD CPU, where torch's GEMM is
    MKL's (other CPUs, and torch builds without MKL, keep torch's product)."""
    return (weight.dtype == torch.float32 and weight.device.type == "cpu" and weight.dim() == 2
            and _cpu_vendor() == "AuthenticAMD" and torch.backends.mkl.is_available()
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class Packed:
    """W packed for oneDNN, each way on its first use (`batch`: the rows expected of `a`, a hint): fresh
    `a @ W^T` and `a @ W`. A copy of W: drop it once W changes."""

    __slots__ = ("_weight", "_batch", "_times", "_times_t")

    def __init__(self, weight: torch.Tensor, batch: int):
        self._weight, self._batch = weight, batch
        self._times = self._times_t = None

    def times_t(self, a: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self._times_t is None:  # a linear layer's weight: a @ W^T (+ bias)
            self._times_t = torch.ops.mkldnn._reorder_linear_weight(self._weight.contiguous(), self._batch)
        return torch.ops.mkldnn._linear_pointwise(a, self._times_t, bias, "none", [], "")

    def times(self, a: torch.Tensor) -> torch.Tensor:
        if self._times is None:
            self._times = torch.ops.mkldnn._reorder_linear_weight(self._weight.t().contiguous(), self._batch)
        return torch.ops.mkldnn._linear_pointwise(a, self._times, None, "none", [], "")


def gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a^T b for matrices with the same rows (a Hebbian term: outer products summed over the batch), through
    oneDNN where `packs` says so."""
    if not packs(a):
        return a.t().mm(b)
    return torch.ops.mkldnn._linear_pointwise(a.t().contiguous(), b.t().contiguous(), None, "none", [], "")
