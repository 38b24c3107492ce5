"""Subject or scene: whether to cut out IS-Net's salient object, or keep everything but the sky.

Azure's background removal returns a person or an object alone, but for a
landscape or a building it returns the whole picture less the sky. IS-Net only
knows salient objects, so a sky network runs beside it and a small, explainable
rule decides between the two from a few measured quantities (see
:class:`SceneMeasures` and :func:`decide`; the README gives the thresholds and
why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from PIL import Image

from app.inference.refine import guided_upsample

Target = Literal["subject", "scene"]
MEASURE_SIZE = 96  # both maps are compared at this coarse size: the rule is about layout, not edges
REFINE_MAX_PIXELS = 4_000_000  # the sky edge is refined at most at this size (about 2300 x 1700)


@dataclass(frozen=True)
class SceneMeasures:
    sky: float  # share of the picture the sky network calls sky
    ground_kept: float  # share of the not-sky region that IS-Net keeps as its object
    margin_below: float  # share of the picture's height between IS-Net's object and the bottom edge (1 when it keeps nothing)
    subject: float  # share of the picture IS-Net keeps (reported, not used by the rule)

    def header(self) -> str:
        return ";".join(f"{name}={value:.3f}" for name, value in vars(self).items())


@dataclass(frozen=True)
class SceneRule:
    """Scene when there is real sky and IS-Net's object is only a small part of the rest of the picture.

    IS-Net keeps a person against the sky whole, so ``ground_kept`` is high; in a landscape it keeps
    a building, a boat or nothing, so ``ground_kept`` is low. Between the two, an object that ends
    well above the bottom edge stands on ground of its own (a building on a lawn) and is a scene,
    while one that reaches the bottom (a person in the frame) is a subject. The README gives the
    measurements behind each threshold.
    """

    min_sky: float = 0.10
    max_ground_kept: float = 0.20
    max_ground_kept_standing: float = 0.50
    min_margin_below: float = 0.30

    def decide(self, measures: SceneMeasures) -> Target:
        if measures.sky < self.min_sky:
            return "subject"
        if measures.ground_kept < self.max_ground_kept:
            return "scene"
        standing = measures.margin_below >= self.min_margin_below
        return "scene" if standing and measures.ground_kept < self.max_ground_kept_standing else "subject"


def _coarse(values: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None, None]
    return F.interpolate(x, size=(MEASURE_SIZE, MEASURE_SIZE), mode="area")[0, 0].numpy()


def measure(matte: np.ndarray, sky: np.ndarray) -> SceneMeasures:
    """The rule's inputs from IS-Net's matte and the sky map (any square sizes; both cover the whole picture)."""
    subject = _coarse(matte) > 0.5
    ground = ~(_coarse(sky) > 0.5)
    rows = np.flatnonzero(subject.any(axis=1))
    lowest = (rows[-1] + 1) / MEASURE_SIZE if rows.size else 0.0
    return SceneMeasures(
        sky=float(1.0 - ground.mean()),
        ground_kept=float((subject & ground).sum() / max(int(ground.sum()), 1)),
        margin_below=float(1.0 - lowest),
        subject=float(subject.mean()),
    )


def as_tensor(rgb: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W float in [0, 1]."""
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255.0


def scene_alpha(sky: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Everything but the sky, as an ``H x W`` uint8 alpha at ``rgb``'s size; edges follow the image.

    The sky map is brought to full size by a colour-guided filter. Above ``REFINE_MAX_PIXELS`` the
    filter runs on a downscaled guide and its result is upsampled, to bound time and memory.
    """
    height, width = rgb.shape[:2]
    guide_rgb = rgb
    if height * width > REFINE_MAX_PIXELS:
        scale = (REFINE_MAX_PIXELS / (height * width)) ** 0.5
        guide_rgb = np.asarray(Image.fromarray(rgb).resize((max(1, int(width * scale)), max(1, int(height * scale))), Image.BOX))
    keep = torch.from_numpy(1.0 - np.asarray(sky, dtype=np.float32))[None, None]
    small_rgb = np.asarray(Image.fromarray(guide_rgb).resize(sky.shape[::-1], Image.BOX))  # Pillow's box filter on bytes is cheap
    refined = guided_upsample(keep, as_tensor(guide_rgb), small_guide=as_tensor(small_rgb))[0, 0]
    alpha = (refined.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    if alpha.shape != (height, width):
        alpha = np.asarray(Image.fromarray(alpha).resize((width, height), Image.BILINEAR))
    return alpha
