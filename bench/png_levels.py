"""Deflate levels for the service's PNGs: time and size, zlib's 0-9 against ISA-L's 0-3.

    python bench/png_levels.py [--manifest ../shared/evaldata/manifest.csv] [--limit 36] [--repeats 3]

The rows deflated are the encoder's own: each photo's cut-out (its ground-truth matte as alpha,
Up-filtered) and its matte (unfiltered), taken from the level-0 PNG the service would send, so
every library and level compresses the same bytes. Times are deflate alone (one stream per image,
best of the repeats); sizes are compressed over raw. The encoder itself, with its CRCs and
chunking, is timed by bench/stages.py.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from isal import isal_zlib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from app.imaging.decode import decode_image  # noqa: E402
from app.imaging.png import BAND_BYTES, iter_matte_png, iter_rgba_png, zlib_compressor  # noqa: E402
from app.quality import load_gray  # noqa: E402

ISAL_LEVELS = range(isal_zlib.ISAL_BEST_COMPRESSION + 1)


def filtered_rows(png: bytes) -> bytes:
    """The filtered scanlines inside a level-0 PNG: its IDAT data, inflated."""
    position, idat = 8, bytearray()
    while position < len(png):
        length = int.from_bytes(png[position : position + 4], "big")
        if png[position + 4 : position + 8] == b"IDAT":
            idat += png[position + 8 : position + 8 + length]
        position += 12 + length
    return zlib.decompress(bytes(idat))


def deflate(rows: bytes, library: str, level: int, filtered: bool) -> int:
    """Compressed size, fed in the encoder's band size."""
    stream = isal_zlib.compressobj(level) if library == "isal" else zlib_compressor(level, filtered)
    size = sum(len(stream.compress(rows[start : start + BAND_BYTES])) for start in range(0, len(rows), BAND_BYTES))
    return size + len(stream.flush())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=ROOT.parent / "shared" / "evaldata" / "manifest.csv")
    parser.add_argument("--limit", type=int, default=36, help="photos, taken evenly over the manifest")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.manifest.exists():
        sys.exit(f"no evaluation manifest at {args.manifest} (it lives in ../shared/evaldata)")

    with args.manifest.open(newline="") as handle:
        pairs = list(csv.DictReader(handle))
    pairs = pairs[:: max(1, len(pairs) // args.limit)][: args.limit]
    cutouts, mattes = [], []
    for pair in pairs:
        rgb = decode_image((args.manifest.parent / pair["image"]).read_bytes(), None).rgb
        alpha = (load_gray(args.manifest.parent / pair["gt"]) * 255).round().astype(np.uint8)
        cutouts.append(filtered_rows(b"".join(iter_rgba_png(rgb, alpha, 0))))
        mattes.append(filtered_rows(b"".join(iter_matte_png(alpha, 0))))
    pixels = sum(len(rows) for rows in mattes)
    print(f"{len(pairs)} photos, {pixels / 1e6:.1f} MP in all; deflate time summed over them, best of {args.repeats}")
    print(f"{'':10s} {'library':8s} {'level':>5s} {'ms':>8s} {'size / raw':>11s}")
    configs = [("zlib", level) for level in range(10)] + [("isal", level) for level in ISAL_LEVELS]
    for kind, streams, filtered in (("cut-outs", cutouts, True), ("mattes", mattes, False)):
        raw = sum(len(rows) for rows in streams)
        for library, level in configs:
            best, size = float("inf"), 0
            for _ in range(args.repeats):
                started = time.perf_counter()
                size = sum(deflate(rows, library, level, filtered) for rows in streams)
                best = min(best, time.perf_counter() - started)
            print(f"{kind:10s} {library:8s} {level:5d} {best * 1000:8.1f} {size / raw:11.4f}", flush=True)


if __name__ == "__main__":
    main()
