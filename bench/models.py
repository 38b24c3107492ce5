"""Every network this machine has, side by side on image/ground-truth pairs, as the service serves each.

    python bench/models.py [--manifest ../shared/evaldata/manifest.csv] [--limit N] [--models a,b] [--out bench/results/models]

A network is run when its weights are in place (``weights fetch --model NAME``) and its licence
needs no acceptance or is accepted (BGR_ACCEPT_LICENCES); the rest are listed as not measured.
Each runs through the service's own engine on the CPU at its catalogue side (IS-Net networks at
BGR_RESOLUTION), the matte resized back as the service does. Prints MAE, Grad, IoU@0.5 and
seconds per image per set and overall, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.catalogue import CATALOGUE  # noqa: E402
from app.inference.engine import MattingEngine, ModelUnavailableError  # noqa: E402
from app.inference.pipeline import matte_at_size, model_input  # noqa: E402
from app.quality import grad_error, iou, load_gray, mae  # noqa: E402
from app.settings import Settings  # noqa: E402

METRICS = ("mae", "grad", "iou", "seconds")


def pairs(manifest: Path, limit: int) -> list[tuple[str, Path, Path]]:
    taken: dict[str, int] = defaultdict(int)
    chosen = []
    with manifest.open(newline="") as f:
        for row in csv.DictReader(f):
            if limit and taken[row["set"]] >= limit:
                continue
            taken[row["set"]] += 1
            chosen.append((row["set"], manifest.parent / row["image"], manifest.parent / row["gt"]))
    return chosen


def measure(engine: MattingEngine, chosen: list[tuple[str, Path, Path]]) -> dict[str, dict[str, float]]:
    per_set: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for name, image, truth in chosen:
        with Image.open(image) as opened:
            rgb = np.asarray(opened.convert("RGB"))
        gt = load_gray(truth)
        started = time.perf_counter()
        matte = engine.predict(model_input(rgb, engine.resolution, engine.input_filter)[None])[0]
        alpha = matte_at_size(matte, gt.shape[1], gt.shape[0]).astype(np.float32) / 255.0
        seconds = time.perf_counter() - started
        for bucket in (per_set[name], per_set["all"]):
            bucket["mae"].append(mae(alpha, gt))
            bucket["grad"].append(grad_error(alpha, gt))
            bucket["iou"].append(iou(alpha, gt))
            bucket["seconds"].append(seconds)
    return {name: {metric: float(np.mean(values[metric])) for metric in METRICS} for name, values in per_set.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=ROOT.parent / "shared" / "evaldata" / "manifest.csv")
    parser.add_argument("--limit", type=int, default=0, help="at most this many pairs per set (0: all)")
    parser.add_argument("--models", default="", help="comma-separated networks (default: every catalogued one)")
    parser.add_argument("--models-dir", type=Path, default=None, help="default $BGR_MODELS_DIR or model_weights/")
    parser.add_argument("--resolution", type=int, default=None, help="the IS-Net networks' side (default BGR_RESOLUTION)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "models")
    args = parser.parse_args(argv)

    base = Settings.from_env()
    overrides: dict[str, object] = {"device": "cpu", "target": "subject"}
    if args.models_dir is not None:
        overrides["models_dir"] = args.models_dir
    if args.resolution is not None:
        overrides["resolution"] = args.resolution
    settings = base.replace(**overrides)
    names = [n for n in args.models.split(",") if n] or list(CATALOGUE)
    chosen = pairs(args.manifest, args.limit)
    results: dict[str, object] = {}
    for name in names:
        try:
            engine = MattingEngine.from_settings(settings, name)
        except ModelUnavailableError as reason:
            results[name] = {"measured": False, "reason": str(reason)}
            continue
        engine.warm_up()
        results[name] = {"measured": True, "resolution": engine.resolution, "runtime": engine.runtime, "sets": measure(engine, chosen)}
        overall = results[name]["sets"]["all"]  # type: ignore[index]
        print(f"{name:24s} {engine.runtime:12s} {engine.resolution:5d}  " + "  ".join(f"{m} {overall[m]:.4f}" for m in METRICS))
    for name, result in results.items():
        if not result["measured"]:  # type: ignore[index]
            print(f"{name:24s} not measured here")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "models.json").write_text(json.dumps({"pairs": len(chosen), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
