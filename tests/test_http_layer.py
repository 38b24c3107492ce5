"""The HTTP layer's shape: one package per imitated API, each mounted by the app, and no network run from HTTP code."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from app.http.api import Api

HTTP = Path(__file__).resolve().parents[1] / "app" / "http"
FORBIDDEN = ("app.inference", "app.weights")  # networks and batchers are the service's; weights are set-up only


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.add(node.module or "")
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_http_modules_import_the_service_and_imaging_but_nothing_from_inference():
    files = sorted(HTTP.rglob("*.py"))
    assert len(files) > 20
    offending = {
        f"{path.relative_to(HTTP)}: {name}"
        for path in files
        for name in imported_modules(path)
        if name.startswith(FORBIDDEN)
    }
    assert offending == set()
    assert "app.service" in imported_modules(HTTP / "health.py")  # readiness comes from the service's summary


def test_every_api_package_is_mounted_once_and_routes_its_operations():
    from app.main import APIS

    packages = sorted(path.parent.name for path in HTTP.glob("*/__init__.py"))
    assert packages == ["azure", "rembg", "removebg"]
    mounted = {api.name: api for api in APIS}
    assert len(mounted) == len(APIS)
    for name in packages:
        api = importlib.import_module(f"app.http.{name}").api
        assert isinstance(api, Api) and mounted[api.name] is api
        routed = {route.path for route in api.router.routes}
        assert set(api.operation_paths) <= routed, name
        part = api.openapi()
        assert set(part["paths"]) <= routed and part["components"], name
