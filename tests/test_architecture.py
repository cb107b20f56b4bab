"""The package's layers (pyproject's import-linter contract, README's Architecture): checked on every run."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_each_layer_imports_only_from_the_layers_below():
    linter = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(linter), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _unit(module: str) -> str:
    """A subpackage (pcsim.algorithms) or a top-level module (pcsim.check): what may share private names."""
    parts = module.split(".")
    package = REPO.joinpath(*parts[:2])
    return ".".join(parts[:2]) if package.is_dir() else module


def test_no_private_name_is_imported_across_units():
    import ast

    taken = []
    for path in sorted((REPO / "pcsim").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        here = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pcsim"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private and _unit(node.module) != _unit(here):
                    taken.append(f"{path.relative_to(REPO)}:{node.lineno} takes {private} from {node.module}")
    assert not taken, "\n".join(taken)


def test_import_pcsim_leaves_the_optional_heavy_libraries_unimported():
    """The compiler (torch._inductor) and scipy's integrators are imported where used: at the top of their modules
    they took longer than pcsim's own import, for every `import pcsim` and every CLI call, `pcsim --help` too."""
    probe = ("import sys, pcsim, pcsim.cli; heavy = ('torch._inductor', 'scipy.integrate', 'scipy.sparse'); "
             "print([m for m in heavy if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
