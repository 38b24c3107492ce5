"""BGR_WORKERS: several serving processes on one port, each a real ``python -m app`` worker with the real model.

What holds for one process holds across them: /metrics counts every request once whichever
worker answers the scrape, keys files are read by each worker, the queue answers 429, SIGTERM
loses nothing, and nothing is answered by a worker that is not ready. The networks run at a
64-pixel input (the full HTTP and imaging path, quickly) unless a test needs them slow.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.settings import Settings, SettingsError
from app.workers import worker_count
from conftest import FAST, SEGMENT, launch_server, photo, png_bytes, start_server, stop_server
from test_operations import sample, scrape

PARAMS = {"api-version": "2023-02-01-preview"}
TWO = {**FAST, "BGR_WORKERS": "2"}
FILE_KEY = "key-in-a-file-0123456789"


def log_lines(server) -> list[dict]:
    return [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]


def worker_of(server, request_ids: set[str]) -> dict[str, int]:
    """Which worker answered each request, from the workers' access-log lines."""
    return {line["request_id"]: line["worker"] for line in log_lines(server) if line.get("request_id") in request_ids}


def send_until_both_workers_served(server, data: bytes, headers: dict[str, str], rounds: int = 20) -> list[httpx.Response]:
    """Rounds of concurrent requests, each on its own connection, until both workers have answered some."""

    def one(_: int) -> httpx.Response:
        with server.client() as client:
            return client.post(SEGMENT, params={**PARAMS, "mode": "foregroundMatting"}, content=data, headers=headers)

    responses: list[httpx.Response] = []
    with ThreadPoolExecutor(6) as pool:
        for _ in range(rounds):
            responses += pool.map(one, range(6))
            time.sleep(0.3)  # the access-log lines are written as each response ends
            if len(set(worker_of(server, {r.headers["request-id"] for r in responses}).values())) == 2:
                return responses
    raise AssertionError(f"one worker answered all {len(responses)} requests")


@pytest.fixture(scope="module")
def two_workers(weights, tmp_path_factory):
    directory = tmp_path_factory.mktemp("workers")
    keys_file = directory / "keys.txt"
    keys_file.write_text(FILE_KEY + "\n")
    running = start_server({**TWO, "BGR_API_KEYS_FILE": str(keys_file)}, directory / "server.log")
    yield running
    stop_server(running)


def test_metrics_count_every_request_once_whichever_worker_is_scraped(two_workers):
    before = scrape(two_workers.url)
    responses = send_until_both_workers_served(two_workers, png_bytes(photo((200, 100))), {"Ocp-Apim-Subscription-Key": FILE_KEY})
    assert [r.status_code for r in responses] == [200] * len(responses)
    served_by = worker_of(two_workers, {r.headers["request-id"] for r in responses})
    assert len(served_by) == len(responses) and set(served_by.values()) == {0, 1}
    scrapes = []
    for _ in range(8):  # each on a new connection: either worker may answer
        after = scrape(two_workers.url)
        delta = lambda name, **labels: sample(after, name, **labels) - sample(before, name, **labels)  # noqa: E731
        scrapes.append((
            delta("bgremoval_requests_total", mode="foregroundMatting", status="200"),
            delta("bgremoval_request_duration_seconds_count", mode="foregroundMatting"),
            delta("bgremoval_batch_size_count"),
            delta("bgremoval_input_megapixels_count"),
            sample(after, "bgremoval_queue_depth"),
            sample(after, "bgremoval_inflight_requests"),
        ))
    n = len(responses)
    assert set(scrapes) == {(n, n, n, n, 0, 0)}
    scrapers = {line["worker"] for line in log_lines(two_workers) if line.get("path") == "/metrics"}
    assert scrapers <= {0, 1}


def test_each_worker_reads_the_keys_file(two_workers):
    # Requests with the file's key succeeded on both workers above; here a wrong key is refused by both.
    send_until_both_workers_served(two_workers, png_bytes(photo()), {"Ocp-Apim-Subscription-Key": FILE_KEY})

    def wrong(_: int) -> httpx.Response:
        with two_workers.client() as client:
            return client.post(SEGMENT, params={**PARAMS, "mode": "foregroundMatting"}, content=png_bytes(photo()),
                               headers={"Ocp-Apim-Subscription-Key": "not-the-key"})

    refusals: list[httpx.Response] = []
    with ThreadPoolExecutor(6) as pool:
        for _ in range(20):
            refusals += pool.map(wrong, range(6))
            time.sleep(0.3)
            if len(set(worker_of(two_workers, {r.headers["request-id"] for r in refusals}).values())) == 2:
                break
    assert {r.status_code for r in refusals} == {401}
    assert set(worker_of(two_workers, {r.headers["request-id"] for r in refusals}).values()) == {0, 1}


def test_a_full_queue_answers_429_in_each_worker(weights, tmp_path):
    """Queues are per worker (BGR_QUEUE_SIZE each): a burst beyond them is refused with Azure's 429, the rest served."""
    server = start_server(
        {"BGR_WORKERS": "2", "BGR_RESOLUTION": "512", "BGR_TARGET": "subject", "BGR_QUEUE_SIZE": "1", "BGR_RETRY_AFTER_S": "2"},
        tmp_path / "server.log",
    )
    data = png_bytes(photo((300, 200)), "JPEG")
    try:
        def one(_: int) -> httpx.Response:
            with server.client() as client:
                return client.post(SEGMENT, params={**PARAMS, "mode": "foregroundMatting"}, content=data)

        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(one, range(12)))
    finally:
        stop_server(server)
    assert {r.status_code for r in responses} == {200, 429}
    for limited in (r for r in responses if r.status_code == 429):
        assert limited.headers["retry-after"] == "2" and limited.json()["error"]["code"] == "429"


def test_sigterm_drains_every_worker_and_loses_nothing(weights, tmp_path):
    """Requests in flight and queued in both workers when SIGTERM reaches the supervisor are all answered; exit 0."""
    server = start_server(
        {"BGR_WORKERS": "2", "BGR_RESOLUTION": "512", "BGR_TARGET": "subject", "BGR_SHUTDOWN_GRACE_S": "120"},
        tmp_path / "server.log",
    )
    started = next(line for line in log_lines(server) if line["message"] == "workers started")
    metrics_dir = Path(next(line for line in log_lines(server) if "metrics_dir" in line)["metrics_dir"])
    assert metrics_dir.is_dir()
    data = png_bytes(photo((300, 200)), "JPEG")

    def one(_: int) -> httpx.Response:
        with httpx.Client(timeout=180) as client:
            return client.post(f"{server.url}{SEGMENT}", params={**PARAMS, "mode": "foregroundMatting"}, content=data)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(8)]
        deadline = time.monotonic() + 60
        while sample(scrape(server.url), "bgremoval_inflight_requests") < 8 and time.monotonic() < deadline:
            time.sleep(0.05)  # until all eight are in the workers
        server.process.send_signal(signal.SIGTERM)
        responses = [f.result() for f in futures]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health/live", timeout=2)
    assert [r.status_code for r in responses] == [200] * 8
    assert server.process.wait(timeout=120) == 0
    lines = log_lines(server)
    assert sorted(line["worker"] for line in lines if line["message"] == "stopped") == [0, 1]
    assert sum(line["images"] for line in lines if line["message"] == "stopped") == 8
    assert len(started["pids"]) == 2
    assert not metrics_dir.exists()


def test_a_worker_that_dies_stops_the_rest_and_the_supervisor_fails(weights, tmp_path):
    server = start_server(TWO, tmp_path / "server.log")
    pids = next(line for line in log_lines(server) if line["message"] == "workers started")["pids"]
    os.kill(pids[0], signal.SIGKILL)
    assert server.process.wait(timeout=60) == 1
    lines = log_lines(server)
    assert any(line["message"] == "worker exited unexpectedly: stopping the others" and line["worker"] == 0 for line in lines)
    assert any(line["message"] == "stopped" and line.get("worker") == 1 for line in lines)  # the survivor drained


def test_nothing_answers_before_a_worker_is_ready(weights, tmp_path):
    """The port refuses connections until a worker has warmed its model; from then on every answer is ready."""
    server = launch_server(TWO, tmp_path / "server.log")
    outcomes: list[int | str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and outcomes.count(200) < 20:
            try:
                outcomes.append(httpx.get(f"{server.url}/health/ready", timeout=10).status_code)
            except httpx.ConnectError:
                outcomes.append("refused")
                time.sleep(0.05)
    finally:
        stop_server(server)
    assert outcomes.count(200) == 20, outcomes[-5:]
    first_ready = outcomes.index(200)
    assert set(outcomes[:first_ready]) <= {"refused"} and set(outcomes[first_ready:]) == {200}


def _push_depths(metrics_dir: str, depths: list[int], done) -> None:
    from app.metrics import Metrics

    metrics = Metrics(Path(metrics_dir))
    observe = metrics.queue_observer("isnet-general-use")
    for depth in depths:
        observe(depth)
    metrics.inflight.inc(depths[-1])
    done.wait()


def test_the_queue_depth_the_autoscaler_reads_is_the_sum_over_live_workers(tmp_path, monkeypatch):
    """bgremoval_queue_depth, set by each process as its queue changes, scrapes as the pod's total."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # inherited by the spawned processes, as from the supervisor
    context = multiprocessing.get_context("spawn")
    done = context.Event()
    workers = [context.Process(target=_push_depths, args=(str(tmp_path), depths, done)) for depths in ([1, 4, 3], [2, 5])]
    for worker in workers:
        worker.start()
    scraper = context.Process(target=_scrape_into, args=(str(tmp_path), str(tmp_path / "first.txt"), 8.0))
    scraper.start()
    scraper.join(60)
    done.set()
    for worker in workers:
        worker.join(30)
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(workers[0].pid, str(tmp_path))
    scraper = context.Process(target=_scrape_into, args=(str(tmp_path), str(tmp_path / "second.txt"), 5.0))
    scraper.start()
    scraper.join(60)
    first = (tmp_path / "first.txt").read_text()
    second = (tmp_path / "second.txt").read_text()
    assert "bgremoval_queue_depth 8.0" in first and "bgremoval_inflight_requests 8.0" in first
    assert 'bgremoval_model_queue_depth{model="isnet-general-use"} 8.0' in first
    # The dead worker's gauges are forgotten (the supervisor does this as each worker exits).
    assert "bgremoval_queue_depth 5.0" in second


def _scrape_into(metrics_dir: str, out: str, expected: float) -> None:
    from app.metrics import Metrics

    # Wait for the writers (spawned alongside) to have set their values.
    deadline = time.monotonic() + 50
    text = ""
    while time.monotonic() < deadline:
        text = Metrics(Path(metrics_dir)).render().decode()
        if f"bgremoval_queue_depth {expected}" in text:
            break
        time.sleep(0.1)
    Path(out).write_text(text)


@pytest.mark.parametrize(
    ("workers", "gpu", "cores", "expected"),
    [("auto", False, 64, 1), ("auto", True, 2, 1), ("auto", True, 6, 3), ("auto", True, 32, 4), ("3", False, 2, 3), ("1", True, 32, 1)],
)
def test_worker_count(workers, gpu, cores, expected):
    assert worker_count(Settings(workers=workers), cores=cores, gpu=gpu) == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_worker_counts_are_settings_errors(value):
    with pytest.raises(SettingsError, match="BGR_WORKERS"):
        Settings.from_env({"BGR_WORKERS": value})
