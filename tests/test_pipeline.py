"""Around the model: the matte brought to the output's size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.inference.pipeline import matte_at_size


def reference_matte(matte: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear in float, then scaled, clipped and rounded half to even in float64."""
    resized = np.asarray(Image.fromarray(matte.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR), dtype=np.float64)
    return np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [(1732, 1155), (64, 900), (1, 1), (4096, 3)])
def test_the_matte_at_size_is_the_rounded_bilinear_matte(size):
    rng = np.random.default_rng(size[0])
    matte = np.clip(rng.normal(0.5, 0.6, (1024, 1024)), -0.2, 1.2).astype(np.float32)  # out of range too
    out = matte_at_size(matte, *size)
    expected = reference_matte(matte, *size)
    assert out.dtype == np.uint8 and out.shape == (size[1], size[0])
    difference = np.abs(out.astype(int) - expected)
    assert difference.max() <= 1  # float rounding of the two orders of operations
    assert (difference > 0).mean() < 1e-3


def test_solid_areas_stay_exactly_transparent_or_opaque():
    matte = np.zeros((1024, 1024), np.float32)
    matte[:, 512:] = 1.0
    matte[:100] = -0.3  # a network's logit-free output can overshoot
    matte[-100:, 512:] = 1.4
    out = matte_at_size(matte, 3000, 2000)
    assert (out[:150] == 0).all() and (out[300:, :1400] == 0).all() and (out[300:, 1600:] == 255).all()


def test_an_encoder_gets_the_cut_out_the_png_would_carry(engine):
    """An API's own encoder sees the same pixels and alpha Azure's PNG carries, at the size cap it asked for."""
    import asyncio
    import io

    from app.inference.batcher import Batcher
    from app.pixel_budget import PixelBudget
    from app.service import Cutout, Encoded, Lane, SegmentService
    from conftest import photo, png_bytes

    image = png_bytes(photo((400, 300)))
    seen: list[Cutout] = []

    def encode(cutout: Cutout) -> Encoded:
        seen.append(cutout)
        return Encoded(iter([b"own bytes"]), "image/x-test", {"x-width": str(cutout.alpha.shape[1])})

    async def scenario():
        batcher = Batcher(engine.analyse, 1, 0.0, 4)
        await batcher.start()
        budget = PixelBudget(10**8)
        service = SegmentService({engine.name: Lane(batcher, engine.resolution)}, engine.name, 1, budget, 1, 6, 1)
        try:
            png = await service.segment(image, "backgroundRemoval")
            default = b"".join(png.chunks)
            png.close()
            own = await service.segment(image, "backgroundRemoval", encode=encode, max_output_pixels=200 * 150)
            body = b"".join(own.chunks)
            own.close()
            capped = await service.segment(image, "backgroundRemoval", encode=encode)
            capped.close()
            with pytest.raises(ValueError):
                await service.segment(image, "foregroundMatting", encode=encode)
            return default, own, body, budget.in_use
        finally:
            await batcher.stop()

    default, own, body, in_use = asyncio.run(scenario())
    assert (body, own.media_type, own.headers) == (b"own bytes", "image/x-test", {"x-width": "200"})
    assert seen[0].alpha.shape == (150, 200) and seen[0].rgb.shape == (150, 200, 3)
    full = np.asarray(Image.open(io.BytesIO(default)))
    assert seen[1].alpha.shape == full.shape[:2]
    assert np.array_equal(seen[1].alpha, full[:, :, 3]) and np.array_equal(seen[1].rgb, full[:, :, :3])
    assert in_use == 0  # every stream's budget returned


def test_the_person_detector_runs_at_most_once_an_image_and_only_when_asked(engine, sky_weights):
    """The scene rule's person score is the result's when the rule asked the detector; otherwise the detector runs
    only for a caller that asks (remove.bg's X-Type), and never twice for one image."""
    import asyncio

    from app.inference.batcher import Batcher
    from app.inference.scene import SceneRule
    from app.pixel_budget import PixelBudget
    from app.service import Lane, SegmentService
    from conftest import AZURE_SPEC, require_shared

    observed = require_shared(AZURE_SPEC / "observed-outputs")
    building, face = (observed / "input_building.jpg").read_bytes(), (observed / "input_face.jpeg").read_bytes()
    assert engine.sky_model is not None and engine.person_detector is not None
    calls: list[float] = []

    class CountedDetector:  # the real detector, its calls counted
        def score(self, rgb: np.ndarray) -> float:
            calls.append(engine.person_detector.score(rgb))
            return calls[-1]

    async def scenario() -> list[tuple[object, float | None, int]]:
        batcher = Batcher(engine.analyse, 1, 0.0, 4)
        await batcher.start()
        lane = Lane(batcher, engine.resolution)
        service = SegmentService(
            {engine.name: lane}, engine.name, 1, PixelBudget(10**9), 1, 6, 1, scene_rule=SceneRule(), person_detector=CountedDetector()
        )
        outcomes = []
        try:
            for data in (building, face):
                for asked in (False, True):
                    before = len(calls)
                    stream = await service.segment(data, "backgroundRemoval", score_person=asked)
                    stream.close()
                    outcomes.append((stream.measures, stream.person_score, len(calls) - before))
        finally:
            await batcher.stop()
        return outcomes

    (building_plain, building_asked, face_plain, face_asked) = asyncio.run(scenario())
    # The building's layout says scene, so the rule asks the detector: its score is the result's, asked or not.
    for measures, person, runs in (building_plain, building_asked):
        assert measures.person is not None and person == measures.person and runs == 1
    # The face's layout says subject: the detector runs only when asked, once.
    assert face_plain[0].person is None and face_plain[1:] == (None, 0)
    assert face_asked[0].person is None and face_asked[2] == 1 and face_asked[1] == calls[-1] > 0.5
