"""Plot the decode benchmark: CPU-seconds per minute of stream against output fps, per source.

Reads ``benchmarks/results/decode_cpu.json`` (written by :mod:`benchmarks.decode_cpu`) and writes
``benchmarks/results/decode_cpu.png``: one subplot per source, ours, the baseline and the physical
limit, on a log fps axis. The limit is drawn only where it is defined: rows decoded in
``keyframes`` mode that carry a value (above the keyframe rate there is no keyframe-only limit).
Usage::

    .venv/bin/python -m benchmarks.plot [--input PATH] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.machine import RESULTS_DIR

SUBPLOT_SIZE_IN = (4.5, 3.5)  # width, height of one source's panel, inches
MAX_COLUMNS = 2
MIN_WIDTH_IN = 6.5  # room for the title (CPU model, ffmpeg version) above a single panel
DPI = 120


def limit_points(rows: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """The (fps, limit) pairs where the limit is defined: keyframe rows with a value."""
    kept = [r for r in rows if r.get("mode") == "keyframes" and r.get("limit_cpu_s_per_min")]
    return [r["fps"] for r in kept], [r["limit_cpu_s_per_min"] for r in kept]


def plot(result: dict[str, Any], output: Path) -> None:
    sources = result["sources"]
    width_in, height_in = SUBPLOT_SIZE_IN
    cols = min(MAX_COLUMNS, len(sources))
    rows_of_plots = math.ceil(len(sources) / cols)
    fig = Figure(figsize=(max(width_in * cols, MIN_WIDTH_IN), height_in * rows_of_plots))
    FigureCanvasAgg(fig)  # the Agg backend, set on this figure only: no display, no global state
    axes = fig.subplots(rows_of_plots, cols, squeeze=False).flatten()
    for ax in axes[len(sources) :]:
        ax.set_visible(False)
    for ax, entry in zip(axes, sources, strict=False):
        rows = sorted(entry["rows"], key=lambda r: r["fps"])
        fps = [r["fps"] for r in rows]
        ax.plot(fps, [r["baseline_cpu_s_per_min"] for r in rows], "o-", label="baseline")
        ax.plot(fps, [r["ours_cpu_s_per_min"] for r in rows], "s-", label="ours")
        limit_fps, limit = limit_points(rows)
        if limit:
            ax.plot(limit_fps, limit, "^--", color="grey", label="limit (keyframes)")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(fps, [f"{f:g}" for f in fps])
        ax.set_ylim(bottom=0)
        ax.set_title(entry["source"]["name"])
        ax.set_xlabel("output fps")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[::cols]:
        ax.set_ylabel("CPU-s per minute of stream")
    axes[0].legend()
    machine = result.get("machine", {})
    fig.suptitle(f"Decoder CPU per camera\n{machine.get('cpu_model')}, {machine.get('ffmpeg')}")
    fig.tight_layout()
    fig.savefig(output, dpi=DPI)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=RESULTS_DIR / "decode_cpu.json")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "decode_cpu.png")
    args = parser.parse_args()
    plot(json.loads(args.input.read_text()), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
