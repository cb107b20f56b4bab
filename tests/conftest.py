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


@pytest.fixture(scope="session")
def captured():
    """`captured(arch, dtype, loss) -> (module, inputs, target, graph)`: tests/equivalence's `ARCHS[arch](dtype, loss)`
    and its graph, traced once per worker for each (arch, dtype) (module and inputs do not depend on the loss, and
    capturing is most of a small test's time). For tests that only read them: no rule changes the module or graph."""
    import pcsim
    from tests.equivalence.archs import ARCHS

    graphs = {}

    def get(arch: str, dtype: torch.dtype = torch.float64, loss: str = "mse"):
        module, inputs, target = ARCHS[arch](dtype, loss)
        if (arch, dtype) not in graphs:
            graphs[arch, dtype] = module, inputs, pcsim.trace(module, *inputs)
        kept, kept_inputs, graph = graphs[arch, dtype]
        assert all(torch.equal(a, b) for a, b in zip(inputs, kept_inputs, strict=True)), "inputs depend on the loss"
        return kept, kept_inputs, target, graph
    return get


# -- xdist balance ------------------------------------------------------------------------------------------
# `make test` hands out whole files (`--dist loadfile`), by default in order of their number of tests, so the
# files of a few long tests (a property test, a smoke run, the notebooks, compiled code) came last, and one
# worker ran them alone at the end while the other had finished. These files go first, longest first (measured
# on 2 cores); every other file keeps xdist's order. The order decides only which worker runs a file, and when.
HEAVY_FILES = (
    "tests/backends/test_brian2.py",  # compiles Brian2's cython and cpp_standalone code
    "tests/algorithms/test_compiled.py",  # inductor
    "tests/backends/test_brian2_zoo.py",
    "tests/algorithms/test_il_compiled.py",  # inductor
    "tests/test_notebooks.py",  # one kernel per notebook
    "tests/benchmarks/test_device_check.py",  # the smoke run in a subprocess
    "tests/backends/test_torch_fused.py",  # inductor
    "tests/equivalence/test_random_dags.py",
    "tests/training/test_training.py",  # torchrun with two gloo processes
    "tests/cli/test_bench.py",
    "tests/figures/test_figures.py",
)


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from collections import OrderedDict

    from xdist.scheduler import LoadFileScheduling

    rank = {path: i for i, path in enumerate(HEAVY_FILES)}

    class HeavyFirstQueue(OrderedDict):
        """xdist's queue of files, which hands out the heaviest file left first (else the first in its order)."""

        def popitem(self, last=True):
            if last or not self:
                return super().popitem(last)
            scope = min(enumerate(self), key=lambda item: (rank.get(item[1], len(rank)), item[0]))[1]
            return scope, self.pop(scope)

    scheduler = LoadFileScheduling(config, log)
    scheduler.workqueue = HeavyFirstQueue()
    return scheduler
