"""Issue 26's speed goals in one run: the service as served against today's fp32 engine and rembg's server, in turns.

    python bench/runtime_speed.py [--rounds 2] [--concurrency 1,4,8] [--requests 8] [--sizes 2]
    python bench/runtime_speed.py --systems today,bf16-off,openvino-f32 --concurrency 1,4   # the no-bf16 path

Every cell is bench/throughput.py's (a fresh server per system and round, one uncounted warm-up, then
closed-loop clients sending the same 2 MP JPEG as backgroundRemoval). The systems take turns, round
after round, so a busy moment on a shared machine falls on all of them:

- ``served``: the service on its defaults (``BGR_RUNTIME=auto``: what this machine picks);
- ``today``: the service on today's CPU engine (``BGR_RUNTIME=onnxruntime``, fp32);
- ``bf16-off``: the defaults with bf16 switched off (``BGR_DTYPE=float32``): what ``auto`` serves on a CPU without native bf16;
- ``openvino-f32``: OpenVINO held to f32 (``BGR_DTYPE=float32 BGR_RUNTIME=openvino``): what a CPU without native bf16 would get from OpenVINO;
- ``served-2-requests``: the defaults with two inference requests in flight (``BGR_INFER_REQUESTS=2``: two OpenVINO streams);
- ``rembg-server``: ``rembg s`` on the same weights (bench/throughput.py's set-up).

Every service system runs with the matting stage off (``BGR_REFINE=off``, as the goals ask; ``--service-env
BGR_REFINE=auto`` puts it back). Reported per system and concurrency: the median over rounds of p50 latency and of images/s, and the
ratios the goals name: served p50 at 1 client against today's (goal: at most 0.55), served images/s
at 4 clients against today's (at least 1.8) and against rembg's server (at least 2.5).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import throughput  # noqa: E402

SYSTEMS = {
    "served": ["--systems", "service"],
    "today": ["--systems", "service", "--service-env", "BGR_RUNTIME=onnxruntime"],
    "bf16-off": ["--systems", "service", "--service-env", "BGR_DTYPE=float32"],
    "openvino-f32": ["--systems", "service", "--service-env", "BGR_RUNTIME=openvino", "--service-env", "BGR_DTYPE=float32"],
    "served-2-requests": ["--systems", "service", "--service-env", "BGR_INFER_REQUESTS=2"],
    "rembg-server": ["--systems", "rembg-server"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default="served,today,rembg-server")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--sizes", default="2")
    parser.add_argument("--modes", default="backgroundRemoval")
    # The goals are the forward's: the matting stage (issue 25) is off, and timed on its own by bench/stages.py. A later
    # --service-env BGR_REFINE=auto wins over this one.
    parser.add_argument("--service-env", action="append", default=["BGR_REFINE=off"], metavar="BGR_X=VALUE", help="added to every service system")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    systems = [name.strip() for name in args.systems.split(",")]
    run = time.strftime("%Y%m%d-%H%M%S")
    cells: dict[tuple[str, str, int], list[dict]] = {}
    load = []
    for round_index in range(args.rounds):
        for name in systems:
            tag = f"speed-{run}-{name}-{round_index}"
            extra = [kv for setting in args.service_env for kv in ("--service-env", setting)] if name != "rembg-server" else []
            load.append(os.getloadavg()[0])
            throughput.main([*SYSTEMS[name], *extra, "--sizes", args.sizes, "--modes", args.modes, "--concurrency", args.concurrency,
                             "--requests", str(args.requests), "--no-plot", "--tag", tag, "--out", str(args.out)])
            for cell in json.loads((args.out / f"throughput-{tag}.json").read_text())["cells"]:
                cells.setdefault((name, cell["mode"], cell["concurrency"]), []).append(cell)
    summary: dict[str, dict] = {}
    for (name, mode, level), runs in sorted(cells.items()):
        summary[f"{name} {mode} c{level}"] = {
            "p50_s": statistics.median(c["p50_s"] for c in runs if c["p50_s"] is not None),
            "images_per_s": statistics.median(c["images_per_s"] for c in runs if c["images_per_s"] is not None),
            "rounds": [(round(c["p50_s"] or 0, 3), round(c["images_per_s"] or 0, 3)) for c in runs],
            "errors": sum(len(c["errors"]) for c in runs),
            "peak_rss_mb": max(c["peak_rss_mb"] or 0 for c in runs),
        }
    print(f"\n| system | mode | clients | p50 s | images/s | rounds (p50, img/s) | peak RSS MB |\n|---|---|---:|---:|---:|---|---:|")
    for key, row in summary.items():
        name, mode, level = key.split(" ")
        print(f"| {name} | {mode} | {level[1:]} | {row['p50_s']:.3f} | {row['images_per_s']:.3f} | {row['rounds']} | {row['peak_rss_mb']:.0f} |")
    ratios = {}
    for mode in args.modes.split(","):
        get = lambda name, level, field: summary.get(f"{name} {mode} c{level}", {}).get(field)  # noqa: E731
        if get("served", 1, "p50_s") and get("today", 1, "p50_s"):
            ratios[f"{mode}: served p50 / today's at 1 client (goal <= 0.55)"] = get("served", 1, "p50_s") / get("today", 1, "p50_s")
        for level in (4, 8):
            if get("served", level, "images_per_s") and get("today", level, "images_per_s"):
                ratios[f"{mode}: served images/s / today's at {level} clients (goal at 4: >= 1.8)"] = get("served", level, "images_per_s") / get("today", level, "images_per_s")
            if get("served", level, "images_per_s") and get("rembg-server", level, "images_per_s"):
                ratios[f"{mode}: served images/s / rembg server's at {level} clients (goal at 4: >= 2.5)"] = get("served", level, "images_per_s") / get("rembg-server", level, "images_per_s")
        for level in (1, 4):
            for name in ("bf16-off", "openvino-f32"):
                if get(name, level, "images_per_s") and get("today", level, "images_per_s"):
                    ratios[f"{mode}: {name} p50 / today's at {level} clients"] = get(name, level, "p50_s") / get("today", level, "p50_s")
                    ratios[f"{mode}: {name} images/s / today's at {level} clients"] = get(name, level, "images_per_s") / get("today", level, "images_per_s")
    print("\n" + "\n".join(f"{name}: {value:.3f}" for name, value in ratios.items()))
    report = {"machine": throughput.machine(), "load_average_1min_at_each_start": load, "summary": summary, "ratios": ratios, "args": vars(args) | {"out": str(args.out)}}
    path = args.out / f"runtime-speed-{run}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
