"""What one busy Python thread does to the service's per-request C calls (the GIL hand-back).

    python bench/gil_contention.py [--switch-interval-ms 5] [--megapixels 2] [--repeats 10]

Decoding, deflate and the networks run in C without the GIL; each call must take it back when
it returns. Alone that is free; with another thread running Python it waits for that thread to
give the GIL up, up to one switch interval. A stage made of many short C calls then slows by
far more than its own work. Each stage is timed alone, then beside a thread that spins in
Python (the worst case: in the service the contenders are the event loop and the other workers).
"""

from __future__ import annotations

import argparse
import io
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from inputs import make_jpeg  # noqa: E402

from app.imaging.decode import decode_image, probe_image  # noqa: E402
from app.imaging.png import crc, iter_matte_png, iter_rgba_png  # noqa: E402
from app.inference.pipeline import matte_at_size, model_input  # noqa: E402


def per_call(step, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats


def beside_busy_thread(step, repeats: int) -> float:
    done = threading.Event()

    def spin() -> None:
        while not done.is_set():
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        return per_call(step, repeats)
    finally:
        done.set()
        spinner.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switch-interval-ms", type=float, default=5.0, help="Python's default is 5")
    parser.add_argument("--megapixels", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    sys.setswitchinterval(args.switch_interval_ms / 1000)

    data = make_jpeg(args.megapixels, ROOT / "bench" / "results" / "inputs").read_bytes()
    rgb = decode_image(data, None).rgb
    height, width = rgb.shape[:2]
    matte = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    alpha = matte_at_size(matte, width, height)
    idat = bytes(8192)
    stages = {
        "200 x zlib.crc32 of 8 KB": lambda: [zlib.crc32(idat) for _ in range(200)],
        "200 x png's CRC of 8 KB (4 KB pieces)": lambda: [crc(idat) for _ in range(200)],
        "decode, Pillow's 64 KB feeds": lambda: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")),
        "probe + decode (the service's)": lambda: (probe_image(data), decode_image(data, None)),
        "model input (resize to 1024²)": lambda: model_input(rgb, 1024),
        "matte at output size": lambda: matte_at_size(matte, width, height),
        "RGBA PNG, level 2 (ISA-L, the default)": lambda: b"".join(iter_rgba_png(rgb, alpha, 2)),
        "RGBA PNG, level 4 (zlib)": lambda: b"".join(iter_rgba_png(rgb, alpha, 4)),
        "matte PNG, level 2 (ISA-L)": lambda: b"".join(iter_matte_png(alpha, 2)),
        "matte PNG, level 6 (zlib, the default)": lambda: b"".join(iter_matte_png(alpha, 6)),
    }
    print(f"{width} x {height}, switch interval {args.switch_interval_ms:g} ms; milliseconds per call")
    print(f"{'stage':40s} {'alone':>8s} {'beside a busy thread':>22s}")
    for name, step in stages.items():
        step()
        alone = per_call(step, args.repeats)
        contended = beside_busy_thread(step, args.repeats)
        print(f"{name:40s} {alone * 1000:8.1f} {contended * 1000:22.1f}", flush=True)


if __name__ == "__main__":
    main()
