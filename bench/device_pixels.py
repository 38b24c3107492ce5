"""The device pixel path (BGR_DEVICE_PIXELS) against the CPU path: how far its pixels are, and what each stage costs.

    python bench/device_pixels.py [--device cuda] [--limit 150] [--model-photos 8] [--json out.json]

Inputs: every photo of the evaluation set (``../shared/evaldata/manifest.csv``), JPEG-encoded at
quality 90 in memory (nothing is written or copied), and the bench's 2 MP and 12 MP JPEGs
(bench/inputs.py; without scikit-image, the first photo upscaled), which always go through the model. For each stage the device path runs on ``--device`` (default: CUDA when present,
else the CPU, where the same code runs libjpeg-turbo and CPU matrix products) and is compared with
the CPU path the service runs with device pixels off:

- decode: ``DevicePixels.decode_jpeg`` against Pillow (``decode_image``);
- model input at 1024², Lanczos (the GPU default, two passes) and bilinear (one pass): the device's
  decode and resize against the CPU path's; for the cut-out route (full decode) and the matte route
  (the CPU path decodes large JPEGs at a reduced DCT scale there, the device never does);
- matte upsampling to the photo's size, from the same model matte;
- the served matte: IS-Net (on ``--device``) run on each path's model input, each matte upsampled by
  its own path, on the first ``--model-photos`` photos (the model is slow on a CPU).

Each row: the largest grey-level difference, the share of values (pixels x channels) that differ,
the mean absolute difference; and median seconds per image of each path's stage. Prints Markdown,
writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from inputs import dimensions, make_jpeg  # noqa: E402

from app.imaging.decode import decode_image  # noqa: E402
from app.inference.device_pixels import DevicePixels  # noqa: E402
from app.inference.pipeline import matte_at_size, model_input  # noqa: E402

EVALDATA = Path(os.environ.get("BGR_SHARED_DIR", ROOT.parent / "shared")) / "evaldata"
GENERATED = ("coffee-", "upscaled-")  # the names of the generated large JPEGs, which always go through the model
FILTERS = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR}


@dataclass
class Comparison:
    """Differences between the two paths' outputs over many images, and each path's time per image."""

    max_difference: int = 0
    differing: int = 0
    values: int = 0
    absolute_sum: float = 0.0
    device_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    def add(self, device: np.ndarray, cpu: np.ndarray) -> None:
        assert device.shape == cpu.shape, (device.shape, cpu.shape)
        difference = np.abs(device.astype(np.int16) - cpu.astype(np.int16))
        self.max_difference = max(self.max_difference, int(difference.max()))
        self.differing += int(np.count_nonzero(difference))
        self.values += difference.size
        self.absolute_sum += float(difference.sum())

    def row(self) -> dict:
        return {
            "max_difference": self.max_difference,
            "differing_share": self.differing / max(self.values, 1),
            "mean_abs_difference": self.absolute_sum / max(self.values, 1),
            "device_s_median": float(np.median(self.device_seconds)) if self.device_seconds else None,
            "cpu_s_median": float(np.median(self.cpu_seconds)) if self.cpu_seconds else None,
            "values": self.values,
        }


def timed(step, synchronise, seconds: list[float]):
    synchronise()
    started = time.perf_counter()
    result = step()
    synchronise()
    seconds.append(time.perf_counter() - started)
    return result


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def stand_in(jpeg: bytes | None, width: int, height: int) -> Image.Image:
    """A photo Lanczos-upscaled to ``width x height``; without one, a gradient with a disc and grain."""
    if jpeg is not None:
        with Image.open(io.BytesIO(jpeg)) as image:
            return image.resize((width, height), Image.LANCZOS)
    y, x = np.mgrid[0:height, 0:width]
    picture = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], axis=2).astype(np.float32)
    picture[(x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2] = (250, 240, 30)
    picture += np.random.default_rng(0).normal(0, 6, picture.shape)
    return Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8))


def inputs(limit: int, folder: Path, sizes: list[float]) -> list[tuple[str, bytes]]:
    photos = []
    manifest = EVALDATA / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="") as f:
            for row in list(csv.DictReader(f))[:limit]:
                with Image.open(EVALDATA / row["image"]) as image:
                    photos.append((row["id"], jpeg_bytes(image)))
    else:
        print(f"{manifest} is absent: only the bench's generated JPEGs are measured", file=sys.stderr)
    for megapixels in sizes:
        try:
            path = make_jpeg(megapixels, folder)
        except ImportError as error:  # the bench extra's scikit-image makes them; without it, a photo upscaled
            width, height = dimensions(megapixels)
            print(f"{error}: the {megapixels} MP input is {'the first evaluation photo' if photos else 'a synthetic picture'}, upscaled",
                  file=sys.stderr)
            photos.append((f"upscaled-{width}x{height}", jpeg_bytes(stand_in(photos[0][1] if photos else None, width, height))))
            continue
        photos.append((path.name, path.read_bytes()))
    return photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--limit", type=int, default=150, help="evaluation photos measured")
    parser.add_argument("--model-photos", type=int, default=None, help="photos run through IS-Net (default: all on CUDA, 4 on the CPU)")
    parser.add_argument("--resolution", type=int, default=1024, help="the model's input side")
    parser.add_argument("--megapixels", default="2,12", help="sizes of the generated JPEGs measured beside the photos (comma-separated)")
    parser.add_argument("--inputs", type=Path, default=ROOT / "bench" / "results" / "inputs", help="where the generated JPEGs are kept (as bench/throughput.py keeps them)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    synchronise = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    pixels = DevicePixels(device)
    photos = inputs(args.limit, args.inputs, [float(mp) for mp in args.megapixels.split(",") if mp.strip()])
    model_photos = args.model_photos if args.model_photos is not None else (len(photos) if device.type == "cuda" else 4)
    comparisons: dict[str, Comparison] = {}
    refused: list[str] = []

    def compare(name: str) -> Comparison:
        return comparisons.setdefault(name, Comparison())

    engine = None
    if model_photos:
        from app.inference.engine import MattingEngine
        from app.settings import Settings

        # As served on this device: two passes and a Lanczos input on CUDA, one and bilinear on the CPU.
        engine = MattingEngine.from_settings(Settings(device=args.device, target="subject", resolution=args.resolution))

    for index, (name, data) in enumerate(photos):
        stage = compare("decode")
        decoded = timed(lambda: pixels.decode_jpeg(data), synchronise, stage.device_seconds)
        if decoded is None:
            refused.append(name)
            continue
        cpu_rgb = timed(lambda: decode_image(data).rgb, lambda: None, stage.cpu_seconds)
        stage.add(pixels.to_cpu(decoded), cpu_rgb)
        height, width = cpu_rgb.shape[:2]
        for filter_name, resample in FILTERS.items():
            stage = compare(f"model input, {filter_name}, cut-out route")
            device_input = timed(lambda: pixels.model_input(decoded, args.resolution, resample), synchronise, stage.device_seconds)
            cpu_input = timed(lambda: model_input(cpu_rgb, args.resolution, resample), lambda: None, stage.cpu_seconds)
            stage.add(device_input.cpu().numpy(), cpu_input)
            drafted = decode_image(data, (args.resolution, args.resolution)).rgb
            compare(f"model input, {filter_name}, matte route").add(device_input.cpu().numpy(), model_input(drafted, args.resolution, resample))
        coarse = np.asarray(Image.fromarray(cpu_rgb).convert("L").resize((args.resolution, args.resolution)), dtype=np.float32) / 255
        stage = compare("matte upsampling (same matte)")
        on_device = torch.from_numpy(coarse).to(device)
        device_matte = timed(lambda: pixels.matte_at_size(on_device, width, height), synchronise, stage.device_seconds)
        stage.add(device_matte, timed(lambda: matte_at_size(coarse, width, height), lambda: None, stage.cpu_seconds))
        if engine is not None and (index < model_photos or name.startswith(GENERATED)):
            device_input = pixels.model_input(decoded, args.resolution, engine.input_filter)
            cpu_input = model_input(cpu_rgb, args.resolution, engine.input_filter)
            device_analysis = engine.analyse(device_input[None])[0]
            cpu_analysis = engine.analyse(cpu_input[None])[0]
            compare("served matte (IS-Net, each path end to end)").add(
                pixels.matte_at_size(torch.from_numpy(device_analysis.matte).to(device), width, height),
                matte_at_size(cpu_analysis.matte, width, height),
            )
        print(f"{index + 1}/{len(photos)} {name}", file=sys.stderr, flush=True)

    rows = {name: comparison.row() for name, comparison in comparisons.items()}
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\nDevice path on {device_name} against the CPU path; {len(photos)} JPEGs, {len(refused)} left to the CPU ({', '.join(refused) or 'none'})\n")
    print("| stage | max grey-level difference | values differing | mean abs difference | device s/image | CPU s/image |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        device_s = f"{row['device_s_median']:.4f}" if row["device_s_median"] is not None else ""
        cpu_s = f"{row['cpu_s_median']:.4f}" if row["cpu_s_median"] is not None else ""
        print(f"| {name} | {row['max_difference']} | {row['differing_share']:.2e} | {row['mean_abs_difference']:.2e} | {device_s} | {cpu_s} |")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": device_name, "torch": torch.__version__, "photos": len(photos), "left_to_cpu": refused, "rows": rows}, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
