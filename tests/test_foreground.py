"""Colour decontamination: the estimator on composites whose foreground is known, and the request option through the real server."""

from __future__ import annotations

import numpy as np

from app.inference import foreground
from app.inference.foreground import estimate_foreground

from conftest import AZURE_SPEC, FAST, SEGMENT, read_png, require_shared, start_server, stop_server

PARAMS = {"api-version": "2023-02-01-preview"}


def composite(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A warm, textured subject with a soft, wavy 12-pixel edge over a saturated blue background: image, alpha, true colours."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    subject = np.stack([200 + 30 * np.sin(ys / 17), 140 + 40 * np.cos(xs / 23), 90 + 20 * np.sin((xs + ys) / 31)], -1)
    subject = np.clip(subject + rng.normal(0, 6, subject.shape), 0, 255)
    edge = width * 0.5 + 25 * np.sin(ys / 40)
    alpha = np.clip((edge - xs) / 12 + 0.5, 0, 1)  # 1 left of the edge, 0 right of it
    background = np.array([20, 60, 250], np.float32)
    image = alpha[..., None] * subject + (1 - alpha[..., None]) * background
    to_u8 = lambda x: np.clip(np.rint(x), 0, 255).astype(np.uint8)  # noqa: E731
    return to_u8(image), to_u8(alpha * 255), to_u8(subject)


def band_error(colours: np.ndarray, truth: np.ndarray, alpha: np.ndarray) -> float:
    band = (alpha > 25) & (alpha < 230)
    return float(np.abs(colours[band].astype(np.int16) - truth[band]).mean())


def test_estimated_colours_lose_the_old_background_in_the_soft_edge():
    image, alpha, truth = composite(400, 600)
    colours = estimate_foreground(image, alpha)
    before, after = band_error(image, truth, alpha), band_error(colours, truth, alpha)
    assert after < 0.35 * before, (before, after)
    # Opaque and fully transparent pixels keep the photo's colour exactly.
    solid = (alpha == 0) | (alpha == 255)
    assert np.array_equal(colours[solid], image[solid])


def test_large_images_are_assembled_piece_by_piece_without_seams(monkeypatch):
    image, alpha, truth = composite(2400, 2000, seed=1)  # 4.8 MP: the narrow pass's reach grows with the photo
    whole = estimate_foreground(image, alpha)
    assert band_error(whole, truth, alpha) < 0.35 * band_error(image, truth, alpha)
    monkeypatch.setattr(foreground, "TILE", 97)  # piece edges anywhere must not show
    monkeypatch.setattr(foreground, "TILES_AT_ONCE", 5)
    again = estimate_foreground(image, alpha)
    # The pieces' running sums round differently at 1e-6, which may move a colour by one 8-bit level, rarely.
    difference = np.abs(again.astype(np.int16) - whole)
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-4


def test_only_pieces_with_a_soft_pixel_are_worked_on(monkeypatch):
    image, alpha, _ = composite(300, 900)
    alpha[:, 520:] = 0  # the soft edge lies left of x = 520 (its waves reach x = 482 at most)
    corners = foreground.mixed_tiles(alpha, 128)
    assert set(corners[1].tolist()) <= {256, 384} and len(corners[0]) > 0
    pieces = []
    real = foreground.pieces
    monkeypatch.setattr(foreground, "pieces", lambda pixels, tops, lefts, size: pieces.append(len(tops)) or real(pixels, tops, lefts, size))
    colours = estimate_foreground(image, alpha)
    assert sum(pieces) == 2 * len(corners[0])  # alpha and colours, of those pieces only
    assert np.array_equal(colours[:, 520:], image[:, 520:])
    soft = (alpha > 0) & (alpha < 255)
    assert not np.array_equal(colours[soft], image[soft])
    assert np.array_equal(estimate_foreground(image, np.zeros_like(alpha)), image)  # nothing soft: nothing to do


def post(client, body: bytes, mode: str = "backgroundRemoval", **params: str):
    return client.post(SEGMENT, params={**PARAMS, "mode": mode, **params}, content=body)


def test_decontaminate_changes_only_the_colour_of_soft_pixels(fast_server):
    face = require_shared(AZURE_SPEC / "observed-outputs" / "input_face.jpeg").read_bytes()
    with fast_server.client() as client:
        plain = np.asarray(read_png(post(client, face).content))
        cleaned = np.asarray(read_png(post(client, face, decontaminate="true").content))
        plain_again = np.asarray(read_png(post(client, face, decontaminate="false").content))
        matte = post(client, face, "foregroundMatting").content
        matte_asked = post(client, face, "foregroundMatting", decontaminate="true").content
        wrong = post(client, face, decontaminate="maybe")
    assert np.array_equal(plain, plain_again)
    assert np.array_equal(cleaned[..., 3], plain[..., 3])  # the same matte
    soft = (plain[..., 3] > 0) & (plain[..., 3] < 255)
    assert soft.sum() > 100
    assert not np.array_equal(cleaned[soft][:, :3], plain[soft][:, :3])
    assert np.array_equal(cleaned[~soft][:, :3], plain[~soft][:, :3])
    assert matte == matte_asked  # a matte has no colours to clean
    assert wrong.status_code == 400
    assert wrong.json() == {"error": {"code": "InvalidRequest", "message": "Value for decontaminate is invalid. Use true or false."}}
    assert wrong.headers["x-ms-error-code"] == "InvalidRequest"


def test_the_operator_can_make_it_the_default(fast_server, tmp_path):
    face = require_shared(AZURE_SPEC / "observed-outputs" / "input_face.jpeg").read_bytes()
    running = start_server({**FAST, "BGR_DECONTAMINATE": "true"}, tmp_path / "server.log")
    try:
        with running.client() as client:
            default = post(client, face).content
            opted_out = post(client, face, decontaminate="false").content
    finally:
        stop_server(running)
    with fast_server.client() as client:
        assert default == post(client, face, decontaminate="true").content
        assert opted_out == post(client, face).content
