"""Where a captured node came from in the user's code.

torch.export records a stack trace per node (`node.meta["stack_trace"]`); the user's line is the
innermost frame outside torch and pcsim. The same rule picks the user's line out of an exception
raised while capturing (control flow on tensor values, a shape that does not fit).
"""

from __future__ import annotations

import functools
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

# torch's and pcsim's own folders: frames there are not the user's code
_LIBRARIES = (str(Path(torch.__file__).resolve().parent), str(Path(__file__).resolve().parents[1]))
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>[^\n]+)\n(?P<code>(?: {4}[^\n]*)?)')


@dataclass(frozen=True)
class UserLine:
    """One frame of the user's code."""

    file: str
    line: int
    function: str
    code: str

    @property
    def short(self) -> str:
        return f"{Path(self.file).name}:{self.line}"

    def __str__(self) -> str:
        text = f'File "{self.file}", line {self.line}, in {self.function}'
        return f"{text}\n    {self.code}" if self.code else text


@functools.lru_cache(maxsize=1024)
def _is_user(file: str) -> bool:
    try:
        resolved = str(Path(file).resolve())
    except (OSError, RuntimeError):
        resolved = file
    return not resolved.startswith(_LIBRARIES) and not file.startswith("<")


def user_stacklevel() -> int:
    """The `stacklevel` for a `warnings.warn` in the caller that names the first frame outside torch and pcsim:
    the user's call (a number written by hand went stale whenever a decorator or helper came in between)."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and not _is_user(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level


def user_line(stack_trace: str | None) -> UserLine | None:
    """The innermost user frame in an fx node's `stack_trace` text, or None."""
    if not stack_trace:
        return None
    users = [UserLine(m["file"], int(m["line"]), m["function"].strip(), m["code"].strip())
             for m in _FRAME.finditer(stack_trace) if _is_user(m["file"])]
    return users[-1] if users else None


def exception_user_line(error: BaseException) -> UserLine | None:
    """The innermost user frame of an exception's traceback, or None."""
    return user_line("".join(traceback.format_tb(error.__traceback__)))
