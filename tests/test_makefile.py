"""The Makefile's set-up recipes, dry-run both ways (with and without TORCH_VARIANT), must be
shell that parses: a literal comma inside $(if ...) once split a recipe into an unterminated quote,
and CI only found out when `make test` died after five seconds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def dry_run(*variables: str) -> list[str]:
    """Commands `make` would run to set up a fresh checkout (-B: as if nothing were built yet)."""
    done = subprocess.run(
        ["make", "-n", "-B", ".venv/.tested", *variables],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    return [line for line in done.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("variables", [(), ("TORCH_VARIANT=cpu",)], ids=["default torch", "CPU torch"])
def test_every_setup_command_is_shell_that_parses(variables: tuple[str, ...]):
    commands = dry_run(*variables)
    assert any("pip install -e '.[convert,cpu]'" in c for c in commands)
    for command in commands:
        parsed = subprocess.run(["sh", "-n", "-c", command], capture_output=True, text=True)
        assert parsed.returncode == 0, f"{command!r}: {parsed.stderr}"


def test_torch_comes_from_the_cpu_index_only_when_asked():
    default, cpu = dry_run(), dry_run("TORCH_VARIANT=cpu")
    assert not any("--index-url" in c for c in default)
    torch_lines = [c for c in cpu if "--index-url" in c]
    assert len(torch_lines) == 1 and torch_lines[0].endswith("/cpu 'torch>=2.2,<=2.14.1'")
