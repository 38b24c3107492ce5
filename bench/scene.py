"""Subject or scene: how often the service's routing is right, and the IoU it gets per set.

    python bench/scene.py [--shared ../shared] [--cache bench/results/cache/scene] [--out bench/results/scene.json]

Three groups, each scored with IoU at 0.5 against what Azure would return:

- subject photos, every pair of ../shared/evaldata (expected: the ground-truth matte or mask);
- scene photos, the images of ../shared/evaldata-sky with at least 10% sky (expected: everything
  but the ground-truth sky; CamVid's unlabelled pixels are left out);
- Azure's own two outputs in ../shared/azure-spec/observed-outputs (the Capitol photo must be a
  scene, the face photo a subject).

Model outputs are cached per image, so changing the rule or the refinement is cheap; ``--measures``
writes every image's measured quantities as CSV for choosing thresholds; ``--sky-resolution`` runs the sky
network at another input size (cached separately). The service's settings come from the
environment as the service reads them: ``BGR_SECOND_RESOLUTION=768`` routes on the two-pass
matte a GPU serves by default (cached separately too). ``--timing N`` also times
IS-Net alone against IS-Net plus the sky network on N images.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.imaging.decode import decode_image  # noqa: E402
from app.inference.engine import SKY_SERVING_RESOLUTION, Analysis, MattingEngine  # noqa: E402
from app.inference.pipeline import matte_at_size, model_input  # noqa: E402
from app.inference.scene import SceneRule, measure, scene_alpha  # noqa: E402
from app.settings import Settings  # noqa: E402

MIN_SKY = 0.10


@dataclass(frozen=True)
class Case:
    group: str  # subject | scene | azure
    set: str
    name: str
    image: Path
    expected_target: str
    truth: Path
    truth_kind: str  # matte (foreground bright) | sky (sky bright: expected is its inverse) | rgba (alpha channel)
    ignore: Path | None = None


def cases(shared: Path) -> list[Case]:
    found: list[Case] = []
    evaldata = shared / "evaldata"
    with (evaldata / "manifest.csv").open() as f:
        for row in csv.DictReader(f):
            found.append(Case("subject", row["set"], row["id"], evaldata / row["image"], "subject", evaldata / row["gt"], "matte"))
    sky_root = shared / "evaldata-sky"
    for set_dir in sorted(p for p in sky_root.iterdir() if p.is_dir()):
        for entry in json.loads((set_dir / "index.json").read_text()):
            if entry["sky_frac"] < MIN_SKY:
                continue
            stem = entry["stem"]
            image = next((set_dir / "images").glob(f"{stem}.*"))
            ignore = set_dir / "ignore" / f"{stem}.png"
            found.append(
                Case("scene", set_dir.name, stem, image, "scene", set_dir / "masks" / f"{stem}.png", "sky", ignore if ignore.exists() else None)
            )
    observed = shared / "azure-spec" / "observed-outputs"
    found.append(Case("azure", "azure", "building", observed / "input_building.jpg", "scene", observed / "foregroundMatting_building_800x600.png", "matte"))
    found.append(Case("azure", "azure", "face", observed / "input_face.jpeg", "subject", observed / "backgroundRemoval_face_225x225.png", "rgba"))
    return found


def expected_mask(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """What Azure would keep (bool H x W), and which pixels count."""
    truth = Image.open(case.truth)
    if case.truth_kind == "rgba":
        keep = np.asarray(truth.convert("RGBA"))[:, :, 3] >= 128
    else:
        gray = np.asarray(truth.convert("L")) >= 128
        keep = ~gray if case.truth_kind == "sky" else gray
    counted = np.ones_like(keep)
    if case.ignore is not None:
        counted = np.asarray(Image.open(case.ignore).convert("L")) < 128
    return keep, counted


def iou(alpha: np.ndarray, keep: np.ndarray, counted: np.ndarray) -> float:
    predicted = (alpha >= 128) & counted
    keep = keep & counted
    union = (predicted | keep).sum()
    return float((predicted & keep).sum() / union) if union else 1.0


def analysed(engine: MattingEngine, case: Case, rgb: np.ndarray, cache: Path) -> Analysis:
    two_passes = f"-second{engine.second_resolution}" if engine.second_resolution else ""
    path = cache / f"sky{engine.sky_resolution}{two_passes}" / case.set / f"{case.name}.npz"
    if path.exists():
        stored = np.load(path)
        return Analysis(stored["matte"].astype(np.float32) / 65535, stored["sky"].astype(np.float32) / 65535)
    analysis = engine.analyse(model_input(rgb, engine.resolution, engine.input_filter)[None])[0]
    assert analysis.sky is not None, "the sky network is not loaded: run `python -m app.weights fetch`"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, matte=np.rint(analysis.matte * 65535).astype(np.uint16), sky=np.rint(analysis.sky * 65535).astype(np.uint16))
    return analysis


def timing(engine: MattingEngine, images: list[np.ndarray]) -> dict[str, float]:
    batches = [model_input(rgb, engine.resolution, engine.input_filter)[None] for rgb in images]
    engine.analyse(batches[0])
    sky_model, results = engine.sky_model, {}
    for label, model in (("isnet", None), ("isnet+sky", sky_model)):
        engine.sky_model = model
        started = time.perf_counter()
        for batch in batches:
            engine.analyse(batch)
        results[label] = (time.perf_counter() - started) / len(batches)
    engine.sky_model = sky_model
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "cache" / "scene")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scene.json")
    parser.add_argument("--measures", type=Path, default=None, help="write every image's measures and scores as CSV")
    parser.add_argument("--timing", type=int, default=0, help="also time IS-Net with and without the sky network on N images")
    parser.add_argument("--sky-resolution", type=int, default=SKY_SERVING_RESOLUTION, help="side of the sky network's input (served: %(default)s)")
    args = parser.parse_args()

    engine = MattingEngine.from_settings(Settings.from_env())  # BGR_SECOND_RESOLUTION=768: as a GPU serves it
    engine.sky_resolution = args.sky_resolution
    rule = SceneRule()
    rows = []
    for case in cases(args.shared):
        rgb = decode_image(case.image.read_bytes(), None).rgb
        analysis = analysed(engine, case, rgb, args.cache)
        assert analysis.sky is not None
        keep, counted = expected_mask(case)
        height, width = keep.shape
        if rgb.shape[:2] != (height, width):  # a truth stored at another size than its photo (none known; be safe)
            rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.LANCZOS))
        measures = measure(analysis.matte, analysis.sky)
        target = rule.decide(measures)
        subject_iou = iou(matte_at_size(analysis.matte, width, height), keep, counted)
        scene_iou = iou(scene_alpha(analysis.sky, rgb), keep, counted)
        rows.append(
            {
                "group": case.group,
                "set": case.set,
                "name": case.name,
                "expected": case.expected_target,
                "target": target,
                "iou": scene_iou if target == "scene" else subject_iou,
                "iou_subject": subject_iou,
                "iou_scene": scene_iou,
                **vars(measures),
            }
        )
    report(rows, args)
    if args.timing:
        photos = [decode_image(case.image.read_bytes(), None).rgb for case in cases(args.shared)[: args.timing]]
        seconds = timing(engine, photos)
        print(f"\nseconds per image (batch 1, {engine.device}, {engine.dtype}): " + ", ".join(f"{k} {v:.3f}" for k, v in seconds.items()))


def report(rows: list[dict], args: argparse.Namespace) -> None:
    by_set: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        by_set[(row["group"], row["set"])].append(row)
    print(f"{'group':8} {'set':20} {'n':>4} {'right':>6} {'wrong':>6} {'IoU':>7} {'IoU as scene':>13} {'IS-Net IoU':>11}")
    summary = {}
    for (group, name), members in sorted(by_set.items()):
        right = sum(row["target"] == row["expected"] for row in members)
        scenes = [row["iou"] for row in members if row["target"] == "scene"]
        entry = {
            "n": len(members),
            "right": right,
            "wrong": len(members) - right,
            "iou": float(np.mean([row["iou"] for row in members])),
            "iou_routed_scene": float(np.mean(scenes)) if scenes else None,
            "iou_isnet_alone": float(np.mean([row["iou_subject"] for row in members])),
        }
        summary[f"{group}/{name}"] = entry
        as_scene = f"{entry['iou_routed_scene']:.4f}" if scenes else "-"
        print(f"{group:8} {name:20} {len(members):4d} {right:6d} {len(members) - right:6d} {entry['iou']:7.4f} {as_scene:>13} {entry['iou_isnet_alone']:11.4f}")
    for row in rows:
        if row["group"] == "azure":
            print(f"azure {row['name']}: routed {row['target']} (expected {row['expected']}), IoU with Azure's output {row['iou']:.4f}")
    subjects = [row for row in rows if row["group"] == "subject"]
    scenes = [row for row in rows if row["group"] == "scene"]
    both = subjects + scenes
    routed_scene = [row["iou"] for row in scenes if row["target"] == "scene"]
    goals = {
        "decisions_right": sum(row["target"] == row["expected"] for row in both) / len(both),
        "subjects_turned_scene": sum(row["target"] == "scene" for row in subjects) / len(subjects),
        "scene_iou_all": float(np.mean([row["iou"] for row in scenes])),
        "scene_iou_routed_scene": float(np.mean(routed_scene)) if routed_scene else 0.0,
        "subject_iou": float(np.mean([row["iou"] for row in subjects])),
        "subject_iou_isnet_alone": float(np.mean([row["iou_subject"] for row in subjects])),
    }
    print("\n" + "\n".join(f"{name:26} {value:.4f}" for name, value in goals.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rule": vars(SceneRule()), "sets": summary, "goals": goals}, indent=2) + "\n")
    if args.measures:
        with args.measures.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
