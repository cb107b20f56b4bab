"""Shared test settings: float64 by default, Matplotlib without a screen, the repository's zoo and figure
folders (pcsim looks for them under the current directory otherwise), Brian2's and inductor's caches in build/."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PCSIM_MODELS", str(ROOT / "models"))
os.environ.setdefault("PCSIM_FIGURES", str(ROOT / "figures"))
os.environ.setdefault("PCSIM_BUILD", str(ROOT / "build"))
os.environ.setdefault("BRIAN2_CACHE_DIR", str(ROOT / "build" / "brian2-cache"))
os.environ.setdefault("CYTHON_CACHE_DIR", str(ROOT / "build" / "cython-cache"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / "build" / "inductor-cache"))  # il(compile=True)
if os.environ.get("PYTEST_XDIST_WORKER"):  # one process per core already: more threads would oversubscribe
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _float64_default():
    """Tests run in float64 unless they ask otherwise; the previous default is restored."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def one_thread():
    """Small tensors: one torch thread is several times faster than two (no OpenMP hand-offs).
    Modules of small-tensor tests use it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
