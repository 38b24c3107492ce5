"""Closed-form matting of the uncertain band: does a matting solver on a trimap from the matte pay?

    python bench/band_matting.py [--bands 3,5,10] [--limit N] [--out bench/results/band_matting]

The trimap comes from the service's own matte (our preprocessing, sigmoid, bilinear to image
size): definite foreground where the matte is above 0.95 and definite background where it is
below 0.05, each eroded by ``band`` pixels; everything else is unknown. The unknown pixels are then
solved by closed-form matting (Levin et al. 2008) with pymatting's reference solver (3 x 3
windows, exact in float64; the bench extra installs it with rembg). Prints per set and overall
the default matte's metrics against the solved mattes' and the solver's seconds per image;
writes JSON.

The model's logits come from bench/quality.py's cache (``--cache``), computed on a miss.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality import METRICS, add_pair_arguments, cached_outputs, manifest_found, read_pairs, score, sigmoid, summarise  # noqa: E402

from app.inference.engine import MattingEngine  # noqa: E402
from app.inference.pipeline import matte_at_size  # noqa: E402
from app.quality import load_gray  # noqa: E402
from app.settings import Settings  # noqa: E402


def trimap(matte: np.ndarray, band: int) -> np.ndarray:
    """1 definite foreground, 0 definite background, 0.5 unknown: the matte's soft zone widened by ``band`` pixels."""
    import torch
    import torch.nn.functional as F

    def widened(mask: np.ndarray) -> np.ndarray:  # pixels within ``band`` (a square window) of the mask
        tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
        return F.max_pool2d(tensor, 2 * band + 1, stride=1, padding=band)[0, 0].numpy() > 0

    out = np.full(matte.shape, 0.5)
    out[~widened(matte <= 0.95)] = 1.0
    out[~widened(matte >= 0.05)] = 0.0
    return out


def band_matte(rgb: np.ndarray, matte: np.ndarray, band: int) -> np.ndarray:
    """The matte with its unknown band solved by closed-form matting (the matte itself where the trimap lacks a side)."""
    tri = trimap(matte, band)
    if not (tri == 1).any() or not (tri == 0).any():
        return matte
    from pymatting import estimate_alpha_cf  # the bench extra: only this benchmark needs it
    with contextlib.redirect_stdout(io.StringIO()):  # its preconditioner's fallback warnings
        alpha = estimate_alpha_cf(rgb.astype(np.float64) / 255, tri)
    return np.clip(alpha, 0, 1).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_arguments(parser, ROOT / "bench" / "results" / "band_matting")
    parser.add_argument("--bands", default="3,5,10", help="trimap band radii in pixels, comma-separated")
    args = parser.parse_args(argv)
    if not manifest_found(args.manifest):
        return 2
    bands = [int(b) for b in args.bands.split(",")]
    engine = MattingEngine.from_settings(Settings(device="cpu"))
    pairs = read_pairs(args.manifest, args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, pair in enumerate(pairs, 1):
        rgb = np.asarray(Image.open(args.manifest.parent / pair["image"]).convert("RGB"))
        gt = load_gray(args.manifest.parent / pair["gt"])
        _, _, plain, _, _ = cached_outputs(engine, rgb, args.cache / f"{pair['set']}__{pair['id']}.npz")
        prob = sigmoid(plain.astype(np.float32))
        matte = matte_at_size(prob, rgb.shape[1], rgb.shape[0]).astype(np.float32) / 255
        key = {"set": pair["set"], "id": pair["id"]}
        rows.append({"config": "default", **key, **score(matte, gt), "seconds": 0.0})
        for band in bands:
            started = time.perf_counter()
            solved = band_matte(rgb, matte, band)
            rows.append({"config": f"band {band}", **key, **score(solved, gt), "seconds": time.perf_counter() - started})
        print(f"\r{index}/{len(pairs)} pairs", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    summary = summarise(rows)
    (args.out / "band_matting.json").write_text(json.dumps({"summary": summary, "pairs": rows}, indent=1) + "\n")
    print(f"{'config':10s} {'set':22s} {'pairs':>5s} " + " ".join(f"{m:>8s}" for m in METRICS))
    for config, sets in summary.items():
        for name, m in sorted(sets.items(), key=lambda kv: (kv[0] == "overall", kv[0])):
            print(f"{config:10s} {name:22s} {m['pairs']:5d} " + " ".join(f"{m[k]:8.4f}" for k in METRICS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
