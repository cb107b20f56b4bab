"""Tolerances scaled to the dtype, from one place (tests and `check` use the same numbers); finiteness."""

import math
from collections.abc import Hashable, Mapping

import torch

# The dtypes a user names by string (the CLI's --dtype, a training config's dtype).
DTYPES = {"float64": torch.float64, "float32": torch.float32}

# Relative tolerance for "equal to backprop up to rounding", per float dtype. float64's 1e-12 is
# about 4500 ulps, float32's 1e-5 about 84 ulps: room for reassociation across deep graphs.
_REL_TOL = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.bfloat16: 5e-2,
    torch.float16: 1e-2,
}


def float_dtype(dtype) -> torch.dtype:
    """`dtype` as the torch floating dtype it names: a torch.dtype with a tolerance, or its name ('float64'),
    refused here by name rather than inside nn.Module.to."""
    named = getattr(torch, dtype.removeprefix("torch."), None) if isinstance(dtype, str) else dtype
    if named not in _REL_TOL:
        raise ValueError(f"dtype must be a floating dtype, one of {', '.join(str(d) for d in _REL_TOL)} "
                         f"(or its name, 'float64'), got {dtype!r}")
    return named


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance within which a PC update counts as equal to BP's in `dtype` (a dtype or its name)."""
    return _REL_TOL[float_dtype(dtype)]


def relative_difference(got: torch.Tensor, ref: torch.Tensor, scale: float = 0.0) -> float:
    """||got - ref|| / ||ref||, the denominator floored at `scale` (for exactly-zero references)."""
    diff = torch.linalg.vector_norm((got - ref).double()).item()
    if diff != diff or diff == float("inf"):  # NaN or overflow: as far from equal as it gets
        return float("inf")
    norm = max(torch.linalg.vector_norm(ref.double()).item(), scale)
    if norm == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / norm


def rounding_floor(scale: float, dtype: torch.dtype) -> float:
    """The smallest gradient norm worth a relative comparison, given the largest one (`scale`).

    A parameter whose true gradient is zero (a key bias under softmax's shift invariance, say)
    gets rounding noise of order eps * scale from any method; measured against its own tiny norm
    that noise looks like a 100% error. Below this floor the difference is measured against the
    floor instead, which still fails anything more than a few ulps of `scale` off.
    """
    return scale * 4.0 * torch.finfo(dtype).eps / tolerance(dtype)


def deviation_and_angle(got: dict, ref: dict) -> tuple[float, float]:
    """(||got - ref|| / ||ref||, angle in degrees) over all parameters of `ref` taken as one vector."""
    a = torch.cat([got[n].reshape(-1).double() for n in ref])
    b = torch.cat([ref[n].reshape(-1).double() for n in ref])
    rel = float((a - b).norm() / b.norm()) if b.norm() > 0 else float((a - b).norm())
    cos = float(a @ b / (a.norm() * b.norm())) if a.norm() > 0 and b.norm() > 0 else 1.0
    return rel, float(torch.rad2deg(torch.arccos(torch.tensor(max(-1.0, min(1.0, cos))))))


def nonfinite(tensors: Mapping[Hashable, torch.Tensor]) -> list:
    """The keys of the tensors holding a NaN or an inf. NaN and inf survive a sum, so while everything is
    finite this costs one sum per tensor and one synchronisation; only then is each tensor looked at."""
    if not tensors or math.isfinite(torch.stack([v.sum().double() for v in tensors.values()]).sum().item()):
        return []
    return [k for k, v in tensors.items() if not bool(torch.isfinite(v).all())]  # empty: the sum overflowed


def nan_or_inf(t: torch.Tensor) -> str:
    """What a non-finite tensor holds, for a message: 'NaN' if any, else 'inf'."""
    return "NaN" if bool(torch.isnan(t).any()) else "inf"


def numpy_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a tensor of `dtype` takes on its way to NumPy: NumPy has no bfloat16, so float32, which holds
    every bfloat16 value exactly."""
    return torch.float32 if dtype == torch.bfloat16 else dtype


def to_numpy(t: torch.Tensor):
    """A detached CPU NumPy copy-or-view of `t`, in `numpy_dtype`."""
    return t.detach().cpu().to(numpy_dtype(t.dtype)).numpy()
