"""Where the project's folders are: an explicit setting, else a folder of the current directory.

pcsim never looks for them next to its own files (an installed package has no repository around
it). Each folder is, first to last: what a command-line flag set (`using`), the environment
variable, `./<default>` (the README's commands run from the repository root).

    models   the zoo              --models-dir DIR   $PCSIM_MODELS   ./models
    figures  the figure scripts   --dir DIR          $PCSIM_FIGURES  ./figures  (of `pcsim figures`)
    build    caches and builds                       $PCSIM_BUILD    ./build  (Brian2's cache: $BRIAN2_CACHE_DIR)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pcsim.errors import PcsimError

# folder -> (environment variable, command-line flag or None, default under the current directory)
SETTINGS = {"models": ("PCSIM_MODELS", "--models-dir DIR", "models"),
            "figures": ("PCSIM_FIGURES", "--dir DIR", "figures"),
            "build": ("PCSIM_BUILD", None, "build")}
_flags: dict[str, Path] = {}  # what `using` set, for the duration of one command


class FolderNotFound(PcsimError, FileNotFoundError):
    """A project folder (the zoo, the figure scripts) does not exist where its setting points."""


@contextmanager
def using(**folders: str | os.PathLike | None) -> Iterator[None]:
    """Within the block, `folder(name)` is the given path (a command-line flag); None leaves a folder alone."""
    unknown = set(folders) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown project folder(s) {sorted(unknown)}; known: {sorted(SETTINGS)}")
    saved = dict(_flags)
    _flags.update({k: Path(v).expanduser() for k, v in folders.items() if v is not None})
    try:
        yield
    finally:
        _flags.clear()
        _flags.update(saved)


def folder(name: str, *, must_exist: bool = False) -> Path:
    """The folder `name` ("models", "figures", "build") from its setting; with must_exist, a clear
    FolderNotFound that names the setting to use when it is not there."""
    variable, flag, default = SETTINGS[name]
    hint = ""
    if name in _flags:
        path = _flags[name]
        source = f"{flag.split()[0]} {path}" if flag else str(path)
    elif os.environ.get(variable):
        path = Path(os.environ[variable]).expanduser()
        source = f"${variable}={os.environ[variable]}"
    else:
        path = Path(default)
        source = f"./{default} (the default) in {Path.cwd()}"
        hint = "run from the repository root, "
    if must_exist and not path.is_dir():
        how = " or ".join([f"set {variable}=DIR"] + ([f"pass {flag}"] if flag else []))
        raise FolderNotFound(f"no {name} folder: {source} is not a directory; {hint}{how}")
    return path
