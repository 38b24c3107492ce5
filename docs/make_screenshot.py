"""Remake docs/web-page.png: the page after a backgroundRemoval run on scikit-image's astronaut (public domain).

A one-off, run by hand from the repository root with the project's venv:

    .venv/bin/pip install selenium scikit-image   # not project dependencies
    .venv/bin/python docs/make_screenshot.py

It starts the service with the full model on CPU and drives Debian's chromium through chromedriver.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait
from skimage.data import astronaut

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "web-page.png"
WIDTH = 1280
MAX_BYTES = 300_000
CHROMIUM_FLAGS = (
    "--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run"
    " --disable-background-networking --disable-component-update --disable-sync"
).split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGR_")}
    env.update({"BGR_HOST": "127.0.0.1", "BGR_PORT": str(port), "BGR_DEVICE": "cpu"})
    process = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health/ready", timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    sys.exit(f"the server was not ready in time:\n{log.read_text()}")


def browser(profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},900", "--force-color-profile=srgb"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


def shrink(png: bytes) -> bytes:
    """Quantise (then narrow, if need be) until the file is small enough for the README."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    if buffer.tell() <= MAX_BYTES:
        return buffer.getvalue()
    while True:
        buffer = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buffer, "PNG", optimize=True)
        if buffer.tell() <= MAX_BYTES or image.width < 700:
            return buffer.getvalue()
        image = image.resize((image.width * 9 // 10, image.height * 9 // 10), Image.Resampling.LANCZOS)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        photo = tmp_path / "astronaut.jpg"
        Image.fromarray(astronaut()).save(photo, quality=92)
        process, url = start_server(tmp_path / "server.log")
        driver = browser(tmp_path / "profile")
        try:
            driver.get(url + "/")
            driver.find_element("id", "file-input").send_keys(str(photo))
            driver.find_element("id", "run-button").click()
            WebDriverWait(driver, 120).until(lambda d: d.find_element("id", "run-button").get_attribute("aria-disabled") is None)
            error = driver.find_element("id", "error")
            if error.is_displayed():
                sys.exit(f"the run failed: {error.text}")
            height = driver.execute_script("return document.documentElement.scrollHeight")
            metrics = {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False}
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            png = driver.get_screenshot_as_png()
        finally:
            driver.quit()
            process.terminate()
            process.wait(timeout=30)
    OUTPUT.write_bytes(shrink(png))
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({OUTPUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
