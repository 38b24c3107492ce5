"""Does an engine variant give the same mattes as the fp32 PyTorch reference? (issue 5's accuracy bar)

    python bench/engine_agreement.py --candidate runtime=onnxruntime [--pairs 10]
    python bench/engine_agreement.py --candidate dtype=bfloat16 --pairs 10     # on a CPU with bf16

Runs the service's pipeline (model input, model, matte at the image's size) on the first
``--pairs`` evaluation pairs, spread over the sets, with the reference settings and with the
candidate's (``field=value`` overrides of app.settings.Settings). Reports, per pair and
overall (mean, and the worst pair, which is what the pass/fail uses): IoU at 0.5 between the two mattes (bar: > 0.995), the mean absolute difference
between them, and the difference of their MAE against the ground truth (bar: < 0.002),
plus seconds per model call for each. Writes JSON beside the printout with ``--json``.

``--sample-photos`` uses scikit-image's bundled photos instead (no ground truth, so agreement
only): for a machine without ../shared, such as a lent GPU.

    python bench/engine_agreement.py --sample-photos --reference device=cuda dtype=float32 \
        --candidate device=cuda dtype=float16
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.inference.engine import MattingEngine  # noqa: E402
from app.inference.pipeline import matte_at_size, model_input  # noqa: E402
from app.quality import iou, load_gray, mae  # noqa: E402
from app.settings import Settings  # noqa: E402

IOU_BAR, MAE_BAR = 0.995, 0.002


def spread_pairs(manifest: Path, count: int) -> list[dict[str, str]]:
    """``count`` pairs taken round-robin over the sets, so every set is represented."""
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    by_set: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_set.setdefault(row["set"], []).append(row)
    picked: list[dict[str, str]] = []
    while len(picked) < count and any(by_set.values()):
        for items in by_set.values():
            if items and len(picked) < count:
                picked.append(items.pop(0))
    return picked


# Photos with a subject. Not the micrographs or the Hubble field: there the matte keeps a few hundred
# pixels, and an IoU over so few says nothing (fp16 on an H100: 0.975 at a mean difference of 5e-5).
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


Photo = tuple[str, np.ndarray, np.ndarray | None]  # name, RGB, ground truth (None: agreement only)


def sample_photos() -> Iterator[Photo]:
    """scikit-image's bundled colour photos, without ground truth."""
    from skimage import data

    for name in SAMPLE_PHOTOS:
        yield f"skimage/{name}", getattr(data, name)(), None


def evaluation_pairs(manifest: Path, count: int) -> Iterator[Photo]:
    """Read one at a time, as they are compared."""
    for pair in spread_pairs(manifest, count):
        rgb = np.asarray(Image.open(manifest.parent / pair["image"]).convert("RGB"))
        yield f"{pair['set']}/{pair['id']}", rgb, load_gray(manifest.parent / pair["gt"])


def overrides(pairs: list[str]) -> dict[str, object]:
    """``name=value`` pairs, as text: Settings parses and checks each value as it does the environment's."""
    out: dict[str, object] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in Settings.model_fields:
            raise SystemExit(f"unknown setting {name!r}")
        out[name] = value
    return out


def matte(engine: MattingEngine, rgb: np.ndarray) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    raw = engine.predict(model_input(rgb, engine.resolution, engine.input_filter)[None])[0]
    seconds = time.perf_counter() - started
    return matte_at_size(raw, rgb.shape[1], rgb.shape[0]).astype(np.float32) / 255, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", nargs="+", required=True, metavar="FIELD=VALUE")
    parser.add_argument("--reference", nargs="*", default=["device=cpu", "dtype=float32"], metavar="FIELD=VALUE")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--manifest", type=Path, default=ROOT.parent / "shared" / "evaldata" / "manifest.csv")
    parser.add_argument("--sample-photos", action="store_true", help="scikit-image's photos instead of the pairs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.sample_photos and not args.manifest.exists():
        print(f"error: {args.manifest} not found (the evaluation pairs live in ../shared/evaldata)", file=sys.stderr)
        return 2
    reference = MattingEngine.from_settings(Settings(**overrides(args.reference)))  # type: ignore[arg-type]
    candidate = MattingEngine.from_settings(Settings(**{"device": "cpu", **overrides(args.candidate)}))  # type: ignore[arg-type]
    photos = sample_photos() if args.sample_photos else evaluation_pairs(args.manifest, args.pairs)
    rows = []
    for name, rgb, gt in photos:
        ref, ref_s = matte(reference, rgb)
        cand, cand_s = matte(candidate, rgb)
        row = {
            "pair": name,
            "iou_between": iou(cand, ref),
            "mean_abs_diff": float(np.abs(cand - ref).mean()),
            "mae_diff": abs(mae(cand, gt) - mae(ref, gt)) if gt is not None else 0.0,
            "reference_s": ref_s,
            "candidate_s": cand_s,
        }
        rows.append(row)
        print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    summary = {
        "candidate": args.candidate,
        "reference": args.reference,
        "pairs": len(rows),
        "mean_iou_between": float(np.mean([r["iou_between"] for r in rows])),
        "min_iou_between": min(r["iou_between"] for r in rows),
        "mean_mae_diff": float(np.mean([r["mae_diff"] for r in rows])),
        "max_mae_diff": max(r["mae_diff"] for r in rows),
        "max_mean_abs_diff": max(r["mean_abs_diff"] for r in rows),
        "median_reference_s": float(np.median([r["reference_s"] for r in rows])),
        "median_candidate_s": float(np.median([r["candidate_s"] for r in rows])),
    }
    summary["passes"] = summary["min_iou_between"] > IOU_BAR and summary["max_mae_diff"] < MAE_BAR
    print(json.dumps(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
    return 0 if summary["passes"] else 1


if __name__ == "__main__":
    sys.exit(main())
