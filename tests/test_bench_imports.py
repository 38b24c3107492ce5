"""The benches still load against today's app: a rename in app/ must not leave a documented bench command broken.

The benches run by hand, rarely in CI, so an import of a renamed helper (as bench/refine_methods.py's ``_floats`` was)
would surface only when someone next reproduces a table. Every ``from app... import name`` in bench/, at any depth
(benches import lazily inside functions too), must name something that exists, and every bench module must import.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHES = sorted((ROOT / "bench").glob("*.py"))


def app_imports(path: Path) -> list[tuple[str, str, int]]:
    """(module, name, line) for every ``from app... import name`` in the file, wherever it sits."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "app":
            found.extend((node.module, alias.name, node.lineno) for alias in node.names)
    return found


def test_the_benches_are_found():
    assert len(BENCHES) > 20 and any(p.name == "refine_methods.py" for p in BENCHES)


@pytest.mark.parametrize("path", BENCHES, ids=lambda p: p.name)
def test_every_app_name_a_bench_imports_exists(path: Path):
    missing = []
    for module, name, line in app_imports(path):
        target = importlib.import_module(module)
        if name != "*" and not hasattr(target, name):
            try:  # a submodule imported by name (from app.inference import matting)
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{path.name}:{line}: {module}.{name}")
    assert not missing, "bench imports names app/ no longer has:\n" + "\n".join(missing)


def test_every_bench_module_imports():
    """In one fresh interpreter; a third-party package that is not installed (a bench extra) is not a failure."""
    script = (
        "import importlib, sys\n"
        "sys.path[:0] = ['bench', '.']\n"
        "failed = []\n"
        f"for stem in {[p.stem for p in BENCHES]!r}:\n"
        "    try:\n"
        "        importlib.import_module(stem)\n"
        "    except ModuleNotFoundError as error:\n"
        "        if (error.name or '').split('.')[0] in ('app', 'bench') or error.name == stem:\n"
        "            failed.append(f'{stem}: {error!r}')\n"
        "    except Exception as error:\n"
        "        failed.append(f'{stem}: {error!r}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
