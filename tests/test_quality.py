"""Quality of the served matte on the development pairs in ../shared/evaldata (real model, real server)."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.quality import iou, load_gray, mae

from conftest import SEGMENT, SUBJECT_MANIFESTS, eval_pairs, read_png

# These are subject photos, every set of them (horses outdoors too). IS-Net alone (and rembg's
# dis_custom pipeline on the same weights) reaches IoU 0.857 and MAE 0.050 over the 232. As served the
# service also routes, and a subject photo taken for a scene loses its subject, so the bars are the
# issue's: at most 1% of them taken for scenes, and on each set the served IoU within 0.005 of IS-Net
# alone (what a photo taken for a scene would have got is asked again with target=subject). Measured:
# none taken for scenes, so the served mattes are IS-Net's (bench/scene.py). The overall bars sit a
# hair under the measurement.
MIN_IOU = 0.850
MAX_MAE = 0.052
MAX_TAKEN_FOR_SCENES = 0.01
MAX_IOU_COST_PER_SET = 0.005


def matte_of(server, image: bytes, **params: str) -> tuple[np.ndarray, str]:
    with server.client() as client:
        response = client.post(
            SEGMENT,
            params={"api-version": "2023-02-01-preview", "mode": "foregroundMatting", **params},
            content=image,
            headers={"Content-Type": "application/octet-stream"},
        )
    assert response.status_code == 200, response.text
    return np.asarray(read_png(response.content), dtype=np.float32) / 255.0, response.headers["x-segment-target"]


@pytest.mark.slow
def test_foreground_matting_quality_on_evaldata(server, capsys):
    pairs = eval_pairs(SUBJECT_MANIFESTS)

    def score(pair):
        image, gt = pair.image.read_bytes(), load_gray(pair.gt)
        pred, target = matte_of(server, image)
        assert pred.shape == gt.shape
        alone = pred if target == "subject" else matte_of(server, image, target="subject")[0]
        return pair.set, iou(pred, gt), mae(pred, gt), target, iou(alone, gt)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(score, pairs))

    by_set: dict[str, list[tuple]] = defaultdict(list)
    for result in results:
        by_set[result[0]].append(result)
    overall_iou = float(np.mean([r[1] for r in results]))
    overall_mae = float(np.mean([r[2] for r in results]))
    scenes = sum(r[3] == "scene" for r in results)
    with capsys.disabled():
        print("\nset                    pairs   IoU@0.5    MAE   IS-Net alone   taken for scenes")
        for name, rows in sorted(by_set.items()):
            print(
                f"{name:22s} {len(rows):5d}   {np.mean([r[1] for r in rows]):.4f}   {np.mean([r[2] for r in rows]):.4f}"
                f"   {np.mean([r[4] for r in rows]):.4f}   {sum(r[3] == 'scene' for r in rows)}"
            )
        print(f"{'overall':22s} {len(results):5d}   {overall_iou:.4f}   {overall_mae:.4f}   taken for scenes: {scenes} of {len(results)}")
    assert scenes <= MAX_TAKEN_FOR_SCENES * len(results)
    for name, rows in by_set.items():
        cost = np.mean([r[4] for r in rows]) - np.mean([r[1] for r in rows])
        assert cost <= MAX_IOU_COST_PER_SET, f"{name}: routing cost IoU {cost:.4f}"
    assert overall_iou >= MIN_IOU
    assert overall_mae <= MAX_MAE
