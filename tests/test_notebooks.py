"""Every notebook (jupytext percent-format notebooks/*.py) runs top to bottom in a Jupyter kernel, at small size.

The kernel is IPython on this interpreter (notebooks/_execute.py makes its spec; nothing is registered with
Jupyter). Cells assert what they show, so a notebook that runs is a notebook whose claims held; a failing
cell fails its test with nbclient's CellExecutionError, which holds the cell's source and traceback."""

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("nbclient")
pytest.importorskip("jupytext")
pytest.importorskip("ipykernel")

_spec = importlib.util.spec_from_file_location(
    "notebook_execute", Path(__file__).resolve().parent.parent / "notebooks" / "_execute.py")
execute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", execute.sources(), ids=lambda p: p.stem)
def test_notebook_runs_in_a_kernel(path):
    # the kernel takes this worker's torch threads (one per xdist worker): two kernels on two cores
    threads = str(torch.get_num_threads())
    nb, seconds = execute.execute(path, small=True, env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    print(f"{path.stem}: {seconds:.1f} s")


def test_a_failing_cell_fails_with_its_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("# %%\nx = 1\n\n# %%\nassert x == 2, 'the cell says x is not 2'\n")
    with pytest.raises(Exception, match="the cell says x is not 2") as info:
        execute.execute(bad, small=True)
    assert type(info.value).__name__ == "CellExecutionError" and "assert x == 2" in str(info.value)
