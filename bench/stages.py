"""Where one request's time goes: each stage of the service's path, timed alone (issue 5).

    python bench/stages.py [--megapixels 12] [--repeats 3] [--refine-megapixels 2,8,12,24] [--refine-photo PATH]

The stages are the functions the service calls, in its order, on one bench JPEG: probe and
decode, the model's input, IS-Net, the sky network, the scene measures, the person detector, the
matte at output size, the matting stage (BGR_REFINE), the foreground's colours, and the PNG of each
mode at the service's compression levels. Medians of ``--repeats``.

Then the matting stage alone at each of ``--refine-megapixels``, beside IS-Net's forward in the same
run (the stage's time depends on the photo's size and on how much of the subject's outline is unsure;
the forward's does not), and the foreground's colours of the refined matte (what a refined cut-out also gets): on
``--refine-photo`` (default: the portrait with the most flying hair of
../shared/evaldata-hires when it is there, else the bench JPEG) scaled to each size, with its own matte.
The forward is that of the networks a photo goes through (IS-Net and the sky network), on the runtime the
engine picked and, where that is not ONNX Runtime, on ONNX Runtime fp32 too (the CPU path before OpenVINO's bf16).
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
        refine_by_size(engine, [float(mp) for mp in args.refine_megapixels.split(",")], args.refine_photo, small, args.repeats)


PORTRAIT = ROOT.parent / "shared" / "evaldata-hires" / "ppm100" / "images" / "ppm_14996438642_58c976f957_o.jpg"


def networks_forward(engine: MattingEngine, batch: torch.Tensor):
    """One call of the networks a photo goes through (IS-Net, and the sky network where it is loaded)."""

    def forward() -> None:
        engine._matte(batch).cpu()
        if engine.sky_model is not None:
            engine._sky(batch).cpu()

    return forward


def refine_by_size(engine: MattingEngine, sizes: list[float], photo: Path | None, small: np.ndarray, repeats: int) -> None:
    """The matting stage on one photo scaled to each size, beside the networks' forward on the served runtime and,
    where that is not it, on ONNX Runtime fp32 (the CPU path before OpenVINO); medians of ``repeats``, interleaved."""
    from PIL import Image

    source = photo or (PORTRAIT if PORTRAIT.exists() else make_jpeg(12.0, ROOT / "bench" / "results" / "inputs"))
    original = Image.open(source).convert("RGB")
    forwards = {f"{engine.runtime} {engine.choice.precision if engine.choice else engine.dtype}": networks_forward(engine, engine._to_device(small[None]))}
    if engine.device.type == "cpu" and engine.runtime != "onnxruntime":
        fp32 = MattingEngine.from_settings(Settings.from_env().replace(runtime="onnxruntime", dtype="float32"))
        forwards["onnxruntime fp32"] = networks_forward(fp32, fp32._to_device(small[None]))
    seconds: dict[str, list[float]] = {name: [] for name in forwards}
    with torch.inference_mode():
        for name, forward in forwards.items():
            forward()  # warm-up
        for _ in range(repeats):
            for name, forward in forwards.items():
                started = time.perf_counter()
                forward()
                seconds[name].append(time.perf_counter() - started)
    medians = {name: float(np.median(times)) for name, times in seconds.items()}
    networks = "IS-Net + sky network" if engine.sky_model is not None else "IS-Net"
    print(f"\nthe matting stage on {source.name}, {torch.get_num_threads()} threads; the networks' forward ({networks}): "
          + ", ".join(f"{name} {value:.3f} s" for name, value in medians.items()))
    print(f"{'size':>16s} {'refine s':>9s}" + "".join(f" {'x ' + name:>20s}" for name in medians) + f" {'colours s':>10s}")
    for megapixels in sizes:
        scale = (megapixels * 1e6 / (original.width * original.height)) ** 0.5
        image = original.resize((round(original.width * scale), round(original.height * scale)), Image.LANCZOS)
        rgb = np.asarray(image)
        matte = engine.analyse(model_input(rgb, engine.resolution, engine.input_filter)[None])[0].matte
        base = matte_at_size(matte, image.width, image.height)
        refine = median_seconds(lambda: refine_matte(rgb, matte, base), repeats)
        refined = refine_matte(rgb, matte, base)
        colours = median_seconds(lambda: estimate_foreground(rgb, refined), repeats)  # what a refined cut-out also gets
        line = f"{image.width:>7d} x {image.height:<6d} {refine:9.3f}" + "".join(f" {refine / value:20.2f}" for value in medians.values())
        print(line + f" {colours:10.3f}", flush=True)
    # The worst case: a matte unsure everywhere, over a texture (the band is then the whole picture until
    # MattingParams.max_band_pixels makes the stage work at a coarser size).
    print("worst case (noise, the matte 0.5 everywhere; the colours of an alpha semi-transparent everywhere):")
    for megapixels in sizes:
        width = round((megapixels * 1e6 * 1.5) ** 0.5)
        height = round(megapixels * 1e6 / width)
        noise = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        unsure = np.full((engine.resolution, engine.resolution), 0.5, dtype=np.float32)
        refine = median_seconds(lambda: refine_matte(noise, unsure), repeats)
        # The colours' worst case: every pixel semi-transparent, so every piece of the photo is worked on.
        soft = np.random.default_rng(1).integers(1, 255, (height, width), dtype=np.uint8)
        colours = median_seconds(lambda: estimate_foreground(noise, soft), repeats)
        line = f"{width:>7d} x {height:<6d} {refine:9.3f}" + "".join(f" {refine / value:20.2f}" for value in medians.values())
        print(line + f" {colours:10.3f}", flush=True)

if __name__ == "__main__":
    main()
