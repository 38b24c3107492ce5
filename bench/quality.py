"""Matte quality on image/ground-truth pairs: this service's pipeline against the rembg-style baseline.

    python bench/quality.py [--manifest ../shared/evaldata/manifest.csv] [--limit N] [--out bench/results/quality]
    python bench/quality.py --refine ...   # the matting stage at full size against rembg's alpha matting (bench/matting_quality.py)

Both run the same IS-Net weights through this project's module (equal to onnxruntime on the
published graph within 2e-5, tests/test_parity.py), so only the pipelines around it differ:

- baseline (rembg's dis_custom session): Lanczos resize to 1024², divide by the image maximum,
  subtract 0.5; min-max stretch of the prediction; 8-bit truncation; Lanczos upsample.
- ours (the service on the CPU, `default`): antialiased bilinear resize to 1024², (x - 128) / 256;
  sigmoid; bilinear upsample; variants add the baseline's min-max stretch, flip TTA (probabilities
  or logits averaged), a second pass at 768² fused the same two ways (and, logits averaged, with
  both passes resized by Lanczos; and `served-two-passes`, as the service runs it on a GPU, where
  BGR_SECOND_RESOLUTION=auto means 768), guided-filter upsampling, the baseline's Lanczos
  resampling on the way in, on the way out, or both, and one pass at 768² alone (as
  BGR_RESOLUTION=768 serves it on the CPU, and with Lanczos).

Model outputs are cached per image (``--cache``), so variants of the post-processing are cheap.
Prints MAE, MSE, SAD, Grad, IoU@0.5 and seconds per image per set and overall; writes JSON and
a contact sheet (image, baseline, ours, ground truth).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.inference.engine import MattingEngine  # noqa: E402
from app.inference.pipeline import matte_at_size, model_input  # noqa: E402
from app.inference.refine import upsample_guided  # noqa: E402
from app.quality import grad_error, iou, load_gray, mae, mse, sad  # noqa: E402
from app.settings import Settings  # noqa: E402

SIZE = 1024
METRICS = ("mae", "mse", "sad", "grad", "iou", "seconds")


def logits(engine: MattingEngine, batch: np.ndarray) -> np.ndarray:
    """N x 3 x S x S float input -> N x S x S logits."""
    with torch.inference_mode():
        x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        return engine.model(x)[:, 0].numpy()


def baseline(engine: MattingEngine, rgb: np.ndarray) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    small = np.asarray(Image.fromarray(rgb).resize((SIZE, SIZE), Image.LANCZOS), dtype=np.float32)
    x = (small / max(small.max(), 1e-6) - 0.5).transpose(2, 0, 1)[None]
    pred = sigmoid(logits(engine, x)[0])
    pred = (pred - pred.min()) / (pred.max() - pred.min())
    mask = Image.fromarray((pred * 255).astype(np.uint8)).resize((rgb.shape[1], rgb.shape[0]), Image.LANCZOS)
    return np.asarray(mask, dtype=np.float32) / 255, time.perf_counter() - started


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logits to probabilities, written so it cannot overflow."""
    return 0.5 * (1 + np.tanh(z / 2))


def our_input(small: np.ndarray) -> np.ndarray:
    return ((small.astype(np.float32) - 128) / 256).transpose(2, 0, 1)[None]


def lanczos_logits(engine: MattingEngine, rgb: np.ndarray) -> np.ndarray:
    """Logits for our preprocessing with the baseline's Lanczos resize instead of antialiased bilinear."""
    return logits(engine, our_input(model_input(rgb, SIZE, Image.LANCZOS)))[0]


SECOND_SCALE = 768  # a second pass at 0.56x the pixels: the multi-scale variants cost 1.56 passes


def second_scale_logits(engine: MattingEngine, rgb: np.ndarray, lanczos: bool = False) -> np.ndarray:
    """Our preprocessing at SECOND_SCALE² (antialiased bilinear, or Lanczos), the logits brought back to SIZE² (bilinear)."""
    small = model_input(rgb, SECOND_SCALE, Image.LANCZOS if lanczos else Image.BILINEAR)
    up = F.interpolate(torch.from_numpy(logits(engine, our_input(small)))[None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def served_two_passes(engine: MattingEngine, rgb: np.ndarray) -> np.ndarray:
    """The service's matte with BGR_SECOND_RESOLUTION=SECOND_SCALE: Lanczos to SIZE², the second input made from it on the device."""
    two_pass = dataclasses.replace(engine, second_resolution=SECOND_SCALE)
    return two_pass.predict(model_input(rgb, SIZE, Image.LANCZOS)[None])[0]


def timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def cached_logits(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """Logits (or any map) saved at ``path`` (fp16), or computed and saved there."""
    if path.exists():
        return np.load(path)["plain"]
    computed = compute()
    np.savez(path, plain=computed.astype(np.float16))
    return computed


def our_logits(engine: MattingEngine, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Plain and flipped logits for our preprocessing, and seconds for one model pass."""
    x = our_input(model_input(rgb, SIZE, Image.BILINEAR))
    started = time.perf_counter()
    plain = logits(engine, x)[0]
    seconds = time.perf_counter() - started
    flipped = logits(engine, np.ascontiguousarray(x[..., ::-1]))[0][:, ::-1]
    return plain, np.ascontiguousarray(flipped), seconds


def cached_outputs(engine: MattingEngine, rgb: np.ndarray, path: Path) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, float]:
    """The baseline's matte and seconds, our plain and flipped logits and one pass's seconds; saved at ``path``."""
    if path.exists():
        data = np.load(path)
        return data["base"], float(data["base_s"]), data["plain"], data["flipped"], float(data["pass_s"])
    base, base_s = baseline(engine, rgb)
    plain, flipped, pass_s = our_logits(engine, rgb)
    np.savez(path, base=base, base_s=base_s, plain=plain.astype(np.float16), flipped=flipped.astype(np.float16), pass_s=pass_s)
    return base, base_s, plain, flipped, pass_s


def lanczos_up(prob: np.ndarray, width: int, height: int) -> np.ndarray:
    """The matte to image size with Lanczos, as the baseline does (on the float matte, not 8-bit)."""
    resized = Image.fromarray(prob.astype(np.float32), mode="F").resize((width, height), Image.LANCZOS)
    return np.clip(np.rint(np.asarray(resized) * 255), 0, 255).astype(np.float32) / 255


def variants(rgb: np.ndarray, plain: np.ndarray, flipped: np.ndarray, lanczos_in: np.ndarray, second_scale: np.ndarray,
             lanczos_second_scale: np.ndarray, served_two: np.ndarray) -> dict[str, tuple[np.ndarray, float, float, bool]]:
    """name -> (matte at image size, post-processing seconds, model passes at 1024², whether its input is resized with Lanczos)."""
    height, width = rgb.shape[:2]
    out: dict[str, tuple[np.ndarray, float, float, bool]] = {}
    stretch = lambda p: (p - p.min()) / max(float(p.max() - p.min()), 1e-6)  # noqa: E731  (the baseline's min-max stretch)
    second = (SECOND_SCALE / SIZE) ** 2  # a pass at the second scale, in passes at SIZE²
    two = 1 + second
    plain_prob, lanczos_prob = sigmoid(plain), sigmoid(lanczos_in)
    fused = {
        "default": (plain_prob, 1, False),
        "stretch": (stretch(plain_prob), 1, False),
        "flip": ((plain_prob + sigmoid(flipped)) / 2, 2, False),
        "flip-logits": (sigmoid((plain + flipped) / 2), 2, False),  # fused before the sigmoid: confident passes weigh more
        "scales": ((plain_prob + sigmoid(second_scale)) / 2, two, False),
        "scales-logits": (sigmoid((plain + second_scale) / 2), two, False),
        # Both scales resized with Lanczos, as the baseline resizes its one pass.
        "lanczos-scales-logits": (sigmoid((lanczos_in + lanczos_second_scale) / 2), two, True),
        # The same as the service runs it (BGR_SECOND_RESOLUTION): the second input resized on the device from the first.
        "served-two-passes": (served_two, two, True),
    }
    image = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255
    for name, (prob, passes, lanczos) in fused.items():
        started = time.perf_counter()
        out[name] = (matte_at_size(prob, width, height).astype(np.float32) / 255, time.perf_counter() - started, passes, lanczos)
        started = time.perf_counter()
        refined = upsample_guided(torch.from_numpy(prob.astype(np.float32))[None, None], image)[0, 0].numpy()
        out[f"{name}+guided"] = (np.round(refined * 255) / 255, time.perf_counter() - started, passes, lanczos)
    # The baseline's resampling filters, one side at a time: which of them explains its lead on soft mattes?
    # And one pass at the second scale alone (BGR_RESOLUTION=768 serves the bilinear one): the cheaper model input.
    for name, prob, up, passes, lanczos in (("lanczos-out", plain_prob, lanczos_up, 1, False),
                                            ("lanczos-in", lanczos_prob, None, 1, True),
                                            ("lanczos-in+out", lanczos_prob, lanczos_up, 1, True),
                                            ("one-pass-768", sigmoid(second_scale), None, second, False),
                                            ("one-pass-768-lanczos", sigmoid(lanczos_second_scale), None, second, True)):
        started = time.perf_counter()
        matte = up(prob, width, height) if up else matte_at_size(prob, width, height).astype(np.float32) / 255
        out[name] = (matte, time.perf_counter() - started, passes, lanczos)
    return out


def score(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    return {"mae": mae(pred, gt), "mse": mse(pred, gt), "sad": sad(pred, gt), "grad": grad_error(pred, gt), "iou": iou(pred, gt)}


def summarise(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """config -> set (and 'overall') -> metric -> mean."""
    grouped: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        grouped[row["config"]][row["set"]].append(row)
        grouped[row["config"]]["overall"].append(row)
    return {
        config: {name: {m: float(np.mean([r[m] for r in items])) for m in METRICS} | {"pairs": len(items)} for name, items in sets.items()}
        for config, sets in grouped.items()
    }


def add_pair_arguments(parser: argparse.ArgumentParser, out: Path) -> None:
    """The options every benchmark over the evaluation pairs takes: where they are, how many, where results go."""
    parser.add_argument("--manifest", type=Path, default=ROOT.parent / "shared" / "evaldata" / "manifest.csv")
    parser.add_argument("--limit", type=int, default=0, help="at most this many pairs per set (0: all)")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "cache", help="model outputs per image")


def manifest_found(manifest: Path) -> bool:
    if not manifest.exists():
        print(f"error: {manifest} not found (the evaluation pairs live in ../shared/evaldata)", file=sys.stderr)
    return manifest.exists()


def read_pairs(manifest: Path, limit: int = 0) -> list[dict[str, str]]:
    """The manifest's rows, at most ``limit`` per set (0: all)."""
    with manifest.open(newline="") as f:
        pairs = list(csv.DictReader(f))
    if limit:
        counts: dict[str, int] = defaultdict(int)
        pairs = [p for p in pairs if (counts.__setitem__(p["set"], counts[p["set"]] + 1) or counts[p["set"]] <= limit)]
    return pairs


def contact_sheet(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], path: Path, height: int = 160) -> None:
    tiles = []
    for rgb, base, ours, gt in samples:
        row = [Image.fromarray(rgb)] + [Image.fromarray((m * 255).astype(np.uint8)).convert("RGB") for m in (base, ours, gt)]
        width = int(rgb.shape[1] * height / rgb.shape[0])
        tiles.append([t.resize((width, height)) for t in row])
    sheet = Image.new("RGB", (max(sum(t.width for t in row) for row in tiles), height * len(tiles)), "white")
    for i, row in enumerate(tiles):
        x = 0
        for tile in row:
            sheet.paste(tile, (x, i * height))
            x += tile.width
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--refine" in argv:  # the matting stage on the high-resolution portraits: bench/matting_quality.py
        from matting_quality import main as matting_main

        return matting_main(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_arguments(parser, ROOT / "bench" / "results" / "quality")
    args = parser.parse_args(argv)
    if not manifest_found(args.manifest):
        return 2
    engine = MattingEngine.from_settings(Settings(device="cpu"))
    pairs = read_pairs(args.manifest, args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    base_dir = args.manifest.parent
    rows, samples = [], []
    for index, pair in enumerate(pairs, 1):
        rgb = np.asarray(Image.open(base_dir / pair["image"]).convert("RGB"))
        gt = load_gray(base_dir / pair["gt"])
        base, base_s, plain, flipped, pass_s = cached_outputs(engine, rgb, args.cache / f"{pair['set']}__{pair['id']}.npz")
        stem = f"{pair['set']}__{pair['id']}"
        lanczos_in = cached_logits(args.cache / f"{stem}__lanczos.npz", lambda: lanczos_logits(engine, rgb))
        second_scale = cached_logits(args.cache / f"{stem}__s{SECOND_SCALE}.npz", lambda: second_scale_logits(engine, rgb))
        lanczos_second_scale = cached_logits(
            args.cache / f"{stem}__s{SECOND_SCALE}lanczos.npz", lambda: second_scale_logits(engine, rgb, lanczos=True)
        )
        rows.append({"config": "baseline", "set": pair["set"], "id": pair["id"], **score(base, gt), "seconds": base_s})
        served_two = cached_logits(args.cache / f"{stem}__served{SECOND_SCALE}.npz", lambda: served_two_passes(engine, rgb))
        maps = (plain, flipped, lanczos_in, second_scale, lanczos_second_scale, served_two)
        ours = variants(rgb, *(x.astype(np.float32) for x in maps))
        resize_s = {lanczos: timed(lambda: model_input(rgb, SIZE, Image.LANCZOS if lanczos else Image.BILINEAR)) for lanczos in (False, True)}
        for name, (matte, post_s, passes, lanczos) in ours.items():
            # Time per image as the service spends it after decoding: the resize in, the model passes, the post-processing.
            seconds = resize_s[lanczos] + passes * pass_s + post_s
            rows.append({"config": name, "set": pair["set"], "id": pair["id"], **score(matte, gt), "seconds": seconds})
        if pair["set"] == "alphamatting_lowres" and len(samples) < 6:
            samples.append((rgb, base, ours["default"][0], gt))
        print(f"\r{index}/{len(pairs)} pairs", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    summary = summarise(rows)
    (args.out / "quality.json").write_text(json.dumps({"summary": summary, "pairs": rows}, indent=1) + "\n")
    if samples:
        contact_sheet(samples, args.out / "contact_sheet.png")
    base_overall = summary["baseline"]["overall"]
    print(f"{'config':16s} {'set':22s} {'pairs':>5s} {'MAE':>8s} {'MSE':>8s} {'SAD':>8s} {'Grad':>8s} {'IoU':>7s} {'s/img':>6s}")
    for config, sets in summary.items():
        for name, m in sorted(sets.items(), key=lambda kv: (kv[0] == "overall", kv[0])):
            print(f"{config:16s} {name:22s} {m['pairs']:5d} {m['mae']:8.4f} {m['mse']:8.4f} {m['sad']:8.2f} {m['grad']:8.2f} {m['iou']:7.4f} {m['seconds']:6.2f}")
        overall = sets["overall"]
        print(f"{'':16s} vs baseline: MAE {100 * (overall['mae'] / base_overall['mae'] - 1):+.1f}%, Grad {100 * (overall['grad'] / base_overall['grad'] - 1):+.1f}%, time x{overall['seconds'] / base_overall['seconds']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
