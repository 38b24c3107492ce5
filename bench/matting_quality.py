"""The matting stage at the photo's own size, against IS-Net alone and rembg's alpha matting: ``bench/quality.py --refine``.

    python bench/quality.py --refine [--manifest ../shared/evaldata-hires/manifest.csv] [--limit N] [--half A|B]
        [--methods all|none] [--rembg-max-megapixels 8] [--rembg-memory-gb 10] [--out bench/results/matting]

Per photo of the high-resolution portraits (sorted by id; halves A and B as bench/hires.py makes them), in one run:

- IS-Net's forward, timed on the service's engine (its 1024 x 1024 matte is also cached for bench/refine_search.py);
- ``isnet``: IS-Net alone as served today (the matte scaled up);
- ``service default``: what the service serves on its defaults (BGR_REFINE=auto: the stage where the photo and its
  matte qualify, the matte scaled up elsewhere); ``refine on``: the stage on every photo;
- each method tried (bench/refine_methods.py), unless ``--methods none``;
- rembg's ``remove(..., alpha_matting=True)`` on its defaults with the same weights (bench/rembg_matting.py, its own
  process, interleaved photo by photo with the above), and the same call without alpha matting for its cost. Its
  solver holds about 1 GB per megapixel, so photos above ``--rembg-max-megapixels`` are left to it only where the
  machine has the memory (the cap, ``--rembg-memory-gb``, turns a larger need into an error row, not a swap storm).

Every matte is scored at the photo's full size: MAE, SAD, gradient and connectivity errors, the soft-band error
(mean |alpha - gt| where 0.03 < gt < 0.97) and IoU at 128. Times are the stage's own (after the network, before
encoding), with rembg's whole call and its alpha matting's share. Writes ``matting.json`` (every row) and
``matting.md`` (the tables: per half, per size group, and on the photos rembg ran) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hires import HALVES, HIRES_MANIFEST, RembgWorker, cache_matte, full_scores, load_photo, load_truth, read_pairs, timed_forward  # noqa: E402

from app.inference.engine import MattingEngine  # noqa: E402
from app.inference.matting import refine_matte, worth_refining  # noqa: E402
from app.inference.pipeline import matte_at_size  # noqa: E402
from app.settings import Settings  # noqa: E402

METRICS = ("mae", "sad", "soft", "grad", "conn", "iou")
SIZE_GROUPS = ((0, 4, "under 4 MP"), (4, 12, "4-12 MP"), (12, 100, "12 MP and over"))
ALONE, DEFAULT, ON, REMBG = "isnet", "service default", "refine on", "rembg a=true"


def forward(engine: MattingEngine, rgb: np.ndarray, data: bytes) -> tuple[np.ndarray, float]:
    """The engine's matte of the photo, timed (so never read from the cache), and cached where bench/refine_search.py
    reads it."""
    matte, seconds = timed_forward(engine, rgb)
    cache_matte(data, matte, seconds, engine.runtime)
    return matte, seconds


def configurations(methods: bool) -> dict:
    """name -> function (rgb, matte, base) -> alpha."""
    out = {
        ALONE: lambda rgb, matte, base: base,
        DEFAULT: lambda rgb, matte, base: refine_matte(rgb, matte, base) if worth_refining(rgb.shape[1], rgb.shape[0], matte.size, matte) else base,
        ON: lambda rgb, matte, base: refine_matte(rgb, matte, base),
    }
    if methods:
        from refine_methods import METHODS

        out.update({name: (lambda fn: lambda rgb, matte, base: fn(rgb, matte))(fn) for name, fn in METHODS.items()})
    return out


def summary(rows: list[dict], config: str, ids: list[str]) -> dict | None:
    picked = {r["id"]: r for r in rows if r["config"] == config and "error" not in r}
    alone = {r["id"]: r for r in rows if r["config"] == ALONE}
    ids = [i for i in ids if i in picked]
    if not ids:
        return None
    out = {m: float(np.mean([picked[i][m] for i in ids])) for m in METRICS}
    for m in ("mae", "soft", "grad"):
        reference = float(np.mean([alone[i][m] for i in ids]))
        out[f"{m}_x"] = out[m] / reference if reference > 0 else float("nan")  # a set of hard mattes has no soft band
    out["median_s"] = float(np.median([picked[i]["seconds"] for i in ids]))
    out["photos"] = len(ids)
    return out


def table(rows: list[dict], configs: list[str], ids: list[str], title: str) -> str:
    lines = [f"\n{title}\n", "| config | photos | MAE | SAD | Grad | Conn | soft-band | IoU | MAE x | soft x | Grad x | s/photo (median) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for config in configs:
        s = summary(rows, config, ids)
        if s is None:
            continue
        lines.append(f"| {config} | {s['photos']} | {s['mae']:.4f} | {s['sad']:.1f} | {s['grad']:.2f} | {s['conn']:.1f} | {s['soft']:.4f} | "
                     f"{s['iou']:.4f} | {s['mae_x']:.3f} | {s['soft_x']:.3f} | {s['grad_x']:.3f} | {s['median_s']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refine", action="store_true", help="(the switch bench/quality.py dispatches on)")
    parser.add_argument("--manifest", type=Path, action="append", default=None,
                        help="the pairs (repeatable; default ../shared/evaldata-hires/manifest.csv)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many photos (0: all)")
    parser.add_argument("--half", choices=HALVES, default=None)
    parser.add_argument("--methods", choices=("all", "none"), default="all")
    parser.add_argument("--rembg", choices=("run", "none"), default="run")
    parser.add_argument("--rembg-max-megapixels", type=float, default=8.0)
    parser.add_argument("--rembg-memory-gb", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "matting")
    args = parser.parse_args(argv)
    manifests = args.manifest or [HIRES_MANIFEST]
    missing = [m for m in manifests if not m.exists()]
    if missing:
        print(f"error: {missing[0]} not found (the evaluation pairs live in ../shared)", file=sys.stderr)
        return 2
    settings = Settings(device="cpu")
    engine = MattingEngine.from_settings(settings)
    engine.warm_up()  # the first forward sets the runtime up: not a photo's time
    pairs = [p for manifest in manifests for p in read_pairs(manifest) if args.half in (None, p.half)]
    if args.limit:
        pairs = pairs[: args.limit]
    configs = configurations(args.methods == "all")
    args.out.mkdir(parents=True, exist_ok=True)
    rembg = RembgWorker(args.out / "rembg", args.rembg_memory_gb) if args.rembg == "run" else None
    rows: list[dict] = []
    print(f"{len(pairs)} photos; {engine.runtime} on the CPU, {torch.get_num_threads()} threads", file=sys.stderr)
    try:
        for index, pair in enumerate(pairs, 1):
            data, rgb = load_photo(pair.image)
            truth = load_truth(pair.gt)
            matte, forward_s = forward(engine, rgb, data)
            started = time.perf_counter()
            base = matte_at_size(matte, pair.width, pair.height)
            base_s = time.perf_counter() - started
            key = {"id": pair.id, "set": pair.set, "half": pair.half, "megapixels": pair.megapixels, "forward_s": forward_s}
            for name, run in configs.items():
                started = time.perf_counter()
                alpha = run(rgb, matte, base)
                seconds = time.perf_counter() - started + base_s  # every config starts from the matte scaled up
                rows.append({"config": name, **key, "seconds": seconds, **full_scores(alpha.astype(np.float32) / 255, truth)})
            if rembg is not None:
                if pair.megapixels <= args.rembg_max_megapixels:
                    result = rembg.run(pair)
                    if "error" in result:
                        rows.append({"config": REMBG, **key, "error": result["error"]})
                    else:
                        rows.append({"config": REMBG, **key, "seconds": result["matting_s"], "plain_s": result["plain_s"],
                                     "peak_rss_mb": result["peak_rss_mb"], **full_scores(result["alpha"], truth)})
                else:
                    rows.append({"config": REMBG, **key, "error": f"not run: over {args.rembg_max_megapixels} MP (about 1 GB a megapixel)"})
            done = {r["config"]: r for r in rows if r["id"] == pair.id}
            line = " ".join(f"{c.split(':')[-1].strip()[:14]}={r['mae']:.4f}/{r['soft']:.3f}/{r['seconds']:.2f}s" for c, r in done.items() if "error" not in r)
            print(f"{index}/{len(pairs)} {pair.id} {pair.megapixels:.1f} MP forward {forward_s:.2f}s  {line}", file=sys.stderr, flush=True)
            (args.out / "matting.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    finally:
        if rembg is not None:
            rembg.close()
    report = report_tables(rows, list(configs) + ([REMBG] if rembg is not None else []), pairs)
    (args.out / "matting.md").write_text(report + "\n")
    print(report)
    return 0


def report_tables(rows: list[dict], configs: list[str], pairs) -> str:
    parts = []
    for half in HALVES:
        ids = [p.id for p in pairs if p.half == half]
        if ids:
            parts.append(table(rows, configs, ids, f"Half {half} ({len(ids)} photos)"))
    all_ids = [p.id for p in pairs]
    parts.append(table(rows, configs, all_ids, f"All {len(all_ids)} photos"))
    sets = sorted({p.set for p in pairs})
    if len(sets) > 1:  # ../shared/evaldata: each set on its own
        for name in sets:
            ids = [p.id for p in pairs if p.set == name]
            parts.append(table(rows, configs, ids, f"{name} ({len(ids)} photos)"))
    rembg_ids = [r["id"] for r in rows if r["config"] == REMBG and "error" not in r]
    if rembg_ids:
        parts.append(table(rows, configs, rembg_ids, f"The {len(rembg_ids)} photos rembg's alpha matting ran on"))
        plain = [r["plain_s"] for r in rows if r["config"] == REMBG and "error" not in r]
        matting = [r["seconds"] for r in rows if r["config"] == REMBG and "error" not in r]
        ours = [r["seconds"] for r in rows if r["config"] == DEFAULT and r["id"] in rembg_ids]
        forwards = [r["forward_s"] for r in rows if r["config"] == DEFAULT and r["id"] in rembg_ids]
        parts.append(
            f"\nOn those photos, medians: rembg's whole call with alpha matting {np.median(matting):.2f} s, without "
            f"{np.median(plain):.2f} s; the service's forward {np.median(forwards):.2f} s and its stage {np.median(ours):.3f} s, "
            f"so forward + stage is {np.median(np.add(forwards, ours)) / np.median(matting):.3f}x rembg's call with alpha matting; "
            f"the stage alone against alpha matting's own share (with minus without): "
            f"{np.median(ours) / max(np.median(np.subtract(matting, plain)), 1e-9):.4f}x."
        )
    groups = []
    for low, high, name in SIZE_GROUPS:
        ids = [p.id for p in pairs if low <= p.megapixels < high]
        if not ids:
            continue
        cells = []
        for config in configs:
            times = [r["seconds"] for r in rows if r["config"] == config and r["id"] in ids and "error" not in r]
            cells.append(f"{np.median(times):.3f}" if times else "-")
        groups.append(f"| {name} ({len(ids)}) | " + " | ".join(cells) + " |")
    parts.append("\nSeconds per photo (median) by size\n\n| photos | " + " | ".join(configs) + " |\n|---|" + "---:|" * len(configs) + "\n" + "\n".join(groups))
    errors = [r for r in rows if "error" in r]
    if errors:
        parts.append("\nNot scored: " + "; ".join(f"{r['config']} on {r['id']} ({r['megapixels']:.1f} MP): {r['error']}" for r in errors))
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
