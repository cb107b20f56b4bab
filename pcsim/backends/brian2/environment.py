"""Brian2's environment for one run: its preferences, the cpp_standalone device and where it builds,
the functions it lacks, and clocks in a fixed order. Brian2 itself is passed in (`b2`), never imported here."""

from __future__ import annotations

import hashlib
import importlib
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pcsim import paths
from pcsim.backends.brian2.activations import FUNCTIONS
from pcsim.backends.brian2.render import Network as Spec


class CythonFallbackWarning(UserWarning):
    """The cython target was asked for but no working compiler was found: numpy runs instead."""


def brian2_function(b2, name: str):
    """A Brian2 `Function` from its implementations declared as data in `activations.FUNCTIONS`."""
    impl = FUNCTIONS[name]
    module, attr = impl["numpy"].split(":")
    vectorised = getattr(importlib.import_module(module), attr)

    def pyfunc(x):  # a Python function (Brian2's numpy target reads its __globals__), around the ufunc
        return vectorised(x)

    pyfunc.__name__ = name
    f = b2.Function(pyfunc, arg_units=[1], return_unit=1, arg_types=["float"], return_type="float", stateless=True)
    for target in ("cython", "cpp"):
        code, cname = impl[target]
        f.implementations.add_implementation(target, code if target == "cython" else {"support_code": code},
                                             name=cname)
    return f


@contextmanager
def preferences(b2, target: str):
    """Set Brian2's preferences for one run (float64, the target, the cache) and restore them after."""
    prefs = b2.prefs
    keys = ["codegen.target", "core.default_float_dtype", "codegen.runtime.cython.cache_dir",
            "codegen.runtime.numpy.discard_units"]
    saved = {k: prefs[k] for k in keys}
    try:
        prefs["core.default_float_dtype"] = np.float64
        prefs["codegen.runtime.numpy.discard_units"] = True
        if target == "cython":
            directory = Path(os.environ.get("BRIAN2_CACHE_DIR") or paths.folder("build") / "brian2-cache") / "cython"
            directory.mkdir(parents=True, exist_ok=True)
            prefs["codegen.runtime.cython.cache_dir"] = str(directory)
            from brian2.codegen.runtime.cython_rt import CythonCodeObject

            try:
                compiles = bool(CythonCodeObject.is_available())
            except Exception:  # noqa: BLE001 - any failure of the test compilation means no cython
                compiles = False
            if not compiles:
                warnings.warn("brian2 target 'cython' needs a working C++ compiler and Cython, and the test "
                              "compilation failed; running on the 'numpy' target instead (same results, slower)",
                              CythonFallbackWarning, stacklevel=4)
                target = "numpy"
        prefs["codegen.target"] = "cython" if target == "cython" else "numpy"
        yield target
    finally:
        for k, v in saved.items():
            prefs[k] = v


@contextmanager
def standalone(b2, threads: int):
    """The cpp_standalone device for one build; re-initialised and swapped back afterwards."""
    from brian2.devices.device import all_devices, reset_device, set_device

    device = all_devices["cpp_standalone"]
    saved_threads = b2.prefs["devices.cpp_standalone.openmp_threads"]
    set_device("cpp_standalone", build_on_run=False)
    b2.prefs["devices.cpp_standalone.openmp_threads"] = threads
    try:
        yield device
    finally:
        b2.prefs["devices.cpp_standalone.openmp_threads"] = saved_threads
        device.reinit()
        reset_device()


class ByName(set):
    """A set that iterates in name order."""

    def __iter__(self):
        return iter(sorted(set.__iter__(self), key=lambda obj: obj.name))


def network_class(b2):
    """A Network whose clocks iterate in name order.

    Brian2 keeps a network's clocks in a set and writes code for them in its iteration order (by
    object id), which changes from one process to the next: cpp_standalone's main.cpp then differs
    on every build and is recompiled. Name order keeps standalone rebuilds incremental.
    """

    class Network(b2.Network):
        @property
        def _clocks(self):
            return self.__dict__.get("_pcsim_clocks", ByName())

        @_clocks.setter
        def _clocks(self, value):
            self.__dict__["_pcsim_clocks"] = ByName(value)

    return Network


def standalone_folder(spec: Spec, directory: str | None) -> Path:
    """`directory`, else one build folder per network structure (names and equations, not sizes), so a
    rebuild at another batch size recompiles only the files that changed."""
    if directory:
        return Path(directory)
    h = hashlib.sha1()
    for p in spec.populations.values():
        h.update(repr((p.name, p.equations, sorted(p.times), sorted(p.tables))).encode())
    for s in spec.projections:
        h.update(repr((s.name, s.pre, s.post, s.equations, sorted(s.times), sorted(s.tables))).encode())
    return paths.folder("build") / "brian2-standalone" / h.hexdigest()[:16]
