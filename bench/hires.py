"""The high-resolution portraits of ../shared/evaldata-hires: pairs, halves, cached network mattes, full-size scores.

Shared by bench/quality.py (``--refine``: the matting stage against IS-Net alone and rembg's alpha matting) and
bench/refine_search.py (the stage's parameters, picked on one half and reported on the other).

- Halves: A is the even indices of the manifest's rows sorted by id, B the odd ones.
- The network's 1024 x 1024 matte is cached per photo, keyed by the SHA-256 of the photo's bytes, so iterating on
  what comes after the network costs no forward. It is made as the service makes a cut-out's: the whole photo
  decoded, resized to the model (the engine's filter), the engine's matte.
- Scores are at the photo's full size: MAE, SAD, gradient and connectivity errors, the soft-band error (mean
  absolute error where 0.03 < gt < 0.97) and IoU with both mattes thresholded at 128 (the ground truth's JPEG noise
  sits near 0 and 255).
"""

from __future__ import annotations

import csv
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HIRES_MANIFEST = ROOT.parent / "shared" / "evaldata-hires" / "manifest.csv"
CACHE = ROOT / "bench" / "results" / "cache" / "mattes"
HALVES = ("A", "B")


@dataclass(frozen=True)
class Pair:
    set: str
    id: str
    image: Path
    gt: Path
    half: str  # "A" (even index in the sorted manifest) or "B" (odd)
    width: int
    height: int

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def read_pairs(manifest: Path = HIRES_MANIFEST) -> list[Pair]:
    """The manifest's rows sorted by id, each with its half."""
    with manifest.open(newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda row: row["id"])
    return [
        Pair(row["set"], row["id"], manifest.parent / row["image"], manifest.parent / row["gt"], HALVES[i % 2], int(row["width"]), int(row["height"]))
        for i, row in enumerate(rows)
    ]


def photo_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


def load_photo(path: Path) -> tuple[bytes, np.ndarray]:
    """The file's bytes and its pixels as the service decodes them (H x W x 3 uint8)."""
    from app.imaging.decode import decode_image

    data = path.read_bytes()
    return data, decode_image(data, None).rgb


def timed_forward(engine, rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """The engine's S x S matte of the photo, made as the service makes a cut-out's, and the forward's seconds."""
    from app.inference.pipeline import model_input

    small = model_input(rgb, engine.resolution, engine.input_filter)
    started = time.perf_counter()
    matte = engine.analyse(small[None])[0].matte
    return matte, time.perf_counter() - started


def cache_matte(data: bytes, matte: np.ndarray, forward_s: float, runtime: str, cache: Path = CACHE) -> None:
    """Keep the photo's matte (float16) for later runs, unless one is kept already."""
    path = cache / f"{photo_hash(data)}.npz"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, matte=matte.astype(np.float16), forward_s=forward_s, runtime=runtime)


def network_matte(engine, rgb: np.ndarray, data: bytes, cache: Path = CACHE) -> tuple[np.ndarray, float]:
    """The engine's S x S matte of the photo (float32 in [0, 1]) and the forward's seconds, cached by the photo's hash.

    ``engine`` is None to read the cache only (a miss then raises).
    """
    path = cache / f"{photo_hash(data)}.npz"
    if path.exists():
        stored = np.load(path)
        return stored["matte"].astype(np.float32), float(stored["forward_s"])
    if engine is None:
        raise FileNotFoundError(f"no cached matte at {path}: run bench/quality.py --refine once with the network")
    matte, forward_s = timed_forward(engine, rgb)
    cache_matte(data, matte, forward_s, engine.runtime, cache)
    return matte.astype(np.float16).astype(np.float32), forward_s


def load_truth(path: Path) -> np.ndarray:
    from app.quality import load_gray

    return load_gray(path)


def full_scores(pred: np.ndarray, gt: np.ndarray, conn: bool = True) -> dict[str, float]:
    """Every metric at full size; ``pred`` and ``gt`` H x W in [0, 1] (float32)."""
    from app.quality import conn_error, grad_error, iou, mae, sad, soft_band_error

    threshold = 127.5 / 255  # 128 and above of 8-bit values
    out = {"mae": mae(pred, gt), "sad": sad(pred, gt), "soft": soft_band_error(pred, gt), "grad": grad_error(pred, gt),
           "iou": iou(pred, gt, threshold)}
    if conn:
        out["conn"] = conn_error(pred, gt)
    return out


def quick_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The cheap metrics, for parameter sweeps: MAE, SAD, soft-band error and gradient error."""
    return full_scores(pred, gt, conn=False)


class RembgWorker:
    """rembg's alpha matting in its own process (bench/rembg_matting.py), one photo at a time, under a memory cap.

    rembg's closed-form solver builds its matting Laplacian for the whole photo: about 1 GB of memory per megapixel
    was measured, so on a shared machine the cap keeps a large photo from taking everyone's memory (such a photo then
    reports an error instead of a matte).
    """

    def __init__(self, out_dir: Path, memory_gb: float) -> None:
        import json
        import resource
        import subprocess
        import sys

        sys.path.insert(0, str(ROOT / "bench"))
        from rembg_model import general_use_home

        home = general_use_home()
        limit = int(memory_gb * 2**30)

        def cap() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        self.out_dir = out_dir
        self._json = json
        self._process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "rembg_matting.py"), str(home), str(out_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=cap,
            env={**__import__("os").environ, "OMP_NUM_THREADS": __import__("os").environ.get("OMP_NUM_THREADS", "2")},
        )
        ready = self._process.stdout.readline()
        if not ready:
            raise RuntimeError("rembg's worker did not start (is rembg installed? .venv/bin/pip install 'rembg[cpu]' pymatting)")

    def run(self, pair: Pair) -> dict:
        """{"plain_s", "matting_s", "alpha" (H x W float32), "peak_rss_mb"} or {"error": ...}."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(self._json.dumps({"id": pair.id, "image": str(pair.image)}) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            return {"error": f"rembg's worker died (exit {self._process.wait()}): out of memory?"}
        row = self._json.loads(line)
        if "error" not in row:
            row["alpha"] = load_truth(self.out_dir / f"{pair.id}.png")
        return row

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=60)


class DeltaScorer:
    """The quick metrics of many candidates that differ from one base matte only in places (the stage's band).

    The ground truth's and the base's gradient magnitudes and per-tile error sums are computed once; a candidate's
    metrics are then recomputed only on the tiles where it differs from the base (with a halo for the gradient
    filters), which gives the same numbers as :func:`quick_scores` for a fraction of the time.
    """

    TILE = 256
    HALO = 8  # the gradient filters' reach (a radius of 5) and some

    def __init__(self, gt: np.ndarray, base: np.ndarray) -> None:
        from app.quality import _gaussian_kernels, _filter

        self.gt, self.base = gt, base  # float32 in [0, 1]; uint8
        self.base_f = base.astype(np.float32) / 255
        g, dg = _gaussian_kernels(1.4)
        self._kernels = (g, dg)
        self._filter = _filter
        self.gt_mag = self._magnitude(gt)
        base_mag = self._magnitude(self.base_f)
        h, w = gt.shape
        self.shape = (h, w)
        self.soft = (gt > 0.03) & (gt < 0.97)
        self.soft_count = int(self.soft.sum())
        err = np.abs(self.base_f - gt)
        grad_err = (base_mag - self.gt_mag).astype(np.float64) ** 2
        t = self.TILE
        rows, cols = -(-h // t), -(-w // t)
        self.sums = {k: np.zeros((rows, cols)) for k in ("abs", "soft", "grad", "inter", "union")}
        for r in range(rows):
            for c in range(cols):
                sl = (slice(r * t, (r + 1) * t), slice(c * t, (c + 1) * t))
                self._tile_sums(self.sums, r, c, sl, err[sl], grad_err[sl], self.base_f[sl])

    def _magnitude(self, a: np.ndarray) -> np.ndarray:
        g, dg = self._kernels
        return np.hypot(self._filter(a, dg, g), self._filter(a, g, dg))

    def _tile_sums(self, sums: dict, r: int, c: int, sl, err, grad_err, pred) -> None:
        sums["abs"][r, c] = err.sum(dtype=np.float64)
        sums["soft"][r, c] = err[self.soft[sl]].sum(dtype=np.float64)
        sums["grad"][r, c] = grad_err.sum()
        a, b = pred > 127.5 / 255, self.gt[sl] > 127.5 / 255
        sums["inter"][r, c] = np.logical_and(a, b).sum()
        sums["union"][r, c] = np.logical_or(a, b).sum()

    def score(self, candidate: np.ndarray) -> dict[str, float]:
        """``candidate``: H x W uint8 -> the same dict as :func:`quick_scores`."""
        h, w = self.shape
        t, halo = self.TILE, self.HALO
        sums = {k: v.copy() for k, v in self.sums.items()}
        differs = candidate != self.base
        changed = np.add.reduceat(np.add.reduceat(differs, np.arange(0, h, t), 0), np.arange(0, w, t), 1) > 0
        for r, c in zip(*np.nonzero(changed)):
            y0, x0 = r * t, c * t
            y1, x1 = min(h, y0 + t), min(w, x0 + t)
            sl = (slice(y0, y1), slice(x0, x1))
            pred = candidate[sl].astype(np.float32) / 255
            err = np.abs(pred - self.gt[sl])
            # The gradient on the tile with a halo of the candidate's own pixels (edge-replicated past the image).
            ya, xa = max(0, y0 - halo), max(0, x0 - halo)
            yb, xb = min(h, y1 + halo), min(w, x1 + halo)
            region = candidate[ya:yb, xa:xb].astype(np.float32) / 255
            mag = self._magnitude(region)[y0 - ya : y0 - ya + (y1 - y0), x0 - xa : x0 - xa + (x1 - x0)]
            grad_err = (mag - self.gt_mag[sl]).astype(np.float64) ** 2
            self._tile_sums(sums, r, c, sl, err, grad_err, pred)
        n = h * w
        return {"mae": float(sums["abs"].sum() / n), "sad": float(sums["abs"].sum() / 1000.0),
                "soft": float(sums["soft"].sum() / self.soft_count) if self.soft_count else 0.0,
                "grad": float(sums["grad"].sum() / 1000.0),
                "iou": 1.0 if sums["union"].sum() == 0 else float(sums["inter"].sum() / sums["union"].sum())}
