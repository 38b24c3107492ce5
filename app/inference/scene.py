"""Subject or scene: whether to cut out IS-Net's salient object, or keep everything but the sky.

Azure's background removal returns a person or an object alone, but for a
landscape or a building it returns the whole picture less the sky. IS-Net only
knows salient objects, so a sky network runs beside it and a small, explainable
rule decides between the two from a few measured quantities (see
:class:`SceneMeasures` and :class:`SceneRule`, with a person detector,
:mod:`app.inference.person`, for the last word; the README gives the thresholds and why).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Literal

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
    sky: float  # share of the picture the sky network calls sky, less IS-Net's object (an object is never sky)
    sky_sure: float  # the sky network's mean probability over what it calls sky: near 1 for real sky, lower for backdrops and bokeh
    ground_kept: float  # share of the rest (everything but the sky) that IS-Net keeps as its object
    margin_below: float  # share of the picture's height between IS-Net's object and the bottom edge (1 when it keeps nothing)
    subject: float  # share of the picture IS-Net keeps (reported, not used by the rule)
    person: float | None = None  # the person detector's probability; None when the layout already said subject (not asked)

    def header(self) -> str:
        return ";".join(f"{name}={value:.3f}" for name, value in vars(self).items() if value is not None)


@dataclass(frozen=True)
class SceneRule:
    """Scene only when the sky is real, IS-Net's object is a small part of the ground, and no person is there.

    Every test can only keep a photo a subject: a subject taken for a scene loses the subject (the
    cut-out is its background), a scene taken for a subject merely gets IS-Net's salient object, so
    each piece of evidence that the picture is about something vetoes the scene. IS-Net keeps a
    person or an animal against the sky whole, so ``ground_kept`` is high; in a landscape it keeps a
    building, a boat or nothing. Between the two, an object that ends well above the bottom edge
    stands on ground of its own (a building on a lawn) and is a scene. A person small in a wide view
    has a landscape's layout, so a person detector has the last word. The thresholds were chosen on
    one half of the evaluation photos and checked on the other, both ways round (README, "Subjects
    and scenes"; ``bench/scene.py --choose``).
    """

    min_sky: float = 0.10
    min_sky_sure: float = 0.90
    max_ground_kept: float = 0.17
    max_ground_kept_standing: float = 0.50
    min_margin_below: float = 0.30
    max_person: float = 0.50  # MediaPipe's own detection threshold

    def layout_says_scene(self, measures: SceneMeasures) -> bool:
        if measures.sky < self.min_sky or measures.sky_sure < self.min_sky_sure:
            return False
        if measures.ground_kept < self.max_ground_kept:
            return True
        return measures.margin_below >= self.min_margin_below and measures.ground_kept < self.max_ground_kept_standing

    def decide(self, measures: SceneMeasures, person_score: Callable[[], float]) -> tuple[Target, SceneMeasures]:
        """The target, and the measures it was decided from; ``person_score`` is called only when the layout says scene."""
        if not self.layout_says_scene(measures):
            return "subject", measures
        measures = replace(measures, person=person_score())
        return ("subject" if measures.person >= self.max_person else "scene"), measures


def _coarse(values: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None, None]
    return F.interpolate(x, size=(MEASURE_SIZE, MEASURE_SIZE), mode="area")[0, 0].numpy()


def measure(matte: np.ndarray, sky: np.ndarray) -> SceneMeasures:
    """The layout measures from IS-Net's matte and the sky map (any square sizes; both cover the whole picture)."""
    subject = _coarse(matte) > 0.5
    sky_map = _coarse(sky)
    called_sky = sky_map > 0.5
    is_sky = called_sky & ~subject  # where the two networks disagree, IS-Net's confident object wins: the sky network also says "sky" of washed-out photos
    ground = ~is_sky
    rows = np.flatnonzero(subject.any(axis=1))
    lowest = (rows[-1] + 1) / MEASURE_SIZE if rows.size else 0.0
    return SceneMeasures(
        sky=float(is_sky.mean()),
        sky_sure=float(sky_map[called_sky].mean()) if called_sky.any() else 0.0,
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
