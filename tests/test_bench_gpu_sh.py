"""bench/gpu.sh where no GPU is: its smoke mode runs every step tiny on the CPU, and its summary's arithmetic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from gpu_summary import summarise  # noqa: E402
from inputs import dimensions  # noqa: E402


def nvidia_smi_line(unix: float, utilisation: float) -> str:
    return f"{datetime.fromtimestamp(unix).strftime('%Y/%m/%d %H:%M:%S.%f')[:-3]}, {utilisation:.0f}, 1000\n"


def cell(mode: str, ok: int, images_per_s: float) -> str:
    return json.dumps({"system": "service", "megapixels": 2.0, "mode": mode, "concurrency": 64, "requests": ok, "ok": ok,
                       "errors": [], "p50_s": 0.3, "p95_s": 0.5, "images_per_s": images_per_s, "server_cores": 9.0})


def test_the_summary_takes_utilisation_over_each_cell_and_the_ratio_against_the_model(tmp_path):
    (tmp_path / "host.json").write_text(json.dumps({"nproc": 16, "cpu": "Xeon", "gpu": "H200", "torch": "x"}))
    rows = [{"dtype": "float16", "passes": p, "batch": b, "eager_images_per_s": ips, "graph_images_per_s": None}
            for p, b, ips in ((1, 32, 400.0), (2, 8, 200.0), (2, 32, 250.0))]
    (tmp_path / "gpu_model.json").write_text(json.dumps({"device": "H200", "rows": rows}))
    start = 1_800_000_000.0
    # Cut-outs: 100 requests at 50/s end at start+10 (window 8-10 s); mattes: 200 at 200/s end at start+20 (19-20 s).
    (tmp_path / "http-workers-1.log").write_text(
        f"{start + 1:.3f} starting the service\n{start + 10:.3f} {cell('backgroundRemoval', 100, 50.0)}\n"
        f"{start + 20:.3f} {cell('foregroundMatting', 200, 200.0)}\n{start + 21:.3f} | a table |\n"
    )
    samples = [(start + t / 10, 90.0 if 80 <= t <= 100 else 100.0 if 190 <= t <= 200 else 5.0) for t in range(0, 220)]
    (tmp_path / "util-workers-1.csv").write_text("".join(nvidia_smi_line(*sample) for sample in samples) + "garbled line\n")
    summary = summarise(tmp_path, passes=2, batch=32)
    cutouts, mattes = summary["http"]
    assert summary["model_only"]["images_per_s"] == 250.0
    assert (cutouts["mode"], cutouts["workers"], cutouts["vs_model_only"]) == ("backgroundRemoval", "1", 0.2)
    assert mattes["vs_model_only"] == 0.8
    assert cutouts["utilisation"]["mean"] == pytest.approx(90.0) and cutouts["utilisation"]["samples"] >= 19
    assert mattes["utilisation"]["p50"] == 100.0  # start-up and the idle gap between cells are not counted
    table = (tmp_path / "summary.md").read_text()
    assert "| 1 | backgroundRemoval | 64 | 50.0 | 0.300 | 0.500 | 0 | 90 / 90 | 9.0 | 0.20 | not met | not met (150) |" in table
    assert "| 1 | foregroundMatting | 64 | 200.0 | 0.300 | 0.500 | 0 | 100 / 100 | 9.0 | 0.80 | met | met (200) |" in table
    assert "16 cores (nproc)" in table


def test_the_smoke_run_goes_through_every_step_and_summarises_them(weights, tmp_path):
    """GPU_SH_SMOKE=1: the script's every step, tiny on the CPU (a 64² model, 0.3 MP inputs, BGR_WORKERS 1 and 2)."""
    width, height = dimensions(0.3)
    (tmp_path / "inputs").mkdir()
    rng = np.random.default_rng(0)  # the bench's input, made here: scikit-image (which makes it) is a bench extra
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(tmp_path / "inputs" / f"coffee-{width}x{height}.jpg")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BGR_")}, "GPU_SH_SMOKE": "1", "OUT": str(tmp_path),
           "PY": sys.executable, "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(["bash", "bench/gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert "all steps passed" in completed.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["host"]["nproc"] == int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    assert (tmp_path / "lscpu.txt").read_text().startswith("Architecture")
    model_rows = json.loads((tmp_path / "gpu_model.json").read_text())["rows"]
    assert sorted({(row["passes"], row["batch"]) for row in model_rows}) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    reference = summary["model_only"]["images_per_s"]
    assert reference == next(row["eager_images_per_s"] for row in model_rows if (row["passes"], row["batch"]) == (2, 2))
    cells = {(row["workers"], row["mode"]): row for row in summary["http"]}
    assert set(cells) == {(w, m) for w in ("1", "2") for m in ("backgroundRemoval", "foregroundMatting")}
    for row in cells.values():
        assert row["ok"] == row["requests"] == 4 and not row["errors"]
        assert row["p95_s"] >= row["p50_s"] > 0
        assert row["vs_model_only"] == pytest.approx(row["images_per_s"] / reference)
        assert row["utilisation"] is not None and 0 <= row["utilisation"]["mean"] <= 100  # CPU busy % in a smoke run
    assert summary["device_pixels"]["decode"]["max_difference"] == 0  # libjpeg-turbo both ways on the CPU
    assert "device_pixel_tests" in completed.stdout and "1 passed" in (tmp_path / "device_pixel_tests.log").read_text()
