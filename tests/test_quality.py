"""Quality of the served matte on the development pairs in ../shared/evaldata (real model, real server)."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.quality import iou, load_gray, mae

from conftest import SEGMENT, eval_pairs, read_png

# These are subject photos. IS-Net alone (and rembg's dis_custom pipeline on the same weights) reaches
# IoU 0.834 and MAE 0.060 here. The service as served also routes: 4 of the 150 (small people or
# things in wide outdoor views) are taken for scenes, which costs IoU 0.011 and MAE 0.014
# (measured: IoU 0.8224, MAE 0.0744). The bar: at most 3% taken for scenes, IoU at most
# 0.02 under IS-Net alone. The bars sit a hair under the measurements.
MIN_IOU = 0.815
MAX_MAE = 0.077
MAX_TAKEN_FOR_SCENES = 0.03


@pytest.mark.slow
def test_foreground_matting_quality_on_evaldata(server, capsys):
    pairs = eval_pairs()

    def score(pair):
        with server.client() as client:
            response = client.post(
                SEGMENT,
                params={"api-version": "2023-02-01-preview", "mode": "foregroundMatting"},
                content=pair.image.read_bytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
        assert response.status_code == 200, response.text
        pred = np.asarray(read_png(response.content), dtype=np.float32) / 255.0
        gt = load_gray(pair.gt)
        assert pred.shape == gt.shape
        return pair.set, iou(pred, gt), mae(pred, gt), response.headers["x-segment-target"]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(score, pairs))

    by_set: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for name, i, m, _ in results:
        by_set[name].append((i, m))
    overall_iou = float(np.mean([r[1] for r in results]))
    overall_mae = float(np.mean([r[2] for r in results]))
    scenes = sum(r[3] == "scene" for r in results)
    with capsys.disabled():
        print("\nset                    pairs   IoU@0.5    MAE")
        for name, scores in sorted(by_set.items()):
            print(f"{name:22s} {len(scores):5d}   {np.mean([s[0] for s in scores]):.4f}   {np.mean([s[1] for s in scores]):.4f}")
        print(f"{'overall':22s} {len(results):5d}   {overall_iou:.4f}   {overall_mae:.4f}")
        print(f"taken for scenes: {scenes} of {len(results)}")
    assert overall_iou >= MIN_IOU
    assert overall_mae <= MAX_MAE
    assert scenes <= MAX_TAKEN_FOR_SCENES * len(results)
