"""How far the matting stage is from what its design allows, and what else was tried on top of it.

    python bench/refine_ceiling.py [--pymatting] [--ids 0,1,...]

On every portrait of ../shared/evaldata-hires (the network's mattes from bench/hires.py's cache, so no forward runs;
run bench/quality.py --refine once first), each variant's MAE, soft-band and gradient errors at full size, as ratios
to IS-Net alone on each half (A: even rows, B: odd rows), with the median seconds of what the variant adds:

- ``stage``: the shipped stage (app/inference/matting.py, its defaults);
- ``ceiling``: the stage with its band's alpha at the working size taken from the ground truth (box-averaged to that
  size) instead of solved; the rest (band, guided upsampling, snap) unchanged. What a perfect solver at the working
  size would give, so the gap between ``stage`` and ``ceiling`` is the solver's, the rest the design's. Also at a
  1 MP working size (``ceiling 1MP``);
- ``coarse-to-fine 1MP band B``: the stage's result as the prior of a second pass at a 1 MP working size, in the band
  where that result is unsure, widened by B (network pixels of 1/2048 of the long side);
- ``data term L``: robust matting's sampling term (Wang & Cohen 2007) added to the stage's solver: at each band pixel,
  F and B are the mean colours of the nearest certain foreground and background (the smallest of windows of 1-16
  band widths that holds some), alpha's colour projection between them is a second target, weighted L times a
  confidence that is high where F and B differ (``|F - B|^2 / (|F - B|^2 + 0.3^2)``) and the pixel lies on their line
  (``exp(-residual^2 / 0.05^2)``): where colour separates, it decides, rather than the network's matte;
- ``gamma G``: the refined pixels' alpha raised to G (the stage's output over-estimates faint hair);
- ``mix W``: the refined pixels blended with the network's matte, W of the stage's;
- with ``--pymatting`` (about 9 minutes more): the band solved by pymatting's closed-form, KNN, large-kernel, random-walk
  and learning-based solvers on the trimap (the band unknown, the rest the network's matte, no prior).

It also prints the signed error of IS-Net alone and of the stage in the soft band, by the truth's level (does the
stage over- or under-estimate faint hair, and by how much of its error).

For each family with a parameter, the value with the lowest objective (the mean of the three ratios) on one half is
reported on the other, both ways round.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hires import HALVES, DeltaScorer, load_photo, load_truth, network_matte, read_pairs  # noqa: E402

from app.inference.matting import DEFAULT_PARAMS, _reduced, refine_matte, snapped, solve_band  # noqa: E402
from app.inference.pipeline import matte_at_size  # noqa: E402
from app.inference.refine import box_filter  # noqa: E402

OUT = ROOT / "bench" / "results" / "refine_ceiling.json"
METRICS = ("mae", "soft", "grad")


def ceiling(work_pixels: int):
    def variant(rgb, matte, base, stage, truth):
        height = truth.shape[0]
        truth_u8 = np.repeat((truth * 255 + 0.5).astype(np.uint8)[..., None], 3, 2)

        def solve(image, prior, band, params):
            factor = -(-height // image.shape[2])
            small = torch.from_numpy(_reduced(truth_u8, factor)[..., 0].astype(np.float32) / 255)[None, None]
            return torch.where(band[None, None], small, prior)

        return refine_matte(rgb, matte, base, replace(DEFAULT_PARAMS, work_pixels=work_pixels), solve=solve)

    return variant


def coarse_to_fine(band: float, work_pixels: int = 1_000_000, side: int = 2048):
    def variant(rgb, matte, base, stage, truth):
        height, width = stage.shape
        scale = side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        prior = np.asarray(Image.fromarray(stage).resize(size, Image.BILINEAR), dtype=np.float32) / 255
        return refine_matte(rgb, prior, stage, replace(DEFAULT_PARAMS, work_pixels=work_pixels, band=band))

    return variant


def _nearest_known_mean(image: torch.Tensor, known: torch.Tensor, reach: int) -> torch.Tensor:
    """``1 x 3 x h x w`` colours, ``1 x 1 x h x w`` 0/1 mask -> at each pixel, the mean colour of the known pixels in
    the smallest square window around it (radius ``reach`` times 1, 2, 4, 8 or 16) of which at least 2 % are known;
    where none is, the mean of all the known pixels."""
    out = known.new_zeros(image.shape)
    done = torch.zeros_like(known, dtype=torch.bool)
    for scale in (1, 2, 4, 8, 16):
        share = box_filter(known, reach * scale)
        fresh = (share > 0.02) & ~done
        out = torch.where(fresh, box_filter(image * known, reach * scale) / share.clamp_min(1e-6), out)
        done |= fresh
    everywhere = (image * known).sum((2, 3), keepdim=True) / known.sum().clamp_min(1)
    return torch.where(done, out, everywhere)


def data_term(weight: float, separation: float = 0.3, residual: float = 0.05):
    def variant(rgb, matte, base, stage, truth):
        def solve(image, prior, band, params):
            reach = max(1, round(params.band * max(image.shape[2:]) / max(matte.shape)))
            off_band = (~band)[None, None].float()
            foreground = _nearest_known_mean(image, off_band * (prior >= 0.5).float(), reach)
            background = _nearest_known_mean(image, off_band * (prior < 0.5).float(), reach)
            span = foreground - background
            length2 = (span * span).sum(1, keepdim=True)
            projected = (((image - background) * span).sum(1, keepdim=True) / length2.clamp_min(1e-6)).clamp(0, 1)
            off_line = ((image - background - projected * span) ** 2).sum(1, keepdim=True)
            confidence = weight * length2 / (length2 + separation**2) * torch.exp(-off_line / residual**2)
            return solve_band(image, prior, band, params, data=(projected, confidence))

        return refine_matte(rgb, matte, base, solve=solve)

    return variant


def on_refined(change):
    """``change(stage's uint8 values, network's uint8 values) -> float alpha in [0, 255]`` on the pixels the stage refined."""

    def variant(rgb, matte, base, stage, truth):
        refined = stage != snapped(base)
        out = stage.copy()
        out[refined] = np.clip(change(stage[refined].astype(np.float32), base[refined].astype(np.float32)) + 0.5, 0, 255).astype(np.uint8)
        return out

    return variant


def gamma(g: float):
    return on_refined(lambda stage, network: 255 * (stage / 255) ** g)


def mix(w: float):
    return on_refined(lambda stage, network: w * stage + (1 - w) * network)


def pymatting_solver(name: str):
    def variant(rgb, matte, base, stage, truth):
        import pymatting

        estimate = getattr(pymatting, f"estimate_alpha_{name}")

        def solve(image, prior, band, params):
            trimap = (prior[0, 0] >= 0.5).double()
            trimap[band] = 0.5
            if not (trimap == 1).any() or not (trimap == 0).any():
                return prior
            with contextlib.redirect_stdout(io.StringIO()):
                alpha = estimate(image[0].permute(1, 2, 0).double().numpy(), trimap.numpy())
            return torch.where(band[None, None], torch.from_numpy(np.clip(alpha, 0, 1).astype(np.float32))[None, None], prior)

        return refine_matte(rgb, matte, base, solve=solve)

    return variant


def variants(with_pymatting: bool) -> dict[str, tuple[str, object]]:
    """name -> (family, function of (rgb, matte, base, stage, truth))."""
    table = {"stage": ("stage", None), "ceiling": ("ceiling", ceiling(DEFAULT_PARAMS.work_pixels)),
             "ceiling 1MP": ("ceiling 1MP", ceiling(1_000_000))}
    table.update({f"coarse-to-fine 1MP band {b:g}": ("coarse-to-fine", coarse_to_fine(b)) for b in (2.0, 4.0)})
    table.update({f"data term {w:g}": ("data term", data_term(w)) for w in (0.01, 0.03, 0.1, 0.3)})
    table.update({f"gamma {g:g}": ("gamma", gamma(g)) for g in (1.1, 1.2, 1.35, 1.5, 1.7)})
    table.update({f"mix {w:g}": ("mix", mix(w)) for w in (0.8, 0.6)})
    if with_pymatting:
        table.update({f"pymatting {n}": ("pymatting", pymatting_solver(n)) for n in ("cf", "knn", "lkm", "rw", "lbdm")})
    return table


LEVELS = (0.03, 0.15, 0.35, 0.65, 0.85, 0.97)  # the soft band's truth levels the signed error is split by


def signed_by_level(alpha: np.ndarray, truth: np.ndarray) -> list[list[float]]:
    """``H x W`` uint8 alpha, float truth in [0, 1] -> per level bin: [pixels, sum of signed error, sum of |error|]."""
    out = []
    for low, high in zip(LEVELS, LEVELS[1:]):
        inside = (truth > low) & (truth <= high)
        error = alpha[inside].astype(np.float32) / 255 - truth[inside]
        out.append([int(inside.sum()), float(error.sum(dtype=np.float64)), float(np.abs(error).sum(dtype=np.float64))])
    return out


def summary(rows: list[dict], name: str, half: str) -> dict[str, float]:
    mine = [r for r in rows if r["variant"] == name and r["half"] == half]
    alone = [r for r in rows if r["variant"] == "isnet" and r["half"] == half]
    out = {f"{m}_x": float(np.mean([r[m] for r in mine]) / np.mean([r[m] for r in alone])) for m in METRICS}
    out["objective"] = float(np.mean(list(out.values())))
    out["median_s"] = float(np.median([r["seconds"] for r in mine]))
    return out


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pymatting", action="store_true", help="also pymatting's solvers in the band (slow; the bench extra)")
    parser.add_argument("--ids", default="", help="comma-separated indices into the sorted manifest (default: all)")
    args = parser.parse_args(argv)
    table = variants(args.pymatting)
    pairs = read_pairs()
    if args.ids:
        pairs = [pairs[int(i)] for i in args.ids.split(",")]
    rows, levels = [], {}
    for index, pair in enumerate(pairs, 1):
        data, rgb = load_photo(pair.image)
        matte, _ = network_matte(None, rgb, data)
        truth = load_truth(pair.gt)
        base = matte_at_size(matte, pair.width, pair.height)
        scorer = DeltaScorer(truth, base)
        started = time.perf_counter()
        stage = refine_matte(rgb, matte, base)
        stage_s = time.perf_counter() - started
        rows.append({"variant": "isnet", "id": pair.id, "half": pair.half, "seconds": 0.0, **scorer.score(base)})
        for name, alpha in (("isnet", base), ("stage", stage)):
            levels.setdefault((name, pair.half), []).append(signed_by_level(alpha, truth))
        for name, (_, function) in table.items():
            started = time.perf_counter()
            alpha = stage if function is None else function(rgb, matte, base, stage, truth)
            seconds = stage_s if function is None else time.perf_counter() - started
            rows.append({"variant": name, "id": pair.id, "half": pair.half, "seconds": seconds, **scorer.score(alpha)})
        print(f"\r{index}/{len(pairs)} photos", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    halves = [h for h in HALVES if any(r["half"] == h for r in rows)]
    results = {name: {h: summary(rows, name, h) for h in halves} for name in table}
    print(f"{'variant':32s} | " + " | ".join(f"{h}: MAE x  soft x  grad x   s" for h in halves))
    for name, by_half in results.items():
        print(f"{name:32s} | " + " | ".join(f"{h}: {s['mae_x']:.3f}  {s['soft_x']:.3f}  {s['grad_x']:.3f}  {s['median_s']:.2f}" for h, s in by_half.items()))
    by_level = {}
    print("\nsigned error in the soft band by the truth's level (mean error, mean |error|; all pixels of a half pooled)")
    for (name, half), per_photo in sorted(levels.items(), key=lambda item: (item[0][1], item[0][0])):
        pooled = np.sum(np.array(per_photo), axis=0)
        by_level[f"{name} {half}"] = [{"truth": [low, high], "pixels": int(n), "mean": s / max(n, 1), "mean_abs": a / max(n, 1)}
                                      for (low, high), (n, s, a) in zip(zip(LEVELS, LEVELS[1:]), pooled)]
        cells = "  ".join(f"{c['truth'][0]:.2f}-{c['truth'][1]:.2f}: {c['mean']:+.3f} ({c['mean_abs']:.3f})" for c in by_level[f"{name} {half}"])
        print(f"{half} {name:6s} {cells}")
    picks = {}
    if len(halves) == 2:
        for family in sorted({f for f, _ in table.values()} - {"stage", "ceiling", "ceiling 1MP", "pymatting"}):
            members = [n for n, (f, _) in table.items() if f == family]
            for picked_on, held_out in (("A", "B"), ("B", "A")):
                best = min(members, key=lambda n: results[n][picked_on]["objective"])
                s = results[best][held_out]
                picks[f"{family}, picked on {picked_on}"] = {"variant": best, "held_out": held_out, **s}
                print(f"{family}: picked on {picked_on}: {best}  ->  on {held_out}: MAE x{s['mae_x']:.3f}, soft-band x{s['soft_x']:.3f}, grad x{s['grad_x']:.3f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"results": results, "picks": picks, "by_level": by_level, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
