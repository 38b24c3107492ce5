"""Operations: Prometheus metrics, structured logs, and the SIGTERM lifecycle of a real process."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import SEGMENT, photo, png_bytes, start_server

PARAMS = {"api-version": "2023-02-01-preview"}


def scrape(url: str) -> dict[str, list]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def sample(families: dict, name: str, **labels) -> float:
    for family in families.values():
        for s in family:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def change(before: dict, after: dict, name: str, **labels) -> float:
    return sample(after, name, **labels) - sample(before, name, **labels)


def test_metrics_count_requests_batches_inputs_and_rejections(fast_server):
    before = scrape(fast_server.url)
    image = png_bytes(photo((200, 100)))
    with fast_server.client() as client:
        assert client.post(SEGMENT, params={**PARAMS, "mode": "backgroundRemoval"}, content=image).status_code == 200
        assert client.post(SEGMENT, params={**PARAMS, "mode": "foregroundMatting"}, content=image).status_code == 200
        assert client.post(SEGMENT, params={**PARAMS, "mode": "foregroundMatting"}, content=b"junk").status_code == 400
        assert client.post(SEGMENT, params={"mode": "foregroundMatting"}, content=image).status_code == 404
    after = scrape(fast_server.url)

    delta = partial(change, before, after)
    assert delta("bgremoval_requests_total", api="azure", mode="backgroundRemoval", status="200") == 1
    assert delta("bgremoval_requests_total", api="azure", mode="foregroundMatting", status="200") == 1
    assert delta("bgremoval_requests_total", api="azure", mode="foregroundMatting", status="400") == 1
    assert delta("bgremoval_request_duration_seconds_count", api="azure", mode="foregroundMatting") == 3
    assert delta("bgremoval_rejected_total", api="azure", reason="image_format") == 1
    assert delta("bgremoval_rejected_total", api="azure", reason="not_found") == 1
    assert delta("bgremoval_batch_size_count") == 2 and delta("bgremoval_inference_seconds_count") == 2
    assert delta("bgremoval_input_megapixels_count") == 2 and delta("bgremoval_input_megapixels_sum") == pytest.approx(0.04)
    assert sample(after, "bgremoval_queue_depth") == 0
    assert sample(after, "bgremoval_inflight_requests") == 0


def test_metrics_carry_the_api_each_request_was_made_in(fast_server):
    """Azure's and rembg's calls count apart; a rembg refusal is rembg's; the queue depth stays one number."""
    before = scrape(fast_server.url)
    image = png_bytes(photo((200, 100)))
    with fast_server.client() as client:
        assert client.post(SEGMENT, params={**PARAMS, "mode": "backgroundRemoval"}, content=image).status_code == 200
        assert client.post("/api/remove", files={"file": ("a.png", image)}).status_code == 200
        assert client.post("/api/remove", files={"file": ("a.png", image)}, data={"om": "true"}).status_code == 200
        assert client.post("/api/remove", files={"file": ("a.png", b"junk")}).status_code == 400
        assert client.get("/api/remove").status_code == 422
    after = scrape(fast_server.url)

    delta = partial(change, before, after)
    assert delta("bgremoval_requests_total", api="azure", mode="backgroundRemoval", status="200") == 1
    assert delta("bgremoval_requests_total", api="rembg", mode="backgroundRemoval", status="200") == 1
    assert delta("bgremoval_requests_total", api="rembg", mode="foregroundMatting", status="200") == 1
    assert delta("bgremoval_requests_total", api="rembg", mode="backgroundRemoval", status="400") == 1
    assert delta("bgremoval_requests_total", api="rembg", mode="other", status="422") == 1
    assert delta("bgremoval_request_duration_seconds_count", api="rembg", mode="backgroundRemoval") == 2
    assert delta("bgremoval_rejected_total", api="rembg", reason="image_format") == 1
    assert delta("bgremoval_rejected_total", api="rembg", reason="invalid_parameter") == 1
    assert delta("bgremoval_rejected_total", api="azure", reason="image_format") == 0
    queue_depth = [s for s in after["bgremoval_queue_depth"] if s.name == "bgremoval_queue_depth"]
    assert len(queue_depth) == 1 and queue_depth[0].labels == {}


def test_on_the_cpu_the_worker_takes_one_image_at_a_time(fast_server):
    """BGR_MAX_BATCH_SIZE's automatic value on the CPU: concurrent requests are not batched."""
    from concurrent.futures import ThreadPoolExecutor

    before = scrape(fast_server.url)
    image = png_bytes(photo((200, 100)))

    def send(_: int) -> int:
        with fast_server.client() as client:
            return client.post(SEGMENT, params={**PARAMS, "mode": "foregroundMatting"}, content=image).status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(send, range(6))) == [200] * 6
    after = scrape(fast_server.url)
    batches = sample(after, "bgremoval_batch_size_count") - sample(before, "bgremoval_batch_size_count")
    images = sample(after, "bgremoval_batch_size_sum") - sample(before, "bgremoval_batch_size_sum")
    assert batches == images == 6


def test_logs_are_json_lines_with_the_request_id(fast_server):
    with fast_server.client() as client:
        response = client.post(SEGMENT, params={**PARAMS, "mode": "backgroundRemoval"}, content=png_bytes(photo()))
    request_id = response.headers["request-id"]
    time.sleep(0.2)
    lines = [json.loads(line) for line in fast_server.log_path.read_text().splitlines() if line.startswith("{")]
    assert lines, "no JSON log lines"
    access = [line for line in lines if line.get("request_id") == request_id]
    assert len(access) == 1
    entry = access[0]
    assert entry["logger"] == "app.access" and entry["status"] == 200 and entry["mode"] == "backgroundRemoval"
    assert entry["path"] == SEGMENT and entry["duration_ms"] > 0 and entry["response_bytes"] == len(response.content)
    non_json = [line for line in fast_server.log_path.read_text().splitlines() if line.strip() and not line.startswith("{")]
    assert non_json == []


def test_sigterm_finishes_queued_work_then_exits_zero(weights, tmp_path):
    """Requests queued when SIGTERM arrives are all answered; new connections are refused; exit status 0."""
    server = start_server(
        {"BGR_RESOLUTION": "512", "BGR_MAX_BATCH_SIZE": "2", "BGR_SHUTDOWN_GRACE_S": "120"}, tmp_path / "server.log"
    )
    data = png_bytes(photo((300, 200)), "JPEG")

    def one(_):
        with httpx.Client(timeout=180) as client:
            return client.post(f"{server.url}{SEGMENT}", params={**PARAMS, "mode": "foregroundMatting"}, content=data)

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(one, i) for i in range(6)]
        time.sleep(1.0)  # all six are in: one batch running, the rest queued
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health/live", timeout=2)
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200] * 6
    assert server.process.wait(timeout=120) == 0
    log = server.log_path.read_text()
    assert '"message": "stopped"' in log


def test_a_short_grace_period_still_exits_cleanly(weights, tmp_path):
    server = start_server({"BGR_RESOLUTION": "64", "BGR_SHUTDOWN_GRACE_S": "1"}, tmp_path / "server.log")
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0
