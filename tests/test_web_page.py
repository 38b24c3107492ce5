"""The page at /, in a real headless Chromium against a real service process on loopback."""

from __future__ import annotations

import base64
import io
import re
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import AZURE_SPEC, FAST, KEYS, ROOT, free_port, photo, png_bytes, start_server, stop_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts"
REAL_PHOTO = AZURE_SPEC / "observed-outputs" / "input_building.jpg"
WAIT_S = 60
CHROMIUM_FLAGS = (
    "--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run"
    " --disable-background-networking --disable-component-update --disable-sync"
).split()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            pytest.skip(f"{path} is absent: install Debian's chromium and chromium-driver packages for the page tests")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}", "--window-size=1280,900"):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


@pytest.fixture
def input_photo(tmp_path: Path) -> Path:
    """A real photo where the shared data has one, else a synthetic picture."""
    if REAL_PHOTO.exists():
        return REAL_PHOTO
    path = tmp_path / "photo.jpg"
    path.write_bytes(png_bytes(photo((640, 480)), "JPEG", quality=90))
    return path


def by_id(driver, element_id: str):
    return driver.find_element("id", element_id)


def run_and_wait(driver) -> None:
    """Click Run (it marks itself aria-disabled at once) and wait until the run has ended."""
    from selenium.webdriver.support.ui import WebDriverWait

    by_id(driver, "run-button").click()
    WebDriverWait(driver, WAIT_S).until(lambda d: by_id(d, "run-button").get_attribute("aria-disabled") is None)


def succeeded(driver) -> None:
    error = by_id(driver, "error")
    assert not error.is_displayed(), f"the run failed: {error.text}"
    assert by_id(driver, "results").is_displayed()


def canvas_rgba(driver, element_id: str) -> np.ndarray:
    url = driver.execute_script(f"return document.getElementById('{element_id}').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))


def wait_for_download(directory: Path, name: str) -> Image.Image:
    path = directory / name
    deadline = time.monotonic() + WAIT_S
    while not path.exists() or any(directory.glob("*.crdownload")):
        assert time.monotonic() < deadline, f"{name} was not downloaded; the folder holds {sorted(directory.iterdir())}"
        time.sleep(0.2)
    image = Image.open(io.BytesIO(path.read_bytes()))
    image.load()
    assert image.format == "PNG"
    return image


def emulate(driver, width: int, height: int, mobile: bool) -> None:
    metrics = {"width": width, "height": height, "deviceScaleFactor": 2 if mobile else 1, "mobile": mobile}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def full_page_screenshot(driver, name: str, mobile: bool) -> None:
    """The whole page, not just the viewport: the viewport is made as tall as the page for the shot."""
    width, height = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    emulate(driver, width, driver.execute_script("return document.documentElement.scrollHeight"), mobile)
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))
    emulate(driver, width, height, mobile)


def open_page(driver, server, viewport: tuple[int, int] | None = None) -> None:
    if viewport:
        emulate(driver, *viewport, mobile=True)
    else:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.get(server.url + "/")
    driver.execute_script("localStorage.clear()")


def choose(driver, path: Path, mode: str) -> None:
    by_id(driver, "file-input").send_keys(str(path.resolve()))
    by_id(driver, "mode-select").send_keys({"backgroundRemoval": "Remove", "foregroundMatting": "Matte"}[mode])
    assert driver.execute_script("return document.getElementById('mode-select').value") == mode


def test_background_removal_shows_and_downloads_the_cutout(browser, fast_server, input_photo: Path) -> None:
    with Image.open(input_photo) as image:
        width, height = image.size
    open_page(browser, fast_server)
    choose(browser, input_photo, "backgroundRemoval")
    assert input_photo.name in by_id(browser, "drop-zone").text
    run_and_wait(browser)
    succeeded(browser)

    sizes = browser.execute_script(
        "const [o, c, m] = ['original', 'cutout', 'matte'].map(id => document.getElementById(id));"
        "return [o.naturalWidth, o.naturalHeight, c.width, c.height, m.width, m.height]"
    )
    assert sizes == [width, height] * 3
    assert by_id(browser, "dimensions").text == f"{width} × {height}"
    assert re.fullmatch(r"\d+ ms", by_id(browser, "elapsed").text)

    full_page_screenshot(browser, "web_page.png", mobile=False)

    download = by_id(browser, "download")
    name = f"{input_photo.stem}-cutout.png"
    assert download.get_attribute("download") == name
    download.click()
    cutout = wait_for_download(browser.downloads, name)
    assert cutout.mode == "RGBA" and cutout.size == (width, height)

    # The matte panel is the cut-out's alpha, and the cut-out canvas holds that alpha too.
    alpha = np.asarray(cutout)[:, :, 3].astype(int)
    matte = canvas_rgba(browser, "matte").astype(int)
    assert np.abs(matte[:, :, 0] - alpha).max() <= 1
    assert (matte[:, :, 3] == 255).all()
    assert np.abs(canvas_rgba(browser, "cutout")[:, :, 3].astype(int) - alpha).max() <= 1

    # The cut-out's background: a checkerboard, or the chosen colour.
    cutout_style = "return getComputedStyle(document.getElementById('cutout'))"
    assert "conic-gradient" in browser.execute_script(cutout_style + ".backgroundImage")
    browser.execute_script(
        "const c = document.getElementById('bg-color'); c.value = '#ff0000'; c.dispatchEvent(new Event('input'))"
    )
    assert browser.execute_script("return document.getElementById('bg-mode').value") == "color"
    assert browser.execute_script(cutout_style + ".backgroundImage") == "none"
    assert browser.execute_script(cutout_style + ".backgroundColor") == "rgb(255, 0, 0)"

    # Every resource the page loaded came from the service itself.
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(url.startswith(fast_server.url + "/") for url in resources), resources


def test_foreground_matting_shows_the_matte(browser, fast_server, input_photo: Path) -> None:
    with Image.open(input_photo) as image:
        width, height = image.size
    open_page(browser, fast_server)
    choose(browser, input_photo, "foregroundMatting")
    run_and_wait(browser)
    succeeded(browser)
    assert by_id(browser, "dimensions").text == f"{width} × {height}"

    name = f"{input_photo.stem}-matte.png"
    by_id(browser, "download").click()
    matte = wait_for_download(browser.downloads, name)
    assert matte.size == (width, height)

    expected = np.asarray(matte.convert("L")).astype(int)  # the service writes it greyscale or as a grey palette
    shown = canvas_rgba(browser, "matte").astype(int)
    assert np.abs(shown[:, :, 0] - expected).max() <= 1
    # The cut-out view is the original with the matte as its alpha.
    assert np.abs(canvas_rgba(browser, "cutout")[:, :, 3].astype(int) - expected).max() <= 1


def result_png(driver) -> Image.Image:
    """The PNG the last run received, read back from the download link's blob."""
    encoded = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(document.getElementById('download').href).then(r => r.arrayBuffer())"
        ".then(b => done(btoa(Array.from(new Uint8Array(b), c => String.fromCharCode(c)).join(''))));"
    )
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    image.load()
    return image


def last_request(driver) -> str:
    return driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes(':segment')).pop()"
    )


def test_target_and_clean_edge_colours(browser, fast_server, input_photo: Path) -> None:
    open_page(browser, fast_server)
    choose(browser, input_photo, "backgroundRemoval")
    Select = pytest.importorskip("selenium.webdriver.support.select").Select
    Select(by_id(browser, "target-select")).select_by_value("subject")
    run_and_wait(browser)
    succeeded(browser)
    assert "target=subject" in last_request(browser) and "decontaminate=false" in last_request(browser)
    assert by_id(browser, "target-done").text == "Kept the subject."
    as_azure = np.asarray(result_png(browser)).astype(int)

    by_id(browser, "decontaminate").click()
    run_and_wait(browser)
    succeeded(browser)
    assert "decontaminate=true" in last_request(browser)
    cleaned = np.asarray(result_png(browser)).astype(int)

    # The same matte; only soft pixels change colour, and some do.
    assert (cleaned[:, :, 3] == as_azure[:, :, 3]).all()
    soft = (as_azure[:, :, 3] > 0) & (as_azure[:, :, 3] < 255)
    changed = (cleaned[:, :, :3] != as_azure[:, :, :3]).any(axis=2)
    assert soft.any() and changed[soft].any()
    assert not changed[~soft].any()

    # A matte has no colours: the option is disabled, and not sent.
    Select(by_id(browser, "mode-select")).select_by_value("foregroundMatting")
    assert not by_id(browser, "decontaminate").is_enabled()
    run_and_wait(browser)
    succeeded(browser)
    assert "decontaminate" not in last_request(browser) and "mode=foregroundMatting" in last_request(browser)

    # Left at the server's default, the page sends no target and shows what the server decided.
    Select(by_id(browser, "target-select")).select_by_value("")
    run_and_wait(browser)
    succeeded(browser)
    assert "target=" not in last_request(browser)
    decided = browser.execute_script("return document.getElementById('target-done').textContent")
    assert decided in ("Kept the subject.", "Kept the scene, less the sky.")


def test_an_unticked_clean_edge_colours_box_overrides_a_cleaning_server(browser, input_photo: Path, tmp_path: Path) -> None:
    """With BGR_DECONTAMINATE=true, the page still gives Azure's colours while its box is empty."""
    server = start_server({**FAST, "BGR_DECONTAMINATE": "true", "BGR_TARGET": "subject"}, tmp_path / "server.log")
    try:
        open_page(browser, server)
        choose(browser, input_photo, "backgroundRemoval")
        run_and_wait(browser)
        succeeded(browser)
        assert "decontaminate=false" in last_request(browser)
        unticked = np.asarray(result_png(browser)).astype(int)
        by_id(browser, "decontaminate").click()
        run_and_wait(browser)
        succeeded(browser)
        cleaned = np.asarray(result_png(browser)).astype(int)
    finally:
        stop_server(server)
    soft = (unticked[:, :, 3] > 0) & (unticked[:, :, 3] < 255)
    assert (cleaned[:, :, 3] == unticked[:, :, 3]).all()
    assert (cleaned[:, :, :3] != unticked[:, :, :3]).any(axis=2)[soft].any()  # the server's default would have cleaned them


@pytest.fixture
def image_host(input_photo: Path):
    """A plain HTTP server on loopback (another origin than the page's) serving the input photo's folder."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(input_photo.parent)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_image_url_on_another_origin(browser, fast_server, input_photo: Path, image_host: str) -> None:
    with Image.open(input_photo) as image:
        width, height = image.size
    open_page(browser, fast_server)
    by_id(browser, "url-input").send_keys(f"{image_host}/{input_photo.name}")
    by_id(browser, "mode-select").send_keys("Matte")
    run_and_wait(browser)
    succeeded(browser)
    assert by_id(browser, "dimensions").text == f"{width} × {height}"
    assert not by_id(browser, "note").is_displayed()
    assert by_id(browser, "download").get_attribute("download") == f"{input_photo.stem}-matte.png"
    # The original came from another origin, so the composited cut-out can't be read back; its size can.
    assert browser.execute_script("const c = document.getElementById('cutout'); return [c.width, c.height]") == [width, height]
    assert canvas_rgba(browser, "matte").shape == (height, width, 4)


def error_after_run(browser) -> str:
    run_and_wait(browser)
    error = by_id(browser, "error")
    assert error.is_displayed() and error.get_attribute("role") == "alert"
    assert not by_id(browser, "results").is_displayed()
    text = error.text
    assert "{" not in text and "InvalidRequest" not in text and "not valid" not in text, text
    return text


def test_errors_are_explained_in_words(browser, fast_server, tmp_path: Path) -> None:
    open_page(browser, fast_server)
    assert "Choose a picture" in error_after_run(browser)

    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("These are my notes, not a picture.\n")
    by_id(browser, "file-input").send_keys(str(not_an_image))
    assert "isn't an image we can read" in error_after_run(browser)

    # Dropped onto the drop zone this time.
    tiny = base64.b64encode(png_bytes(photo((10, 10)))).decode()
    browser.execute_script(
        "const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));"
        "const transfer = new DataTransfer();"
        "transfer.items.add(new File([bytes], 'tiny.png', {type: 'image/png'}));"
        "document.getElementById('drop-zone').dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true}));",
        tiny,
    )
    assert "tiny.png" in by_id(browser, "drop-zone").text
    assert "between 50 and 16,000 pixels" in error_after_run(browser)

    # Choosing a URL replaces the file; nothing listens on this port, so the service can't fetch it.
    by_id(browser, "url-input").send_keys(f"http://127.0.0.1:{free_port()}/photo.jpg")
    assert "couldn't download that URL" in error_after_run(browser)

    browser.execute_script("window.fetch = () => Promise.reject(new TypeError('Failed to fetch'))")
    assert "couldn't reach the server" in error_after_run(browser)


def test_api_key_is_asked_for_and_remembered_when_ticked(browser, keyed_server, input_photo: Path) -> None:
    open_page(browser, keyed_server)
    choose(browser, input_photo, "backgroundRemoval")
    assert "needs an API key" in error_after_run(browser)

    by_id(browser, "api-key").send_keys("not-a-key")
    assert "wasn't accepted" in error_after_run(browser)

    key = by_id(browser, "api-key")
    key.clear()
    key.send_keys(KEYS[0])
    by_id(browser, "remember-key").click()
    run_and_wait(browser)
    succeeded(browser)

    browser.refresh()
    assert by_id(browser, "api-key").get_attribute("value") == KEYS[0]
    assert by_id(browser, "remember-key").is_selected()
    by_id(browser, "remember-key").click()
    assert browser.execute_script("return localStorage.length") == 0


def test_phone_layout_and_keyboard(browser, fast_server, input_photo: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(browser, fast_server, viewport=(375, 740))
    try:
        assert browser.execute_script("return window.innerWidth") == 375

        # Every form control has a label.
        unlabelled = browser.execute_script(
            "return [...document.querySelectorAll('input, select')]"
            ".filter(e => !(e.labels.length || e.getAttribute('aria-label'))).map(e => e.id)"
        )
        assert unlabelled == []

        # The drop zone is a button that opens the file picker with Enter and with Space.
        browser.execute_script("window.picks = 0; document.getElementById('file-input').click = () => { window.picks += 1; }")
        zone = by_id(browser, "drop-zone")
        assert zone.tag_name == "button"
        zone.send_keys(Keys.ENTER)
        zone.send_keys(Keys.SPACE)
        assert browser.execute_script("return window.picks") == 2

        choose(browser, input_photo, "backgroundRemoval")
        run_and_wait(browser)
        succeeded(browser)
        no_overflow = "return document.documentElement.scrollWidth <= window.innerWidth"
        assert browser.execute_script(no_overflow)
        # The three panels stack: one column.
        lefts = browser.execute_script(
            "return ['original', 'cutout', 'matte'].map(id => document.getElementById(id).getBoundingClientRect().left)"
        )
        assert max(lefts) - min(lefts) < 1, lefts

        full_page_screenshot(browser, "web_page_phone.png", mobile=True)

        # Tab reaches the controls in reading order, each with a visible focus ring.
        browser.find_element("tag name", "h1").click()  # starts keyboard navigation from the top
        expected = (
            "drop-zone url-input mode-select decontaminate target-select api-key remember-key run-button bg-mode bg-color download"
        ).split()
        seen, rings = [], []
        for _ in expected:
            ActionChains(browser).send_keys(Keys.TAB).perform()
            seen.append(browser.execute_script("return document.activeElement.id"))
            rings.append(browser.execute_script("return getComputedStyle(document.activeElement).outlineStyle"))
        assert seen == expected
        assert "none" not in rings, dict(zip(seen, rings, strict=True))
        assert browser.execute_script(no_overflow)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_the_network_picker_lists_what_the_server_loaded_and_sends_the_choice(browser, u2netp_models_dir: Path, input_photo: Path, tmp_path: Path) -> None:
    env = {**FAST, "BGR_MODELS": "isnet-general-use,u2netp", "BGR_MODELS_DIR": str(u2netp_models_dir)}
    running = start_server(env, tmp_path / "server.log")
    try:
        from selenium.webdriver.support.ui import Select, WebDriverWait

        open_page(browser, running)

        WebDriverWait(browser, WAIT_S).until(lambda d: len(Select(by_id(d, "model-select")).options) == 3)
        picker = Select(by_id(browser, "model-select"))
        assert [o.text for o in picker.options][1:] == ["isnet-general-use (default)", "u2netp"]
        assert by_id(browser, "model-select").is_enabled()
        picker.select_by_value("u2netp")
        choose(browser, input_photo, "foregroundMatting")
        run_and_wait(browser)
        succeeded(browser)
        assert "model=u2netp" in last_request(browser)
        served = httpx.get(f"{running.url}/health/ready", timeout=10).json()["models"]
        assert served["u2netp"]["images"] == 1 and served["isnet-general-use"]["images"] == 0
    finally:
        stop_server(running)
