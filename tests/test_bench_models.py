"""bench/models.py: every network at hand side by side (here IS-Net and rembg's u2netp), the rest listed as not measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import EVALDATA, require_shared

ROOT = Path(__file__).resolve().parent.parent


def test_the_networks_at_hand_are_measured_side_by_side(u2netp_models_dir, weights, tmp_path):
    manifest = require_shared(EVALDATA / "manifest.csv")
    command = [sys.executable, "bench/models.py", "--manifest", str(manifest), "--limit", "1", "--resolution", "64",
               "--models", "isnet-general-use,u2netp,birefnet-dis", "--models-dir", str(u2netp_models_dir), "--out", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "models.json").read_text())
    sets = {line.split(",")[0] for line in manifest.read_text().splitlines()[1:]}
    assert report["pairs"] == len(sets)
    isnet, u2netp, birefnet = (report["results"][n] for n in ("isnet-general-use", "u2netp", "birefnet-dis"))
    assert (isnet["resolution"], u2netp["resolution"]) == (64, 320)  # IS-Net at BGR_RESOLUTION, u2netp at its own side
    for measured in (isnet, u2netp):
        overall = measured["sets"]["all"]
        assert 0 < overall["mae"] < 0.5 and 0 < overall["iou"] <= 1 and overall["seconds"] > 0
    assert isnet["sets"]["all"]["mae"] != u2netp["sets"]["all"]["mae"]
    assert birefnet["measured"] is False and "weights fetch --model birefnet-dis" in birefnet["reason"]
    assert "birefnet-dis" in result.stdout and "not measured here" in result.stdout
