"""Matte refinement primitives and the quality metrics the benchmark reports."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from app.inference.refine import box_filter, guided_filter, upsample_guided
from app.quality import grad_error, iou, mae, sad


def test_box_filter_is_a_local_mean():
    x = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)
    assert torch.allclose(box_filter(x, 1)[0, 0, 2, 2], x[0, 0, 1:4, 1:4].mean())
    assert box_filter(torch.ones(1, 1, 7, 9), 2).allclose(torch.ones(1, 1, 7, 9))


def test_guided_upsampling_follows_the_image_edges_closer_than_bilinear():
    yy, xx = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    truth = (((xx - 128) ** 2 + (yy - 128) ** 2) < 70**2).float()[None, None]
    low = F.avg_pool2d(truth, 8)  # what a model at 1/8 of the resolution could at best say
    rgb = truth.repeat(1, 3, 1, 1) * 0.8 + 0.1
    bilinear = F.interpolate(low, size=(256, 256), mode="bilinear", align_corners=False)
    guided = upsample_guided(low, rgb)
    assert (guided - truth).abs().mean() < (bilinear - truth).abs().mean()


def test_guided_filter_of_a_constant_is_that_constant():
    guide = torch.rand(1, 1, 40, 30)
    assert guided_filter(guide, torch.full_like(guide, 0.3), radius=3, eps=1e-3).allclose(torch.full_like(guide, 0.3), atol=1e-5)


def test_upsample_guided_keeps_solid_regions_and_size():
    matte = torch.zeros(1, 1, 32, 32)
    matte[..., 8:24, 8:24] = 1.0
    rgb = torch.rand(1, 3, 128, 96)
    out = upsample_guided(matte, rgb)
    assert out.shape == (1, 1, 128, 96)
    assert out[..., :10, :].max() == 0 and out[..., 60:70, 40:56].min() == 1  # far from the edge: untouched
    assert 0 <= out.min() and out.max() <= 1


def test_metrics_on_known_cases():
    gt = np.zeros((10, 10))
    gt[:, 5:] = 1
    assert mae(gt, gt) == 0 and iou(gt, gt) == 1 and grad_error(gt, gt) == 0
    pred = gt.copy()
    pred[:, 4] = 1
    assert mae(pred, gt) == 0.1 and sad(pred, gt) == 0.01 and iou(pred, gt) == 50 / 60
    assert grad_error(pred, gt) > 0
