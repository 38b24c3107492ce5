"""Ratios against rembg, the Markdown table and the plot of a throughput run."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def ratios(cells: list[dict]) -> list[dict]:
    """Per size x mode x concurrency: the service against rembg's server (same concurrency) and library loop.

    ``p50_ratio`` below 1 and ``throughput_ratio`` above 1 favour the service. The library loop runs
    one call at a time, so its p50 is compared at concurrency 1 only; its images/s at every level.
    """
    index = {(c["system"], c["megapixels"], c["mode"], c["concurrency"]): c for c in cells}
    out = []
    for (system, mp, mode, level), ours in sorted(index.items(), key=lambda kv: kv[0][1:]):
        if system != "service":
            continue
        server = index.get(("rembg-server", mp, mode, level), {})
        library = index.get(("rembg-lib", mp, mode, 1), {})
        out.append({
            "megapixels": mp, "mode": mode, "concurrency": level,
            "vs_server_p50_ratio": _ratio(ours["p50_s"], server.get("p50_s")),
            "vs_server_throughput_ratio": _ratio(ours["images_per_s"], server.get("images_per_s")),
            "vs_server_peak_rss_ratio": _ratio(ours["peak_rss_mb"], server.get("peak_rss_mb")),
            "vs_library_p50_ratio": _ratio(ours["p50_s"], library.get("p50_s")) if level == 1 else None,
            "vs_library_throughput_ratio": _ratio(ours["images_per_s"], library.get("images_per_s")),
        })
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(cells: list[dict], ratio_rows: list[dict]) -> str:
    lines = [
        "| system | MP | mode | conc | ok/req | p50 s | p95 s | img/s | peak RSS MB | server cores | client cores |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(f"| {c['system']} | {c['megapixels']:g} | {c['mode']} | {c['concurrency']} | {c['ok']}/{c['requests']} | "
                     f"{_fmt(c['p50_s'])} | {_fmt(c['p95_s'])} | {_fmt(c['images_per_s'], 3)} | {_fmt(c['peak_rss_mb'], 0)} | "
                     f"{_fmt(c.get('server_cores'), 1)} | {_fmt(c.get('client_cores'), 1)} |")
    if ratio_rows:
        lines += [
            "",
            "| MP | mode | conc | p50 / rembg server | img/s / rembg server | peak RSS / rembg server | p50 / rembg lib | img/s / rembg lib |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in ratio_rows:
            lines.append(f"| {r['megapixels']:g} | {r['mode']} | {r['concurrency']} | {_fmt(r['vs_server_p50_ratio'])} | "
                         f"{_fmt(r['vs_server_throughput_ratio'])} | {_fmt(r['vs_server_peak_rss_ratio'])} | "
                         f"{_fmt(r['vs_library_p50_ratio'])} | {_fmt(r['vs_library_throughput_ratio'])} |")
    return "\n".join(lines)


def plot(cells: list[dict], path: Path) -> Path | None:
    """Images/s and p50 latency against concurrency, one column per size x mode, one line per system."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels: dict[tuple[float, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for c in cells:
        if c["images_per_s"] is not None:
            panels[(c["megapixels"], c["mode"])][c["system"]].append(c)
    keys = sorted(panels)
    levels_used = sorted({c["concurrency"] for c in cells})
    fig, axes = plt.subplots(2, len(keys), figsize=(4 * len(keys), 7), squeeze=False)
    for col, key in enumerate(keys):
        for system, rows in sorted(panels[key].items()):
            rows.sort(key=lambda c: c["concurrency"])
            levels = [c["concurrency"] for c in rows]
            style = {"marker": "o", "label": system}
            if system == "rembg-lib":  # one call at a time: a reference line across the levels
                levels = sorted({c["concurrency"] for s in panels[key].values() for c in s}) or levels
                rows = rows * len(levels)
                style |= {"linestyle": "--", "marker": None}
            axes[0][col].plot(levels, [c["images_per_s"] for c in rows], **style)
            axes[1][col].plot(levels, [c["p50_s"] for c in rows], **style)
        axes[0][col].set_title(f"{key[0]:g} MP, {key[1]}", fontsize=9)
        for row, label in ((0, "images/s"), (1, "p50 latency, s")):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_xticks(levels_used, [str(level) for level in levels_used])
            axes[row][col].set_ylim(bottom=0)
            axes[row][col].set_xlabel("concurrency")
            axes[row][col].set_ylabel(label)
            axes[row][col].grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
