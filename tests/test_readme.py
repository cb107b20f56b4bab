"""The README's examples are run, and its command lines parsed, so that the docs cannot drift from the code.

Every ```python block runs, in order, in one namespace (a fragment that is not meant to run is fenced
without a language). Every `pcsim ...` line, in the command synopsis and in the shell examples, names a
command that exists and flags that command accepts, with the choices it offers.
"""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    """The fenced blocks opened with ```language (language "" for a bare fence)."""
    blocks, current, opened = [], None, None
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current, opened = [], line[3:].strip()
            else:
                if opened == language:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _command_lines() -> list[str]:
    """Each `pcsim ...` invocation in the synopsis and the shell blocks, its continuation lines joined."""
    lines = []
    for block in _blocks("") + _blocks("bash"):
        for raw in block.splitlines():
            text = raw.split("#")[0].strip()
            if re.match(r"(pcsim|torchrun .*-m pcsim) ", text):
                lines.append(text[text.index("pcsim"):])
            elif lines and raw.startswith(" ") and text.startswith("["):  # a synopsis continuation
                lines[-1] += " " + text
    return lines


@pytest.mark.slow
def test_every_python_example_in_the_readme_runs(tmp_path, monkeypatch):
    blocks = _blocks("python")
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)  # the examples write their files (run.npz) where they run
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)  # noqa: S102 - the docs' own code


def test_every_command_line_in_the_readme_uses_flags_its_command_has():
    from pcsim.cli import COMMANDS, _parser

    subparsers = _parser()._subparsers._group_actions[0].choices
    lines = _command_lines()
    assert {line.split()[1] for line in lines} == set(COMMANDS), "the synopsis shows every command"
    for line in lines:
        command = line.split()[1]
        options = {s: a for a in subparsers[command]._actions for s in a.option_strings}
        for flag, choices in re.findall(r"(--[a-z][a-z0-9-]*)(?:[ =]([a-z0-9_-]+(?:\|[a-z0-9_-]+)+))?", line):
            assert flag in options, f"README: `pcsim {command}` has no flag {flag}: {line}"
            if choices:
                assert set(choices.split("|")) == set(options[flag].choices), (line, options[flag].choices)
