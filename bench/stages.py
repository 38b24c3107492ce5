"""Where one request's time goes: each stage of the service's path, timed alone (issue 5).

    python bench/stages.py [--megapixels 12] [--repeats 3]

The stages are the functions the service calls, in its order, on one bench JPEG: probe and
decode, the model's input, IS-Net, the sky network, the scene measures, the person detector, the
matte at output size, and the PNG of each mode at the service's compression levels. Medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from inputs import make_jpeg  # noqa: E402

from app.imaging.decode import decode_image, probe_image  # noqa: E402
from app.imaging.png import iter_matte_png, iter_rgba_png  # noqa: E402
from app.inference.engine import MattingEngine  # noqa: E402
from app.inference.pipeline import matte_at_size, model_input  # noqa: E402
from app.inference.scene import measure  # noqa: E402
from app.settings import Settings  # noqa: E402


def median_seconds(step, repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    settings = Settings.from_env()
    engine = MattingEngine.from_settings(settings)
    data = make_jpeg(args.megapixels, ROOT / "bench" / "results" / "inputs").read_bytes()
    rgb = decode_image(data, None).rgb
    small = model_input(rgb, engine.resolution, engine.input_filter)
    batch = engine._to_device(small[None])
    analysis = engine.analyse(small[None])[0]
    height, width = rgb.shape[:2]
    alpha = matte_at_size(analysis.matte, width, height)

    stages = {
        "probe + decode": lambda: (probe_image(data), decode_image(data, None)),
        f"model input (resize to the model, {engine.input_filter.name.lower()})": lambda: model_input(rgb, engine.resolution, engine.input_filter),
        # .cpu(): on a GPU the call only queues the work; the copy back waits for it to finish.
        # With a second pass (BGR_SECOND_RESOLUTION) this is both passes.
        "IS-Net": lambda: engine._matte(batch).cpu(),
        "sky network": (lambda: engine._sky(batch).cpu()) if engine.sky_model is not None else None,
        "scene measures": (lambda: measure(analysis.matte, analysis.sky)) if analysis.sky is not None else None,
        # Asked only of photos whose layout says scene; timed here at the output size it is given.
        "person detector": (lambda: engine.person_detector.score(rgb)) if engine.person_detector is not None else None,
        "matte at output size": lambda: matte_at_size(analysis.matte, width, height),
        f"RGBA PNG (level {settings.png_compression})": lambda: b"".join(iter_rgba_png(rgb, alpha, settings.png_compression)),
        f"matte PNG (level {settings.matte_png_compression})": lambda: b"".join(iter_matte_png(alpha, settings.matte_png_compression)),
    }
    second = f", second pass at {engine.second_resolution}²" if engine.second_resolution else ""
    precision = engine.choice.precision if engine.choice else str(engine.dtype)
    print(f"{width} x {height} JPEG, {engine.runtime} {precision} on {engine.device}{second}, {torch.get_num_threads()} threads")
    results = {}
    with torch.inference_mode():
        for name, step in stages.items():
            if step is not None:
                results[name] = median_seconds(step, args.repeats)
                print(f"{name:44s} {results[name]:7.3f} s", flush=True)
    model = results["IS-Net"] + results.get("sky network", 0.0)
    rest = {
        "backgroundRemoval": sum(v for k, v in results.items() if k not in ("IS-Net", "sky network") and not k.startswith("matte PNG")),
        "foregroundMatting": sum(v for k, v in results.items() if k not in ("IS-Net", "sky network") and not k.startswith("RGBA PNG")),
    }
    for mode, seconds in rest.items():
        print(f"{mode}: everything but the models {seconds:.3f} s against the models' {model:.3f} s ({seconds / model:.2f}x)")


if __name__ == "__main__":
    main()
