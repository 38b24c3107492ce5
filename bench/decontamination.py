"""Colour decontamination measured where the truth is known (issue 4).

    python bench/decontamination.py [--shared ../shared] [--set alphamatting_lowres] [--out bench/results/decontamination.json]

Composition-1k's recipe on the soft-alpha pairs of the evaluation data:

1. truth: the ground-truth matte, and a foreground colour estimated from the original photo and
   that matte by an independent method (pymatting's multi-level estimator, Germer et al. 2020);
2. composites: that foreground over new backgrounds (scikit-image's sample photos) through the
   true matte, sent to the real service over HTTP with ``decontaminate=false`` and ``=true``;
3. both cut-outs, and the truth, are pasted over a flat colour that contrasts with the new
   background (its complement), and compared in 8-bit units.

Reported: the mean absolute error over the true soft band (0.02 < alpha < 0.98), once with the
service's own matte (what a user sees) and once with the true matte (the colour alone).
Lower is better; the matte is the same in both runs, so the difference is the colour's.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from procs import free_port, start_server  # noqa: E402

BACKGROUNDS = ("rocket", "coffee", "chelsea")  # scikit-image's bundled photos (public domain / CC0)
SEGMENT = "/computervision/imageanalysis:segment"


def soft_pairs(shared: Path, only_set: str) -> list[tuple[str, Path, Path]]:
    manifest = shared / "evaldata" / "manifest.csv"
    with manifest.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["set"] == only_set and r["gt_type"] == "soft-alpha"]
    return [(r["id"], shared / "evaldata" / r["image"], shared / "evaldata" / r["gt"]) for r in rows]


def cover(photo: np.ndarray, width: int, height: int) -> np.ndarray:
    """``photo`` scaled to cover ``width x height`` and centre-cropped."""
    image = Image.fromarray(photo).convert("RGB")
    scale = max(width / image.width, height / image.height)
    image = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))), Image.LANCZOS)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.float32) / 255


def over(colour: np.ndarray, alpha: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    return alpha[..., None] * colour + (1 - alpha[..., None]) * backdrop


def png_bytes(rgb01: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(rgb01 * 255), 0, 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def cut_out(client: httpx.Client, body: bytes, decontaminate: bool) -> tuple[np.ndarray, np.ndarray]:
    response = client.post(
        SEGMENT,
        params={"api-version": "2023-02-01-preview", "mode": "backgroundRemoval", "decontaminate": str(decontaminate).lower()},
        content=body,
        headers={"content-type": "application/octet-stream"},
    )
    response.raise_for_status()
    rgba = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGBA"), dtype=np.float32) / 255
    return rgba[..., :3], rgba[..., 3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--set", default="alphamatting_lowres")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "decontamination.json")
    parser.add_argument("--service-env", action="append", default=[], metavar="BGR_X=Y")
    args = parser.parse_args()

    from pymatting import estimate_foreground_ml  # the bench extra (rembg depends on it)
    from skimage import data

    pairs = soft_pairs(args.shared, args.set)
    if not pairs:
        sys.exit(f"no soft-alpha pairs of set {args.set} under {args.shared / 'evaldata'}")
    backgrounds = {name: getattr(data, name)() for name in BACKGROUNDS}
    port = free_port()
    env = {"BGR_HOST": "127.0.0.1", "BGR_PORT": str(port), **dict(kv.split("=", 1) for kv in args.service_env)}
    server = start_server("service", [sys.executable, "-m", "app"], env, port, "/health/ready", ROOT / "bench" / "results" / "logs", cwd=ROOT)
    rows = []
    try:
        with httpx.Client(base_url=server.base_url, timeout=300) as client:
            for pair_id, image_path, gt_path in pairs:
                photo = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float64) / 255
                alpha = np.asarray(Image.open(gt_path).convert("L"), dtype=np.float64) / 255
                truth = estimate_foreground_ml(photo, alpha).astype(np.float32)
                alpha = alpha.astype(np.float32)
                band = (alpha > 0.02) & (alpha < 0.98)
                height, width = alpha.shape
                for name, background in backgrounds.items():
                    backdrop_photo = cover(background, width, height)
                    body = png_bytes(over(truth, alpha, backdrop_photo))
                    contrast = 1 - backdrop_photo.reshape(-1, 3).mean(0)  # the complement of the old background
                    expected = over(truth, alpha, contrast)
                    row = {"id": pair_id, "background": name, "band_pixels": int(band.sum())}
                    for label, flag in (("off", False), ("on", True)):
                        started = time.perf_counter()
                        colour, served_alpha = cut_out(client, body, flag)
                        row[f"seconds_{label}"] = time.perf_counter() - started
                        as_seen = over(colour, served_alpha, contrast)
                        colour_only = over(colour, alpha, contrast)
                        row[f"error_{label}"] = float(np.abs(as_seen - expected)[band].mean() * 255)
                        row[f"colour_error_{label}"] = float(np.abs(colour_only - expected)[band].mean() * 255)
                    rows.append(row)
                    print(
                        f"{pair_id} over {name}: error {row['error_off']:.2f} -> {row['error_on']:.2f}, "
                        f"colour only {row['colour_error_off']:.2f} -> {row['colour_error_on']:.2f}",
                        flush=True,
                    )
    finally:
        server.stop()

    summary = {
        key: float(np.mean([r[key] for r in rows]))
        for key in ("error_off", "error_on", "colour_error_off", "colour_error_on", "seconds_off", "seconds_on")
    }
    summary["composites"] = len(rows)
    print(f"\n{len(rows)} composites ({len(pairs)} {args.set} mattes x {len(backgrounds)} backgrounds), soft band, 8-bit units:")
    print("| decontaminate | error as seen (service's matte) | colour error (true matte) | s per request |")
    print("|---|---:|---:|---:|")
    for label in ("off", "on"):
        print(f"| {label} | {summary[f'error_{label}']:.2f} | {summary[f'colour_error_{label}']:.2f} | {summary[f'seconds_{label}']:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
