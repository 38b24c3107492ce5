"""The matting stage's parameters, picked on one half of the high-resolution portraits and reported on the other.

    python bench/refine_search.py sweep [--around '{"band": 3}'] [--values '{"band": [2, 3, 5]}'] [--ids 0,1,...]
    python bench/refine_search.py report [--configs all]

``sweep`` scores configurations of :class:`app.inference.matting.MattingParams` on every pair of
../shared/evaldata-hires (the network's mattes from bench/hires.py's cache, so no forward runs): by default the
centre (``--around``, over the defaults) and, one parameter at a time, each of its ``--values``. Rows (MAE, SAD,
soft-band and gradient errors, IoU, the stage's seconds) are appended to ``bench/results/refine_search.jsonl`` per
photo and configuration, so a sweep resumes and a later one reuses them.

``report`` picks, on each half, the configuration with the lowest objective (the mean of its MAE, soft-band and
gradient errors as ratios to IS-Net alone on that half) and reports it on the other half, beside the defaults
and their neighbours, so a plateau (or its absence) shows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hires import HALVES, DeltaScorer, load_photo, load_truth, network_matte, read_pairs  # noqa: E402

from app.inference.matting import DEFAULT_PARAMS, MattingParams, refine_matte  # noqa: E402
from app.inference.pipeline import matte_at_size  # noqa: E402

ROWS = ROOT / "bench" / "results" / "refine_search.jsonl"
ALONE = "isnet"
METRICS = ("mae", "sad", "soft", "grad", "iou")
DEFAULT_VALUES = {
    "band": [2.0, 5.0],
    "low": [0.02, 0.1],
    "epsilon": [1e-5, 1e-3],
    "prior": [3e-3, 3e-2],
    "prior_unsure": [1e-4, 1e-2],
    "work_pixels": [150_000, 500_000],
    "guide_radius": [1.0, 4.0],
    "guide_epsilon": [1e-5, 1e-3],
}


def config_key(params: MattingParams) -> str:
    """Every parameter, as sorted JSON: rows stay valid when the defaults move."""
    return json.dumps(asdict(params), sort_keys=True)


def changes(key: str) -> str:
    """What a configuration changes from today's defaults ("defaults" for none), for the report."""
    if key == ALONE:
        return key
    changed = {k: v for k, v in json.loads(key).items() if v != getattr(DEFAULT_PARAMS, k)}
    return json.dumps(changed, sort_keys=True) if changed else "defaults"


def from_key(key: str) -> MattingParams:
    return MattingParams(**json.loads(key))


# Parameters added after rows were written, with the behaviour those rows had, so that old rows keep their meaning:
# before ``snap`` the certain regions kept the network's values; ``max_band_pixels`` is a cost bound that no portrait's
# band reaches (the largest: 43,509 working pixels), so rows from before it are what the default gives.
BEFORE_THE_PARAMETER = {"snap": False, "max_band_pixels": DEFAULT_PARAMS.max_band_pixels}


def normalised(key: str) -> str:
    if key == ALONE:
        return key
    return json.dumps({**BEFORE_THE_PARAMETER, **json.loads(key)}, sort_keys=True)


def load_rows(path: Path = ROWS) -> dict[tuple[str, str], dict]:
    rows: dict[tuple[str, str], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            row["config"] = normalised(row["config"])
            rows[(row["config"], row["id"])] = row
    return rows


def configurations(around: dict, values: dict) -> list[str]:
    centre = replace(DEFAULT_PARAMS, **around)
    keys = [config_key(centre)]
    for name, options in values.items():
        for value in options:
            if high_of(name, value, centre) is not None:
                keys.append(config_key(replace(centre, **high_of(name, value, centre))))
    return list(dict.fromkeys(keys))


def high_of(name: str, value, centre: MattingParams) -> dict | None:
    """One parameter changed; ``low`` moves ``high`` symmetrically."""
    if name == "low":
        return {"low": value, "high": round(1 - value, 6)}
    return {name: type(getattr(centre, name))(value)}


def sweep(keys: list[str], pair_indices: list[int] | None) -> None:
    pairs = read_pairs()
    if pair_indices:
        pairs = [pairs[i] for i in pair_indices]
    rows = load_rows()
    ROWS.parent.mkdir(parents=True, exist_ok=True)
    with ROWS.open("a") as out:
        for index, pair in enumerate(pairs, 1):
            todo = [k for k in [ALONE, *keys] if (k, pair.id) not in rows]
            if not todo:
                continue
            data, rgb = load_photo(pair.image)
            matte, _ = network_matte(None, rgb, data)
            truth = load_truth(pair.gt)
            base = matte_at_size(matte, pair.width, pair.height)
            scorer = DeltaScorer(truth, base)
            for key in todo:
                started = time.perf_counter()
                alpha = base if key == ALONE else refine_matte(rgb, matte, base, from_key(key))
                seconds = time.perf_counter() - started
                row = {"config": key, "id": pair.id, "half": pair.half, "megapixels": pair.megapixels, "seconds": seconds,
                       **scorer.score(alpha)}
                rows[(key, pair.id)] = row
                out.write(json.dumps(row) + "\n")
                out.flush()
            print(f"\r{index}/{len(pairs)} photos", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def half_summary(rows: dict, key: str, ids: list[str]) -> dict[str, float] | None:
    """Means over ``ids``, each metric's ratio to IS-Net alone, and the objective; None if a photo is missing."""
    picked = [rows.get((key, i)) for i in ids]
    alone = [rows[(ALONE, i)] for i in ids]
    if any(r is None for r in picked):
        return None
    out = {m: float(np.mean([r[m] for r in picked])) for m in METRICS}
    for m in ("mae", "soft", "grad"):
        out[f"{m}_x"] = out[m] / float(np.mean([r[m] for r in alone]))
    out["objective"] = (out["mae_x"] + out["soft_x"] + out["grad_x"]) / 3
    out["worse_mae"] = sum(r["mae"] > a["mae"] * 1.002 for r, a in zip(picked, alone))
    out["median_s"] = float(np.median([r["seconds"] for r in picked]))
    return out


def report(rows: dict, keys: list[str] | None = None) -> dict:
    pairs = read_pairs()
    ids = {h: [p.id for p in pairs if p.half == h] for h in HALVES}
    keys = keys or sorted({k for k, _ in rows if k != ALONE})
    table = {k: {h: half_summary(rows, k, ids[h]) for h in HALVES} for k in keys}
    complete = {k: v for k, v in table.items() if all(v[h] is not None for h in HALVES)}
    print(f"{'config (changes from the defaults)':70s} | " + " | ".join(f"{h}: MAE x  soft x  grad x  obj   worse  s" for h in HALVES))
    for key, halves in sorted(complete.items(), key=lambda kv: kv[1]["A"]["objective"] + kv[1]["B"]["objective"]):
        print(f"{changes(key)[:70]:70s} | " + " | ".join(
            f"{h}: {s['mae_x']:.3f} {s['soft_x']:.3f} {s['grad_x']:.3f} {s['objective']:.3f} {s['worse_mae']:3d} {s['median_s']:.2f}"
            for h, s in halves.items()))
    picks = {}
    for picked_on, held_out in (("A", "B"), ("B", "A")):
        best = min(complete, key=lambda k: complete[k][picked_on]["objective"])
        picks[picked_on] = best
        s = complete[best][held_out]
        print(f"picked on {picked_on}: {changes(best)}  ->  on {held_out}: MAE x{s['mae_x']:.3f}, soft-band x{s['soft_x']:.3f}, "
              f"Grad x{s['grad_x']:.3f} (objective {s['objective']:.3f}; {s['worse_mae']} photos worse on MAE)")
    return {"table": {changes(k): v for k, v in complete.items()}, "picks": {h: changes(k) for h, k in picks.items()}}


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("sweep", "report"))
    parser.add_argument("--around", default="{}", help="JSON: the centre's parameters (over the defaults)")
    parser.add_argument("--values", default="", help="JSON: parameter -> values to try one at a time (default: a built-in set)")
    parser.add_argument("--ids", default="", help="comma-separated indices into the sorted manifest (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady times beside other work)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    values = json.loads(args.values) if args.values else DEFAULT_VALUES
    keys = configurations(json.loads(args.around), values)
    if args.command == "sweep":
        sweep(keys, [int(i) for i in args.ids.split(",")] if args.ids else None)
    rows = load_rows()
    result = report(rows, keys if args.command == "sweep" else None)
    (ROWS.parent / "refine_search.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
