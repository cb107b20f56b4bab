"""Execute the notebooks (jupytext percent sources, notebooks/*.py) in a Jupyter kernel; write .ipynb beside them.

    python notebooks/_execute.py                 # every notebook, full size, writes notebooks/NAME.ipynb
    python notebooks/_execute.py --small quickstart zil_zoo   # small sizes (PCSIM_NOTEBOOK_SMALL=1)
    python notebooks/_execute.py --no-write ...  # run only

The kernel is IPython on this very interpreter (sys.executable -m ipykernel_launcher), so nothing has to be
registered with Jupyter: the spec is made here, not looked up. Cells run from the repository root (the zoo
is ./models), and a cell that raises stops the run with a CellExecutionError that shows the cell and its
traceback. `make notebooks` runs this; tests/test_notebooks.py calls `execute` at small size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KERNEL = "python3"  # what the written .ipynb names: a reader's own Python 3 kernel opens them
# what Jupyter shows a reader; the kernel that runs here is this interpreter whatever the name
KERNELSPEC = {"name": KERNEL, "display_name": "Python 3 (ipykernel)", "language": "python"}


def sources() -> list[Path]:
    """The notebooks' jupytext sources (files starting with '_' are tooling, like this one)."""
    return sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_"))


class ThisPython(KernelSpecManager):
    """Every kernel name is IPython on the interpreter running this file."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                          display_name=KERNELSPEC["display_name"], language="python", resource_dir=str(HERE))


def execute(path: Path, *, small: bool, timeout: int = 900, env: dict[str, str] | None = None):
    """Run one notebook source top to bottom in a fresh kernel; returns (the executed notebook, seconds).

    env: extra environment for the kernel (on top of this process's). Raises nbclient's CellExecutionError
    (the failing cell and its traceback) or DeadKernelError."""
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    kernel_env = dict(os.environ)
    kernel_env.pop("PCSIM_NOTEBOOK_SMALL", None)
    if small:
        kernel_env["PCSIM_NOTEBOOK_SMALL"] = "1"
    # figures as PNG outputs (an inherited MPLBACKEND=Agg would leave only their text repr)
    kernel_env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    kernel_env.update(env or {})
    # Unix sockets rather than TCP on localhost, in a folder of this kernel's own (left alone, jupyter_client
    # names them ./kernel-ipc-N, and two kernels started at once, as under pytest-xdist, take each other's)
    sockets = Path(tempfile.mkdtemp(prefix="pcsim-kernel-"))
    try:
        km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=ThisPython(), transport="ipc",
                           ip=str(sockets / "k"))
        client = NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(ROOT)}})
        start = time.perf_counter()
        client.execute(env=kernel_env, cleanup_kc=True)  # shut the kernel down even though `km` is ours
        return nb, time.perf_counter() - start
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="notebooks to run (default: all)")
    p.add_argument("--small", action="store_true", help="small sizes, as the test suite runs them")
    p.add_argument("--no-write", action="store_true", help="do not write the executed .ipynb")
    args = p.parse_args(argv)
    paths = sources()
    if args.names:
        known = {p.stem: p for p in paths}
        missing = sorted(set(args.names) - set(known))
        if missing:
            p.error(f"unknown notebook(s) {missing}; known: {sorted(known)}")
        paths = [known[n] for n in args.names]
    for path in paths:
        nb, seconds = execute(path, small=args.small)
        where = path.with_suffix(".ipynb")
        if not args.no_write:
            nbformat.write(nb, where)
        print(f"{path.name:28} {seconds:6.1f} s" + ("" if args.no_write else f"  -> {where.relative_to(ROOT)}"),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
