"""The quality gate for a runtime or precision: the service as configured against today's fp32 engine, end to end.

    python bench/runtime_gate.py                        # what BGR_RUNTIME=auto serves on this machine
    BGR_RUNTIME=openvino BGR_DTYPE=float32 python bench/runtime_gate.py
    BGR_REFINE=off python bench/runtime_gate.py         # any BGR_* setting applies to both sides

Both sides are the real pipeline (app.service.SegmentService with its batcher: decoding, the model
input, the networks, subject-or-scene routing, the matte at the image's size, the PNG), built from
the environment's settings (``Settings.from_env()``): the served side as they are, the reference
with ``BGR_RUNTIME=onnxruntime BGR_DTYPE=float32``, today's CPU engine. Each photo is sent as
``foregroundMatting`` with the server's default target (``auto`` unless BGR_TARGET says otherwise).

Photos: every pair of ../shared/evaldata (manifest.csv and manifest-horses.csv), the scene photos
bench/scene.py routes (../shared/evaldata-sky, at least 10% sky), Azure's two observed outputs, and
../shared/evaldata-hires (1.5-24 MP portraits; IoU there thresholds the truth at 128, as its README
asks). Per set, for each side: IoU@0.5 and MAE against what Azure would return (the matte for a
subject; everything but the sky for a scene photo), and how each photo was routed.

The gate (exit status 1 when it fails): per set, IoU and MAE within 0.002 of fp32's; the route the
same as fp32's on at least 99 % of the photos; no subject photo taken for a scene. The reference's
answers are cached (``--cache``; keyed by its settings), so a second candidate costs one side only.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import io
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from app.inference.batcher import Batcher  # noqa: E402
from app.inference.engine import MattingEngine, load_engines, pick_batch_size  # noqa: E402
from app.pixel_budget import PixelBudget  # noqa: E402
from app.service import SegmentService  # noqa: E402
from app.settings import Settings  # noqa: E402
from scene import Case, cases, expected_mask  # noqa: E402

METRIC_BAR = 0.002  # per set, |served - fp32| for IoU and for MAE
ROUTE_BAR = 0.99  # share of photos routed as fp32 routes them


def hires_cases(shared: Path) -> list[Case]:
    folder = shared / "evaldata-hires"
    with (folder / "manifest.csv").open(newline="") as f:
        return [Case("subject", f"{row['set']} (hires)", row["id"], folder / row["image"], "subject", folder / row["gt"], "matte") for row in csv.DictReader(f)]


def all_cases(shared: Path) -> list[Case]:
    return cases(shared) + hires_cases(shared)


def reference_settings(served: Settings) -> Settings:
    return served.replace(runtime="onnxruntime", dtype="float32")


def score(case: Case, alpha: np.ndarray) -> tuple[float, float]:
    """IoU@0.5 and MAE of ``alpha`` (H x W uint8) against what Azure would return, over the pixels that count."""
    keep, counted = expected_mask(case)
    if alpha.shape != keep.shape:  # a truth stored at another size than its photo (none known; be safe)
        alpha = np.asarray(Image.fromarray(alpha).resize(keep.shape[::-1], Image.BILINEAR))
    predicted = alpha.astype(np.float32) / 255
    if case.truth_kind == "matte" and case.group == "subject":
        truth = np.asarray(Image.open(case.truth).convert("L"), dtype=np.float32) / 255  # soft truth for the MAE
    else:
        truth = keep.astype(np.float32)
    union = ((predicted >= 0.5) | keep)[counted].sum()
    iou = float(((predicted >= 0.5) & keep)[counted].sum() / union) if union else 1.0
    return iou, float(np.abs(predicted - truth)[counted].mean())


class Pipeline:
    """The service's pipeline for ``settings``, on an event loop of its own."""

    def __init__(self, settings: Settings, engines: dict[str, MattingEngine] | None = None) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.engines = engines if engines is not None else load_engines(settings)
        self.service = self.loop.run_until_complete(self._start())

    async def _start(self) -> SegmentService:
        for engine in self.engines.values():
            await asyncio.to_thread(engine.warm_up)
        self.batchers = {
            name: Batcher(engine.analyse, pick_batch_size(self.settings.max_batch_size, engine.device), self.settings.max_batch_wait_ms / 1000,
                          self.settings.queue_size, concurrency=engine.requests)
            for name, engine in self.engines.items()
        }
        for batcher in self.batchers.values():
            await batcher.start()
        return SegmentService.from_settings(self.settings, self.batchers, self.engines, PixelBudget(self.settings.max_pixels_in_flight))

    def matte(self, data: bytes) -> tuple[bytes, str, float]:
        """The foregroundMatting PNG, the target it was taken for, and the seconds it took."""

        async def run() -> tuple[bytes, str]:
            stream = await self.service.segment(data, "foregroundMatting")
            try:
                return b"".join(stream.chunks), stream.target
            finally:
                stream.close()

        started = time.perf_counter()
        png, target = self.loop.run_until_complete(run())
        return png, target, time.perf_counter() - started

    def close(self) -> None:
        for batcher in self.batchers.values():
            self.loop.run_until_complete(batcher.stop())
        self.loop.close()

    def describe(self) -> dict[str, object]:
        engine = next(iter(self.engines.values()))
        choice = engine.choice
        return {"runtime": engine.runtime, "precision": choice.precision if choice else str(engine.dtype), "reason": choice.reason if choice else "",
                "infer_requests": engine.requests, "model": engine.name}


def cache_key(settings: Settings) -> str:
    return hashlib.sha256(repr(settings).encode()).hexdigest()[:16]


def reference_answers(settings: Settings, photos: list[Case], cache: Path) -> dict[str, dict]:
    """fp32's matte PNG and route for every photo, from the cache where there (keyed by the reference's settings)."""
    folder = cache / cache_key(settings)
    folder.mkdir(parents=True, exist_ok=True)
    answers, missing = {}, []
    for case in photos:
        stored = folder / f"{case.set}--{case.name}.json"
        if stored.exists():
            answers[case_id(case)] = {**json.loads(stored.read_text()), "png": stored.with_suffix(".png").read_bytes()}
        else:
            missing.append(case)
    if missing:
        print(f"reference (fp32, ONNX Runtime): {len(missing)} photos to run, {len(photos) - len(missing)} cached in {folder}", flush=True)
        pipeline = Pipeline(settings)
        try:
            for case in missing:
                png, target, seconds = pipeline.matte(case.image.read_bytes())
                stored = folder / f"{case.set}--{case.name}.json"
                stored.with_suffix(".png").write_bytes(png)
                stored.write_text(json.dumps({"target": target, "seconds": seconds}))
                answers[case_id(case)] = {"target": target, "seconds": seconds, "png": png}
        finally:
            pipeline.close()
    return answers


def case_id(case: Case) -> str:
    return f"{case.set}/{case.name}"


def alpha_of(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("L"))


def gate(rows: list[dict]) -> tuple[list[dict], dict]:
    by_set: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_set[row["set"]].append(row)
    table = []
    for name, members in sorted(by_set.items(), key=lambda item: (item[1][0]["group"], item[0])):
        entry = {
            "set": name,
            "group": members[0]["group"],
            "n": len(members),
            **{f"{metric}_{side}": float(np.mean([r[f"{metric}_{side}"] for r in members])) for metric in ("iou", "mae") for side in ("fp32", "served")},
            "routes_same": sum(r["target_fp32"] == r["target_served"] for r in members),
            "scenes_fp32": sum(r["target_fp32"] == "scene" for r in members),
            "scenes_served": sum(r["target_served"] == "scene" for r in members),
            "worst_iou_between": min(r["iou_between"] for r in members),
            "mean_abs_diff": float(np.mean([r["mean_abs_diff"] for r in members])),
        }
        entry["passes"] = abs(entry["iou_served"] - entry["iou_fp32"]) <= METRIC_BAR and abs(entry["mae_served"] - entry["mae_fp32"]) <= METRIC_BAR
        table.append(entry)
    subjects = [r for r in rows if r["group"] == "subject"]
    summary = {
        "photos": len(rows),
        "routes_same": sum(r["target_fp32"] == r["target_served"] for r in rows) / len(rows),
        "subjects_taken_for_scenes_served": sum(r["target_served"] == "scene" for r in subjects),
        "subjects_taken_for_scenes_fp32": sum(r["target_fp32"] == "scene" for r in subjects),
        "sets_within_bar": sum(e["passes"] for e in table),
        "sets": len(table),
        "median_s_fp32": float(np.median([r["seconds_fp32"] for r in rows])),
        "median_s_served": float(np.median([r["seconds_served"] for r in rows])),
    }
    summary["passes"] = (
        summary["sets_within_bar"] == summary["sets"] and summary["routes_same"] >= ROUTE_BAR and summary["subjects_taken_for_scenes_served"] == 0
    )
    return table, summary


def markdown(table: list[dict], summary: dict, served: dict) -> str:
    lines = [
        f"served: {served['runtime']} {served['precision']} ({served['infer_requests']} request(s) in flight); reference: ONNX Runtime fp32",
        "",
        "| set | photos | IoU fp32 | IoU served | Δ IoU | MAE fp32 | MAE served | Δ MAE | routed the same | scenes fp32 / served | worst IoU between mattes | within 0.002 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in table:
        lines.append(
            f"| {e['set']} | {e['n']} | {e['iou_fp32']:.4f} | {e['iou_served']:.4f} | {e['iou_served'] - e['iou_fp32']:+.4f} | "
            f"{e['mae_fp32']:.4f} | {e['mae_served']:.4f} | {e['mae_served'] - e['mae_fp32']:+.4f} | {e['routes_same']}/{e['n']} | "
            f"{e['scenes_fp32']} / {e['scenes_served']} | {e['worst_iou_between']:.4f} | {'yes' if e['passes'] else '**no**'} |"
        )
    lines += [
        "",
        f"routed the same: {summary['routes_same']:.2%} of {summary['photos']} photos (bar: {ROUTE_BAR:.0%}); "
        f"subject photos taken for scenes: fp32 {summary['subjects_taken_for_scenes_fp32']}, served {summary['subjects_taken_for_scenes_served']} (bar: 0); "
        f"sets within 0.002: {summary['sets_within_bar']} of {summary['sets']}; median seconds a photo: fp32 {summary['median_s_fp32']:.2f}, served {summary['median_s_served']:.2f}",
        f"gate: {'PASSES' if summary['passes'] else 'FAILS'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None, engines: dict[str, MattingEngine] | None = None, label: str | None = None) -> int:
    """``engines``: serve these instead of what the settings load (bench/int8.py's int8 model); ``label`` names them in the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "cache" / "runtime_gate")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "runtime_gate.json")
    parser.add_argument("--limit", type=int, default=0, help="the first N photos of each set only (a smoke run; the gate needs all)")
    args = parser.parse_args(argv)
    if not (args.shared / "evaldata").is_dir():
        print(f"error: {args.shared / 'evaldata'} not found (the evaluation photos live in ../shared)", file=sys.stderr)
        return 2
    served_settings = Settings.from_env()
    photos = all_cases(args.shared)
    if args.limit:
        by_set: dict[str, list[Case]] = defaultdict(list)
        for case in photos:
            by_set[case.set].append(case)
        photos = [case for members in by_set.values() for case in members[: args.limit]]
    reference = reference_answers(reference_settings(served_settings), photos, args.cache)
    pipeline = Pipeline(served_settings, engines)
    served = pipeline.describe()
    if label is not None:
        served["precision"] = label
    print(f"served: {json.dumps(served)}; {len(photos)} photos", flush=True)
    rows = []
    try:
        for case in photos:
            png, target, seconds = pipeline.matte(case.image.read_bytes())
            ref = reference[case_id(case)]
            alpha, ref_alpha = alpha_of(png), alpha_of(ref["png"])
            iou_served, mae_served = score(case, alpha)
            iou_fp32, mae_fp32 = score(case, ref_alpha)
            a, b = alpha >= 128, ref_alpha >= 128
            union = (a | b).sum()
            rows.append({
                "group": case.group, "set": case.set, "name": case.name,
                "target_fp32": ref["target"], "target_served": target,
                "iou_fp32": iou_fp32, "iou_served": iou_served, "mae_fp32": mae_fp32, "mae_served": mae_served,
                "iou_between": float((a & b).sum() / union) if union else 1.0,
                "mean_abs_diff": float(np.abs(alpha.astype(np.float32) - ref_alpha).mean() / 255),
                "seconds_fp32": ref["seconds"], "seconds_served": seconds,
            })
    finally:
        pipeline.close()
    table, summary = gate(rows)
    print(markdown(table, summary, served))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"served": served, "summary": summary, "sets": table, "photos": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0 if summary["passes"] else 1


if __name__ == "__main__":
    sys.exit(main())
