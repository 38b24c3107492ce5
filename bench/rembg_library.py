"""rembg as a library, one call after another: the worker bench/throughput.py runs under rembg's Python.

    python bench/rembg_library.py MODEL_PATH < cells.json   # [{"image": PATH, "mode": ..., "requests": N}, ...]

Prints one JSON line per cell: call latencies and the process's peak RSS during the cell.
``remove(bytes) -> PNG bytes`` covers what the service does for a request (decode, model,
matte, PNG encode); ``only_mask`` stands for foregroundMatting.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main() -> None:
    from rembg import new_session, remove

    model_path = sys.argv[1]
    cells = json.load(sys.stdin)
    session = new_session("dis_custom", model_path=model_path)
    for cell in cells:
        data = Path(cell["image"]).read_bytes()
        only_mask = cell["mode"] == "foregroundMatting"
        remove(data, session=session, only_mask=only_mask)  # warm-up, not counted
        try:
            Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here on
        except OSError:
            pass
        latencies = []
        started = time.perf_counter()
        for _ in range(cell["requests"]):
            began = time.perf_counter()
            out = remove(data, session=session, only_mask=only_mask)
            assert isinstance(out, bytes) and out[:8] == b"\x89PNG\r\n\x1a\n"
            latencies.append(time.perf_counter() - began)
        wall = time.perf_counter() - started
        print(json.dumps({**cell, "latencies_s": latencies, "wall_s": wall, "peak_rss_mb": peak_rss_mb(), "pid": os.getpid()}), flush=True)


if __name__ == "__main__":
    main()
