"""Where one request's time goes: each stage of the service's path, timed alone (issue 5).

    python bench/stages.py [--megapixels 12] [--repeats 3] [--refine-megapixels 2,8,12,24] [--refine-photo PATH]

The stages are the functions the service calls, in its order, on one bench JPEG: probe and
decode, the model's input, IS-Net, the sky network, the scene measures, the person detector, the
matte at output size, the matting stage (BGR_REFINE), the foreground's colours, and the PNG of each
mode at the service's compression levels. Medians of ``--repeats``.

Then the matting stage alone at each of ``--refine-megapixels``, beside IS-Net's forward in the same
run (the stage's time depends on the photo's size and on how much of the subject's outline is unsure;
the forward's does not): on ``--refine-photo`` (default: the portrait with the most flying hair of
../shared/evaldata-hires when it is there, else the bench JPEG) scaled to each size, with its own matte.
Where OpenVINO is installed, IS-Net's forward is also timed there in bf16 (the faster CPU runtime, for
the stage's ratio to it).
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
from app.inference.foreground import estimate_foreground  # noqa: E402
from app.inference.matting import refine_matte  # noqa: E402
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
    parser.add_argument("--refine-megapixels", default="2,8,12,24", help="sizes the matting stage is timed at ('' for none)")
    parser.add_argument("--refine-photo", type=Path, default=None)
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
        "matting stage (refine)": lambda: refine_matte(rgb, analysis.matte, alpha),
        "foreground colours (decontaminate)": lambda: estimate_foreground(rgb, alpha),
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
    optional = ("IS-Net", "sky network", "matting stage (refine)", "foreground colours (decontaminate)")
    rest = {
        "backgroundRemoval": sum(v for k, v in results.items() if k not in optional and not k.startswith("matte PNG")),
        "foregroundMatting": sum(v for k, v in results.items() if k not in optional and not k.startswith("RGBA PNG")),
    }
    for mode, seconds in rest.items():
        print(f"{mode}: everything but the models {seconds:.3f} s against the models' {model:.3f} s ({seconds / model:.2f}x)"
              " (without the matting stage and the foreground's colours)")
    if args.refine_megapixels:
        refine_by_size(engine, [float(mp) for mp in args.refine_megapixels.split(",")], args.refine_photo, batch, args.repeats)


PORTRAIT = ROOT.parent / "shared" / "evaldata-hires" / "ppm100" / "images" / "ppm_14996438642_58c976f957_o.jpg"


def openvino_forward(engine: MattingEngine):
    """IS-Net's forward in OpenVINO at bf16 (its CPU plug-in's own precision hint), or None without OpenVINO."""
    try:
        import openvino as ov
    except ImportError:
        return None
    from app.inference.ort_backend import onnx_name

    weights = Settings.from_env().weights
    core = ov.Core()
    model = core.read_model(str(weights.parent / onnx_name(weights)))
    model.reshape([1, 3, engine.resolution, engine.resolution])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).normal(0, 0.3, (1, 3, engine.resolution, engine.resolution)).astype(np.float32)
    return lambda: request.infer({0: x})


def refine_by_size(engine: MattingEngine, sizes: list[float], photo: Path | None, batch, repeats: int) -> None:
    """The matting stage on one photo scaled to each size, beside the forward(s), medians of ``repeats``."""
    from PIL import Image

    source = photo or (PORTRAIT if PORTRAIT.exists() else make_jpeg(12.0, ROOT / "bench" / "results" / "inputs"))
    original = Image.open(source).convert("RGB")
    with torch.inference_mode():
        forward = median_seconds(lambda: engine._matte(batch).cpu(), repeats)
    ov_forward = openvino_forward(engine)
    ov_seconds = median_seconds(ov_forward, repeats) if ov_forward is not None else None
    print(f"\nthe matting stage on {source.name}, {torch.get_num_threads()} threads; IS-Net's forward: {engine.runtime} "
          f"{forward:.3f} s" + (f", OpenVINO bf16 {ov_seconds:.3f} s" if ov_seconds else ""))
    print(f"{'size':>16s} {'refine s':>9s} {'x forward':>10s}" + (f" {'x OpenVINO':>11s}" if ov_seconds else ""))
    for megapixels in sizes:
        scale = (megapixels * 1e6 / (original.width * original.height)) ** 0.5
        image = original.resize((round(original.width * scale), round(original.height * scale)), Image.LANCZOS)
        rgb = np.asarray(image)
        matte = engine.analyse(model_input(rgb, engine.resolution, engine.input_filter)[None])[0].matte
        base = matte_at_size(matte, image.width, image.height)
        seconds = median_seconds(lambda: refine_matte(rgb, matte, base), repeats)
        line = f"{image.width:>7d} x {image.height:<6d} {seconds:9.3f} {seconds / forward:10.2f}"
        print(line + (f" {seconds / ov_seconds:11.2f}" if ov_seconds else ""), flush=True)


if __name__ == "__main__":
    main()
