"""bench/throughput.py's pure parts (input sizes, ratios against rembg, the table), its load generator against a loopback stub, and bench/gpu_model.py on the CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from inputs import dimensions  # noqa: E402
from report import markdown_table, ratios  # noqa: E402
from throughput import parse_args  # noqa: E402


@pytest.mark.parametrize("megapixels", [0.3, 2.0, 12.0])
def test_inputs_have_the_asked_pixel_count_at_three_to_two(megapixels):
    width, height = dimensions(megapixels)
    assert abs(width * height / 1e6 - megapixels) / megapixels < 0.01
    assert abs(width / height - 1.5) < 0.01


def _cell(system: str, concurrency: int, p50: float, ips: float, rss: float) -> dict:
    return {"system": system, "megapixels": 2.0, "mode": "backgroundRemoval", "concurrency": concurrency, "requests": 4, "ok": 4,
            "errors": [], "p50_s": p50, "p95_s": p50, "images_per_s": ips, "peak_rss_mb": rss, "image": "x.jpg"}


def test_ratios_compare_the_service_with_rembg_at_the_same_concurrency():
    cells = [
        _cell("service", 1, 2.0, 0.5, 900), _cell("service", 4, 6.0, 0.8, 1200),
        _cell("rembg-server", 1, 4.0, 0.25, 600), _cell("rembg-server", 4, 16.0, 0.2, 800),
        _cell("rembg-lib", 1, 3.0, 0.33, 500),
    ]
    one, four = ratios(cells)
    assert (one["concurrency"], one["vs_server_p50_ratio"], one["vs_server_throughput_ratio"]) == (1, 0.5, 2.0)
    assert one["vs_library_p50_ratio"] == pytest.approx(0.667, abs=1e-3)
    assert four["vs_server_throughput_ratio"] == 4.0 and four["vs_server_peak_rss_ratio"] == 1.5
    assert four["vs_library_p50_ratio"] is None  # the library runs one call at a time
    assert "| 2 | backgroundRemoval | 4 | 0.38 | 4.00 | 1.50 |" in markdown_table(cells, [one, four])


def test_a_missing_rembg_cell_gives_no_ratio_rather_than_failing():
    (row,) = ratios([_cell("service", 1, 2.0, 0.5, 900)])
    assert row["vs_server_p50_ratio"] is None and row["vs_library_throughput_ratio"] is None


def test_sweep_size_options_parse_and_reject_unknown_names(capsys):
    args = parse_args(["--sizes", "0.3", "--concurrency", "1,4", "--requests", "3", "--modes", "foregroundMatting"])
    assert (args.sizes, args.concurrency, args.requests, args.modes) == ([0.3], [1, 4], 3, ["foregroundMatting"])
    with pytest.raises(SystemExit):
        parse_args(["--systems", "service,remove-bg"])


def test_the_gpu_model_script_runs_end_to_end_on_the_cpu(weights, tmp_path):
    """bench/gpu.sh's model-only half, checked here where no GPU is: tiny inputs, eager only."""
    import json
    import subprocess

    out = tmp_path / "gpu_model.json"
    command = [sys.executable, "bench/gpu_model.py", "--device", "cpu", "--dtypes", "float32", "--batch-sizes", "1,2",
               "--resolution", "64", "--seconds", "0.2", "--weights", str(weights), "--out", str(out)]
    subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, check=True, capture_output=True, timeout=300)
    report = json.loads(out.read_text())
    assert report["device"] == "cpu"
    assert [(row["batch"], row["graph_images_per_s"]) for row in report["rows"]] == [(1, None), (2, None)]
    assert all(row["eager_images_per_s"] > 0 for row in report["rows"])


def test_load_split_over_processes_sends_every_request_once():
    """bench/loadgen.py with several forked load processes, against a loopback server that counts requests."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from loadgen import run_load

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(body.decode())
            self.send_response(200 if body != b"fail" else 500)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        result = run_load(lambda client: client.post(url, content=b"x"), concurrency=5, requests=11, processes=3)
        failing = run_load(lambda client: client.post(url, content=b"fail"), concurrency=2, requests=2, processes=2)
    finally:
        server.shutdown()
    assert len(result.latencies_s) == 11 and not result.errors
    assert seen.count("x") == 11
    assert result.wall_s >= max(result.latencies_s) > 0
    assert result.client_cpu_s > 0
    assert len(failing.errors) == 2 and failing.errors[0].startswith("HTTP 500")
