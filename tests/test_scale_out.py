"""Scale-out: two replicas behind nginx on loopback, a bounded load run, one replica drained or killed mid-run.

Needs Debian's nginx (.ci/run installs it); skipped with a message where it is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import SEGMENT, free_port, photo, png_bytes, start_server, stop_server

REQUESTS = 48
CONCURRENCY = 4
REPLICA = {"BGR_RESOLUTION": "256", "BGR_MAX_BATCH_SIZE": "4", "BGR_SHUTDOWN_GRACE_S": "60"}
RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"

# The same load-balancing choices as deploy/nginx/nginx.conf: a POST whose upstream fails
# before answering is retried on the other replica (non_idempotent: segmenting is a pure
# function of the request, so a retry is always safe).
NGINX_CONF = """
{user}
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream replicas {{
        server 127.0.0.1:{a} max_fails=1 fail_timeout=30s;
        server 127.0.0.1:{b} max_fails=1 fail_timeout=30s;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 21m;
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 2;
            proxy_connect_timeout 2s;
            proxy_read_timeout 120s;
        }}
    }}
}}
"""


@pytest.fixture()
def nginx_binary() -> str:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light; .ci/run does it)")
    return binary


def run_scenario(nginx_binary: str, tmp_path: Path, stop_signal: signal.Signals) -> dict:
    replicas = [start_server(REPLICA, tmp_path / f"replica{i}.log") for i in range(2)]
    port = free_port()
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / sub).mkdir(exist_ok=True)
    conf = tmp_path / "nginx.conf"
    # As root, nginx's workers would drop to nobody and could not write into pytest's private tmp folder.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(user=user, prefix=tmp_path, a=replicas[0].url.rsplit(":", 1)[1], b=replicas[1].url.rsplit(":", 1)[1], port=port))
    nginx = subprocess.Popen([nginx_binary, "-c", str(conf), "-p", str(tmp_path)], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}{SEGMENT}"
    data = png_bytes(photo((640, 480)), "JPEG", quality=90)
    outcomes: list[int | str] = []
    done = threading.Event()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)

        def one(i: int):
            try:
                with httpx.Client(timeout=120) as client:
                    response = client.post(url, params={"api-version": "2023-02-01-preview", "mode": "backgroundRemoval"}, content=data)
                outcomes.append(response.status_code)
            except httpx.HTTPError as error:
                outcomes.append(type(error).__name__)
            if len(outcomes) == REQUESTS // 4:
                done.set()

        started = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            futures = [pool.submit(one, i) for i in range(REQUESTS)]
            done.wait(timeout=300)
            victim = replicas[0]
            victim.process.send_signal(stop_signal)  # a quarter of the way in
            for f in futures:
                f.result(timeout=300)
        elapsed = time.monotonic() - started
        exit_code = victim.process.wait(timeout=120)
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        for replica in replicas:
            if replica.process.poll() is None:
                stop_server(replica)
    failures = [o for o in outcomes if o != 200]
    error_log = (tmp_path / "error.log").read_text() if (tmp_path / "error.log").exists() else ""
    return {
        # Upstream errors nginx met and answered by trying the other replica (the client never saw them).
        "retried_by_nginx": sum(1 for line in error_log.splitlines() if "upstream" in line and "[error]" in line),
        "signal": stop_signal.name,
        "requests": len(outcomes),
        "failures": len(failures),
        "failure_kinds": sorted(set(map(str, failures))),
        "seconds": round(elapsed, 1),
        "victim_exit_code": exit_code,
    }


def record(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "scale_out.json"
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing[result["signal"]] = result
    path.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"\nscale-out {result}")


def test_a_drained_replica_costs_no_request(nginx_binary, weights, tmp_path):
    result = run_scenario(nginx_binary, tmp_path, signal.SIGTERM)
    record(result)
    assert result["requests"] == REQUESTS
    assert result["failures"] == 0, result
    assert result["victim_exit_code"] == 0


def test_a_killed_replica_is_retried_on_the_other(nginx_binary, weights, tmp_path):
    result = run_scenario(nginx_binary, tmp_path, signal.SIGKILL)
    record(result)
    assert result["requests"] == REQUESTS
    # What was in flight on the killed replica is retried on the survivor (non_idempotent retries),
    # so clients should see nothing; at most the requests in flight at the kill could fail.
    assert result["failures"] <= CONCURRENCY, result
    assert result["victim_exit_code"] == -signal.SIGKILL
