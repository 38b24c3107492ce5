"""Installed size of what each install of the project pulls in, measured on this environment's packages.

    python bench/install_size.py                                      # the project's extras, as make and the image install them
    python bench/install_size.py --torch-wheel /path/torch-*+cpu-*.whl # and a CPU torch wheel's installed size

For each set of requirements (``make serve``: ``.[convert,cpu]``; ``make test``: ``.[convert,cpu,test]``; the
old ``make serve``: ``.[convert,test]``; the image's runtime: the dependencies and, on the CPU image, the cpu
extra), the dependency closure is walked through the installed distributions' metadata and their
files' sizes (RECORD) are summed. The torch counted is the one installed here (PyPI's CUDA build on
Linux); ``--torch-wheel`` unpacks a CPU wheel into a temporary folder to weigh it instead. A venv's
own pip and setuptools are left out. No network: only what is installed is read.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions() -> dict[str, metadata.Distribution]:
    return {canonical(dist.metadata["Name"]): dist for dist in metadata.distributions()}


def size(dist: metadata.Distribution) -> int:
    total = 0
    for file in dist.files or ():
        try:
            total += file.locate().stat().st_size
        except OSError:
            pass
    return total


def closure(requirements: list[str], installed: dict[str, metadata.Distribution]) -> tuple[set[str], set[str]]:
    """The distributions ``requirements`` pull in (with extras and markers), and the names not installed here."""
    seen: set[str] = set()
    missing: set[str] = set()
    stack = [(Requirement(text), frozenset()) for text in requirements]
    while stack:
        requirement, _ = stack.pop()
        name = canonical(requirement.name)
        if name in seen:
            continue
        dist = installed.get(name)
        if dist is None:
            missing.add(name)
            continue
        seen.add(name)
        for text in dist.requires or ():
            child = Requirement(text)
            if child.marker is not None:
                environments = [{"extra": extra} for extra in requirement.extras] or [{"extra": ""}]
                if not any(Marker(str(child.marker)).evaluate(env) for env in environments):
                    continue
            stack.append((child, frozenset(child.extras)))
    return seen, missing


def project_requirements(extras: tuple[str, ...]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + [req for extra in extras for req in project["optional-dependencies"][extra]]


def wheel_installed_size(wheel: Path) -> int:
    with tempfile.TemporaryDirectory() as folder, zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder)
        return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch-wheel", type=Path, help="a CPU torch wheel, weighed in place of the installed torch")
    args = parser.parse_args()
    installed = distributions()
    mb = lambda n: n / 1e6  # noqa: E731
    torch_here = size(installed["torch"])
    cuda_libs = sum(size(dist) for name, dist in installed.items() if name.startswith("nvidia-") or name in ("triton", "cuda-bindings", "cuda-pathfinder"))
    sets = {
        "make serve before (.[convert,test])": ("convert", "test"),
        "make serve now (.[convert,cpu])": ("convert", "cpu"),
        "make test now (.[convert,cpu,test])": ("convert", "cpu", "test"),
        "image runtime, CUDA (dependencies)": (),
        "image runtime, CPU, before (dependencies)": (),
        "image runtime, CPU, now (dependencies + cpu)": ("cpu",),
    }
    rows = {}
    for label, extras in sets.items():
        names, missing = closure(project_requirements(extras), installed)
        total = sum(size(installed[name]) for name in names)
        rows[label] = (total, sorted(missing))
        print(f"{label:48s} {mb(total):8.0f} MB  ({len(names)} distributions{'; not installed here: ' + ', '.join(sorted(missing)) if missing else ''})")
    print(f"\nof which torch {mb(torch_here):.0f} MB ({installed['torch'].version}) and the CUDA libraries torch pulls in {mb(cuda_libs):.0f} MB")
    openvino = sum(size(installed[name]) for name in ("openvino", "openvino-telemetry") if name in installed)
    print(f"openvino + openvino-telemetry: {mb(openvino):.0f} MB")
    if args.torch_wheel:
        cpu_torch = wheel_installed_size(args.torch_wheel)
        print(f"\na CPU torch ({args.torch_wheel.name}): {mb(cpu_torch):.0f} MB installed, against {mb(torch_here + cuda_libs):.0f} MB for this torch with its CUDA libraries")
        for label, (total, _) in rows.items():
            if "CUDA" not in label:
                print(f"{label:48s} {mb(total - torch_here - cuda_libs + cpu_torch):8.0f} MB with the CPU torch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
