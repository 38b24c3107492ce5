"""The README's before/after strip, made by the service itself from redistributable photos.

    python docs/make_strip.py [--out docs/images/before-after.jpg]

Photos: scikit-image's bundled samples. "astronaut" (Eileen Collins, NASA, public domain),
"chelsea" (CC0, Stéfan van der Walt) and "coffee" (CC0, Rachel Michetti). Each row shows the
input; the cut-out over a checkerboard; the cut-out over a contrasting colour as Azure would
return it; the same with ``decontaminate=true``; and the matte (foregroundMatting). The app
runs in this process on its defaults, through its HTTP interface.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "chelsea", "coffee")
ROW_HEIGHT = 220
BACKDROP = (24, 160, 72)  # green: far from skin, fur and coffee, so colour spill shows
LABELS = ("input", "cut-out", "over green", "over green, decontaminate=true", "matte")


def checkerboard(width: int, height: int, square: int = 12) -> Image.Image:
    ys, xs = np.mgrid[0:height, 0:width]
    light = ((ys // square + xs // square) % 2 == 0)[..., None]
    return Image.fromarray(np.where(light, 235, 190).astype(np.uint8).repeat(3, axis=2))


def segment(client, photo: np.ndarray, mode: str, **params: str) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "PNG")
    response = client.post(
        "/computervision/imageanalysis:segment",
        params={"api-version": "2023-02-01-preview", "mode": mode, **params},
        content=buffer.getvalue(),
        headers={"content-type": "application/octet-stream"},
    )
    response.raise_for_status()
    return Image.open(io.BytesIO(response.content))


def row(client, photo: np.ndarray) -> list[Image.Image]:
    plain = segment(client, photo, "backgroundRemoval").convert("RGBA")
    cleaned = segment(client, photo, "backgroundRemoval", decontaminate="true").convert("RGBA")
    matte = segment(client, photo, "foregroundMatting").convert("RGB")
    size = plain.size
    on_board = checkerboard(*size).convert("RGBA")
    on_board.alpha_composite(plain)
    on_green, cleaned_on_green = (Image.new("RGBA", size, BACKDROP + (255,)) for _ in range(2))
    on_green.alpha_composite(plain)
    cleaned_on_green.alpha_composite(cleaned)
    return [Image.fromarray(photo).convert("RGB"), on_board.convert("RGB"), on_green.convert("RGB"), cleaned_on_green.convert("RGB"), matte]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "before-after.jpg")
    args = parser.parse_args()

    from skimage import data
    from starlette.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings.from_env())) as client:
        rows = [row(client, getattr(data, name)()) for name in PHOTOS]

    tiles = [[tile.resize((round(tile.width * ROW_HEIGHT / tile.height), ROW_HEIGHT), Image.LANCZOS) for tile in r] for r in rows]
    columns = [max(r[i].width for r in tiles) for i in range(len(LABELS))]
    gap, header = 6, 22
    strip = Image.new("RGB", (sum(columns) + gap * (len(columns) + 1), header + len(tiles) * (ROW_HEIGHT + gap) + gap), "white")
    draw = ImageDraw.Draw(strip)
    x = gap
    for label, width in zip(LABELS, columns):
        draw.text((x, 5), label, fill="black")
        x += width + gap
    for index, r in enumerate(tiles):
        x, y = gap, header + index * (ROW_HEIGHT + gap)
        for tile, width in zip(r, columns):
            strip.paste(tile, (x + (width - tile.width) // 2, y))
            x += width + gap
    args.out.parent.mkdir(parents=True, exist_ok=True)
    strip.save(args.out, quality=90, optimize=True)
    print(f"wrote {args.out} ({strip.width} x {strip.height})")


if __name__ == "__main__":
    main()
