"""Variants of the sampler command against the baseline, side by side: how the choices were made.

For one source and one output rate, every variant (ours as the kernel runs it, and ours with one
option changed) and the baseline read the same live stream, one after the other, in rounds whose
order is shuffled each time, so drift of the shared machine hits all alike. Each variant's cost
is the median over the rounds, shown as CPU-seconds per minute of stream and as a ratio to the
baseline's median. Usage::

    flock /tmp/heldar-bench.lock .venv/bin/python -m benchmarks.variants \\
        --source h265-1080p-gop50 --fps 2 --variants ours,threads2,threads0 --rounds 4
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable
from typing import Any

from benchmarks.decode_cpu import (
    SOURCES,
    Sample,
    Source,
    baseline_argv,
    measure,
    ours_command,
    single,
)
from benchmarks.machine import write_result
from heldar.media.ffmpeg import discover
from heldar.services.sampler import SamplerCommand

Variant = Callable[[SamplerCommand], SamplerCommand]


def _replace(option: str, value: str, *, last: bool = False) -> Variant:
    """Set ``option``'s value in the reading process (the decoder, or the receiver); ``last``:
    its last occurrence (an output option) rather than its first (an input option)."""

    def change(command: SamplerCommand) -> SamplerCommand:
        argv = list(command.decoder)
        indexes = [i for i, arg in enumerate(argv) if arg == option]
        index = indexes[-1] if last else indexes[0]
        argv[index + 1] = value
        return SamplerCommand(argv, command.receiver)

    return change


def _filter(old: str, new: str) -> Variant:
    """Replace ``old`` by ``new`` in the decoder's ``-vf``."""

    def change(command: SamplerCommand) -> SamplerCommand:
        argv = list(command.decoder)
        index = argv.index("-vf") + 1
        assert old in argv[index], argv[index]
        argv[index] = argv[index].replace(old, new)
        return SamplerCommand(argv, command.receiver)

    return change


def _every_frame(command: SamplerCommand) -> SamplerCommand:
    """The receiver's input and the decoder's work in one ffmpeg that decodes every frame."""
    receiver, decoder = command.receiver, command.decoder
    assert receiver is not None, "not a pipeline"
    source = receiver[receiver.index("-filter_threads") + 2 : receiver.index("-map")]
    head = decoder[: decoder.index("-probesize")]
    tail = decoder[decoder.index("-vf") :]
    return SamplerCommand([*head, *source, "-map", "0:v:0", *tail])


VARIANTS: dict[str, Variant] = {
    "ours": lambda command: command,
    "threads0": _replace("-threads", "0"),  # ffmpeg's own decoder threading
    "threads2": _replace("-threads", "2"),
    "encoder_threads0": _replace("-threads", "0", last=True),
    "bicubic": _filter(":flags=area", ""),  # swscale's default scaler
    "every_frame": _every_frame,  # full decode in one process, no GOP-prefix receiver
}


def run(
    source: Source, fps: float, names: list[str], duration_s: float, rounds: int
) -> dict[str, Any]:
    ffmpeg = discover().ffmpeg
    camera = source.camera()
    camera.start()
    samples: dict[str, list[Sample]] = {name: [] for name in ["baseline", *names]}
    try:
        ours = ours_command(ffmpeg, camera.url, fps, source)
        commands = {name: VARIANTS[name](ours) for name in names}
        commands["baseline"] = single(baseline_argv(ffmpeg, camera.url, fps))
        for round_ in range(rounds):
            order = random.sample(list(commands), len(commands))
            for name in order:
                samples[name].append(measure(commands[name], duration_s))
            print(f"round {round_ + 1}/{rounds} done", flush=True)
    finally:
        camera.stop()
    base = statistics.median(s.cpu_s_per_min for s in samples["baseline"])
    rows = {}
    for name, runs in samples.items():
        cpu = statistics.median(s.cpu_s_per_min for s in runs)
        rows[name] = {
            "cpu_s_per_min": cpu,
            "over_baseline": cpu / base,
            "runs_cpu_s_per_min": [s.cpu_s_per_min for s in runs],
            "out_fps": statistics.median(s.out_fps for s in runs),
        }
    return {"source": source.name, "fps": fps, "duration_s": duration_s, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="h264-1080p-gop50", choices=sorted(SOURCES))
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--variants", default="ours,threads0", help=", ".join(VARIANTS))
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured per run")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    result = run(
        SOURCES[args.source], args.fps, args.variants.split(","), args.duration, args.rounds
    )
    print(f"\n{args.source} at {args.fps:g} fps, median of {args.rounds} rounds of "
          f"{args.duration:g} s; CPU-seconds per minute of stream")  # fmt: skip
    print("| variant | CPU | / baseline | runs | out fps |\n|---|---|---|---|---|")
    for name, row in result["rows"].items():
        runs = " ".join(f"{v:.2f}" for v in row["runs_cpu_s_per_min"])
        print(f"| {name} | {row['cpu_s_per_min']:.2f} | {row['over_baseline']:.2f} | {runs} | "
              f"{row['out_fps']:.2f} |")  # fmt: skip
    print(f"wrote {write_result('variants', result)}")


if __name__ == "__main__":
    main()
