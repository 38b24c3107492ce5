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
IS-Net alone against IS-Net plus the sky network, and the person detector, on N images.

``--choose`` checks that the served rule's thresholds generalise: it picks them again on one part
of the photos and reports the other part with them, for each split (each half of every set, both
ways round, and each set left out in turn). On the part it picks on, a rule must take no subject
photo for a scene and must route Azure's two photos as Azure did; of those, it keeps the rule
that takes the most scene photos for scenes, and the middle of that plateau.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
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
# --choose's grid: the thresholds the split picks again; the rest stay the served rule's.
GRID = {
    "max_ground_kept": [round(0.02 + 0.01 * i, 2) for i in range(29)],
    "min_margin_below": [round(0.20 + 0.05 * i, 2) for i in range(9)],
    "min_sky_sure": [0.0, 0.80, 0.85, 0.90, 0.95],
}
SUBJECT_MANIFESTS = ("manifest.csv", "manifest-horses.csv")  # portraits, objects, clutter, soft mattes; horses outdoors


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
    for manifest in SUBJECT_MANIFESTS:
        with (evaldata / manifest).open() as f:
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
    assert analysis.sky is not None, "the sky network or the person detector is not loaded: run `python -m app.weights fetch`"
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
    assert engine.person_detector is not None
    started = time.perf_counter()
    for rgb in images:
        engine.person_detector.score(rgb)
    results["person detector"] = (time.perf_counter() - started) / len(images)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "cache" / "scene")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scene.json")
    parser.add_argument("--measures", type=Path, default=None, help="write every image's measures and scores as CSV")
    parser.add_argument("--timing", type=int, default=0, help="also time IS-Net with and without the sky network on N images")
    parser.add_argument("--choose", action="store_true", help="pick the thresholds on one part of the photos and report the other, for each split")
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
        layout = measure(analysis.matte, analysis.sky)
        person = engine.person_detector.score(rgb)  # asked of every photo here, so that --choose can try other rules
        target, measures = rule.decide(layout, lambda: person)
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
                "layout": layout,
                **vars(replace(measures, person=person)),
            }
        )
    report(rows, args)
    if args.choose:
        choose_and_check(rows)
    if args.timing:
        photos = [decode_image(case.image.read_bytes(), None).rgb for case in cases(args.shared)[: args.timing]]
        seconds = timing(engine, photos)
        print(f"\nseconds per image (batch 1, {engine.device}, {engine.dtype}): " + ", ".join(f"{k} {v:.3f}" for k, v in seconds.items()))


def routed(rule: SceneRule, row: dict) -> str:
    return rule.decide(row["layout"], lambda: row["person"])[0]


def halves(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Every other photo of each set, by name, so that each half holds half of every kind."""
    parts: tuple[list[dict], list[dict]] = ([], [])
    for name in sorted({row["set"] for row in rows}):
        for index, row in enumerate(sorted((r for r in rows if r["set"] == name), key=lambda r: r["name"])):
            parts[index % 2].append(row)
    return parts


def pick_rule(rows: list[dict], azure: list[dict]) -> SceneRule | None:
    """The rule with no subject photo taken for a scene and Azure's photos right that takes the most scenes; the plateau's middle."""
    subjects = [row for row in rows if row["group"] == "subject"]
    scenes = [row for row in rows if row["group"] == "scene"]
    scored = []
    for values in itertools.product(*GRID.values()):
        rule = SceneRule(**dict(zip(GRID, values)))
        if any(routed(rule, row) == "scene" for row in subjects) or any(routed(rule, row) != row["expected"] for row in azure):
            continue
        scored.append((sum(routed(rule, row) == "scene" for row in scenes), values))
    if not scored:
        return None
    best = max(count for count, _ in scored)
    plateau = sorted(values for count, values in scored if count == best)
    return SceneRule(**dict(zip(GRID, plateau[len(plateau) // 2])))


def split_line(label: str, rule: SceneRule, rows: list[dict]) -> str:
    cells = []
    for name in sorted({row["set"] for row in rows}):
        members = [row for row in rows if row["set"] == name]
        taken = sum(routed(rule, row) == "scene" for row in members)
        if members[0]["group"] == "scene":
            scores = [row["iou_scene"] if routed(rule, row) == "scene" else row["iou_subject"] for row in members]
            cells.append(f"{name} {taken}/{len(members)} (IoU {np.mean(scores):.3f})")
        else:
            cells.append(f"{name} {taken}/{len(members)}")
    return f"  {label}: " + ", ".join(cells)


def choose_and_check(rows: list[dict]) -> None:
    azure = [row for row in rows if row["group"] == "azure"]
    photos = [row for row in rows if row["group"] != "azure"]
    first, second = halves(photos)
    splits = [("half A", first, second), ("half B", second, first)]
    splits += [(f"all but {name}", [r for r in photos if r["set"] != name], [r for r in photos if r["set"] == name]) for name in sorted({r["set"] for r in photos})]
    print("\nthresholds picked on one part, reported on the other (taken for scenes / photos; scene sets with their IoU as routed)")
    for label, chosen_on, held_out in splits:
        rule = pick_rule(chosen_on, azure)
        if rule is None:
            print(f"picked on {label}: no rule takes no subject for a scene and routes Azure's photos right")
            continue
        print(f"picked on {label}: " + ", ".join(f"{name}={getattr(rule, name)}" for name in GRID))
        print(split_line("chosen on", rule, chosen_on))
        print(split_line("held out ", rule, held_out))
    served = SceneRule()
    print("served rule on each half:")
    print(split_line("half A", served, first))
    print(split_line("half B", served, second))


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
    subject_sets = sorted({row["set"] for row in subjects})
    print("\nsubjects taken for scenes: " + ", ".join(f"{name} {sum(r['target'] == 'scene' for r in subjects if r['set'] == name)}" for name in subject_sets))
    if args.measures:
        with args.measures.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[name for name in rows[0] if name != "layout"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
