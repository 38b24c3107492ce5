"""What each output option costs, beside the anchor: Azure's RGBA PNG at the service's default level.

    python bench/output_options.py [--megapixels 2 12] [--repeats 3] [--markdown]

For each size, one bench JPEG (bench/inputs.py) is decoded and IS-Net's real matte made at output size, once; then
each option (app/imaging/output.py, and remove.bg's placement, app/imaging/placement.py, where that module is
present) is timed alone on the same cut-out, and so is the whole body an API sends with it. Each row is timed in
turns with the anchor (anchor, option, anchor, option, ...; medians of ``--repeats``), and its ratio is to the anchor
of its own turns: on a shared machine whose load changes from row to row, that ratio stays put where the seconds
do not.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from inputs import make_jpeg  # noqa: E402

from app.imaging.decode import decode_image  # noqa: E402
from app.imaging.output import Box, crop_to, encode_jpeg, encode_webp, fill_colour, fill_image, foreground_box  # noqa: E402
from app.imaging import placement  # noqa: E402
from app.imaging.png import iter_matte_png, iter_rgba_png  # noqa: E402
from app.inference.engine import MattingEngine  # noqa: E402
from app.inference.pipeline import matte_at_size, model_input  # noqa: E402
from app.settings import Settings  # noqa: E402

Step = Callable[[], object]


def in_turns(step: Step, anchor: Step, repeats: int) -> tuple[float, float]:
    """Median seconds of ``step`` and of ``anchor``, timed alternately after one untimed call of each."""
    step(), anchor()
    times: dict[Step, list[float]] = {step: [], anchor: []}
    for _ in range(repeats):
        for timed in (anchor, step):
            started = time.perf_counter()
            timed()
            times[timed].append(time.perf_counter() - started)
    return float(np.median(times[step])), float(np.median(times[anchor]))


def png(rgb: np.ndarray, alpha: np.ndarray, level: int) -> bytes:
    return b"".join(iter_rgba_png(rgb, alpha, level))


def margins_of(box: Box, share: float) -> tuple[int, int, int, int]:
    """``share`` of the subject's size on each side (remove.bg's crop_margin as a percentage)."""
    vertical, horizontal = round(box.height * share), round(box.width * share)
    return (vertical, horizontal, vertical, horizontal)


def placement_rows(rgb: np.ndarray, alpha: np.ndarray, box: Box, level: int) -> dict[str, Step]:
    """remove.bg's placement (app/imaging/placement.py): scale 50% centred, and a region of interest."""
    height, width = alpha.shape
    canvas = (width, height)
    target = placement.placed_box(box, canvas, 0.5, (0.5, 0.5))
    middle = Box(width // 4, height // 4, width // 2, height // 2)
    return {
        "place (scale 50%, centred)": lambda: placement.place(rgb, alpha, box, canvas, target),
        "keep_region (roi: the middle quarter)": lambda: placement.keep_region(alpha, middle),
        "body: scaled 50% and centred, PNG": lambda: png(*placement.place(rgb, alpha, box, canvas, target), level),
    }


def options(rgb: np.ndarray, alpha: np.ndarray, level: int, matte_level: int) -> dict[str, Step]:
    """Each option alone, then each whole body as an API sends it (option and encoding together)."""
    height, width = alpha.shape
    white, translucent = (255, 255, 255, 255), (0, 0, 255, 128)
    # A background photo of another size and aspect, so fill_image resizes and crops it as it would a user's.
    background = np.ascontiguousarray(np.asarray(Image.fromarray(rgb[:, ::-1]).resize((width * 3 // 4, height))))
    box = foreground_box(alpha) or Box(0, 0, width, height)
    margins = margins_of(box, 0.1)
    filled, _ = fill_colour(rgb, alpha, white)
    return {
        "anchor: RGBA PNG (Azure's cut-out)": lambda: png(rgb, alpha, level),
        "fill_colour, opaque": lambda: fill_colour(rgb, alpha, white),
        "fill_colour, semi-transparent": lambda: fill_colour(rgb, alpha, translucent),
        "fill_image (resized to cover)": lambda: fill_image(rgb, alpha, background),
        "foreground_box": lambda: foreground_box(alpha),
        "crop_to (box + 10% margins)": lambda: crop_to(rgb, alpha, box, margins),
        "encode_jpeg (q 90)": lambda: encode_jpeg(filled),
        "encode_webp (lossy q 90, alpha)": lambda: encode_webp(rgb, alpha),
        "encode_webp (lossless, alpha)": lambda: encode_webp(rgb, alpha, lossless=True),
        "matte PNG (mask only)": lambda: b"".join(iter_matte_png(alpha, matte_level)),
        **placement_rows(rgb, alpha, box, level),
        "body: over a colour, PNG": lambda: png(*fill_colour(rgb, alpha, white), level),
        "body: over a colour, JPEG": lambda: encode_jpeg(fill_colour(rgb, alpha, white)[0]),
        "body: over an image, PNG": lambda: png(*fill_image(rgb, alpha, background), level),
        "body: cropped, PNG": lambda: png(*crop_to(rgb, alpha, foreground_box(alpha) or box, margins), level),
        "body: scaled 50%, PNG": lambda: png(*placement.place(rgb, alpha, box, (width, height), placement.placed_box(box, (width, height), 0.5, (0.5, 0.5))), level),
        "body: JPEG + matte PNG (remove.bg's zip parts)": lambda: (encode_jpeg(rgb), b"".join(iter_matte_png(alpha, matte_level))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, nargs="+", default=[2.0, 12.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()

    settings = Settings.from_env()
    engine = MattingEngine.from_settings(settings)
    columns: dict[float, dict[str, tuple[float, float]]] = {}  # seconds and ratio to the anchor, per row
    sizes: dict[float, str] = {}
    for megapixels in args.megapixels:
        data = make_jpeg(megapixels, ROOT / "bench" / "results" / "inputs").read_bytes()
        rgb = decode_image(data, None).rgb
        height, width = rgb.shape[:2]
        analysis = engine.analyse(model_input(rgb, engine.resolution, engine.input_filter)[None])[0]
        alpha = matte_at_size(analysis.matte, width, height)
        sizes[megapixels] = f"{width} x {height}"
        columns[megapixels] = {}
        steps = options(rgb, alpha, settings.png_compression, settings.matte_png_compression)
        anchor = next(iter(steps.values()))
        for name, step in steps.items():
            seconds, anchor_seconds = in_turns(step, anchor, args.repeats)
            columns[megapixels][name] = (seconds, seconds / anchor_seconds)
            print(f"{megapixels:g} MP  {name}: {seconds:.4f} s, anchor {anchor_seconds:.4f} s", file=sys.stderr, flush=True)

    names = list(next(iter(columns.values())))
    if args.markdown:
        header = " | ".join(f"{mp:g} MP ({sizes[mp]})" for mp in columns)
        print(f"| option | {header} |")
        print("|---|" + "---:|" * len(columns))
        for name in names:
            cells = [f"{columns[mp][name][0]:.4f} s ({columns[mp][name][1]:.2f}x)" for mp in columns]
            print(f"| {name} | " + " | ".join(cells) + " |")
        return
    for name in names:
        cells = "  ".join(f"{columns[mp][name][0]:8.4f} s {columns[mp][name][1]:6.2f}x" for mp in columns)
        print(f"{name:50s} {cells}")


if __name__ == "__main__":
    main()
