"""Capacity at 1 fps: how many cameras this machine keeps fresh, ours against the baseline.

Every camera reads the same live RTSP source (SPEC §8 test camera, 720p H.264 at 25 fps, GOP 25:
one keyframe a second) and must deliver 640-wide JPEGs at 1 fps. A level of N cameras **passes**
when, over a window after warm-up, every camera's frame age stays under ``MAX_FRAME_AGE_S`` (twice
the interval) and its delivered rate lies between ``MIN_RATE_FPS`` and ``MAX_RATE_FPS``.

- **ours**: the real kernel (``python -m heldar serve``) with N cameras created through the API,
  each with one enabled AI task at 1 fps, width 640, and a budget (``HELDAR_AI_MAX_TOTAL_FPS``,
  ``HELDAR_AI_MAX_SAMPLERS``) far above N, so the budget never limits. Warm-up ends when every
  sampler is settled in its final decode mode (:meth:`benchmarks.kernel.BenchKernel.wait_sampling`).
  In the window ``GET /ai/samplers`` is polled every ``POLL_INTERVAL_S``. When a camera's
  ``frames_total`` has grown, its newest frame arrived ``frame_age_ms`` before the poll (taken at
  the request's midpoint, so within half a round trip). Where two frames arrived between polls,
  only the newer is seen and the gap is taken across both (the side that fails ours); such polls
  are counted as ``ambiguous``. The rate comes from ``frames_total`` itself.
- **baseline**: N independent ``ffmpeg -rtsp_transport tcp -i URL -vf fps=1,scale=640:-2 -c:v
  mjpeg -q:v 5 -f image2pipe pipe:1`` (:func:`benchmarks.decode_cpu.baseline_argv`), each stdout
  drained by a thread that stamps every JPEG end marker with its arrival time.

The frame age at an instant is the time since that camera's latest frame arrived, so the largest
age over the window is the largest gap between arrivals, from the last frame before the window to
the window's end. That is the age of the delivery, not of the picture: how far a decoder lags
behind the live stream is not visible through the API. A decoder that cannot keep up shows in its
rate instead: it delivers fewer frames than stream seconds pass. One that is working off a backlog
delivers more than the sampling rate, and its frames are older than their spacing suggests; hence
the upper bound, and a settle phase after warm-up that waits (up to ``SETTLE_TIMEOUT_S``) until
the cameras' mean rate is back at the sampling rate, so a start-up burst is not held against a
level but a backlog that never drains is.

The search, for each side, doubles N from ``--start`` (ours: from twice the baseline's result
when both run) until a level fails or ``--max`` is reached, then bisects between the largest pass
and the smallest failure until they are within ``--resolution``. One system serves a whole search:
it grows by adding cameras (as an operator adds cameras to a running system) and shrinks by
removing them; after a failed level, warm-up and settle wait until what is left has recovered.

CPU and memory (:mod:`benchmarks.usage`) are measured over the window for the side's processes,
the RTSP test camera (GStreamer server and its keeper reader, on this machine too), this harness,
and the whole machine, whose remainder is shown as "others". The machine is shared: run under the
benchmark lock::

    flock /tmp/heldar-bench.lock .venv/bin/python -m benchmarks.capacity [--max 256] [--window 20]
    flock /tmp/heldar-bench.lock .venv/bin/python -m benchmarks.capacity --sides ours --levels 2,4
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from benchmarks.decode_cpu import baseline_argv
from benchmarks.kernel import SOURCES, BenchKernel, Source, kernel_session
from benchmarks.machine import write_result
from benchmarks.usage import Usage, UsageMeter, children, this_process
from heldar.config import DecodeMode
from heldar.media.ffmpeg import discover
from tests.support import processes
from tests.support.rtsp_camera import RtspTestCamera

SOURCE = SOURCES["h264-720p-gop25"]
SAMPLE_FPS = 1.0
OUT_WIDTH = 640
# The pass rule: every frame younger than twice the sampling interval; at most one frame in ten
# missing; and no more frames than the rate asks for (more means a backlog is being worked off).
MAX_FRAME_AGE_S = 2.0 / SAMPLE_FPS
MIN_RATE_FPS = 0.9 * SAMPLE_FPS
MAX_RATE_FPS = 1.1 * SAMPLE_FPS
WINDOW_S = 15.0
# Settle: probes of this length until the mean rate over all cameras is at most SETTLED_RATE_FPS
# in SETTLED_PROBES probes in a row (a mean over many cameras, so one frame more or less at a
# probe's edges does not matter). A cold start of many cameras can starve the test camera, which
# then serves everyone faster than real time for a minute while it catches up.
SETTLE_PROBE_S = 5.0
SETTLED_RATE_FPS = 1.05 * SAMPLE_FPS
SETTLED_PROBES = 2
SETTLE_TIMEOUT_S = 45.0
# Ours: /ai/samplers poll period. Short against the 1 s frame interval, so two frames rarely
# arrive between polls; long enough that answering is a small load on the kernel.
POLL_INTERVAL_S = 0.25
START_N = 12  # the baseline reaches its limit within a few doublings from here
MAX_N = 256
# Stop bisecting once the smallest failure is within this fraction above the largest pass.
RESOLUTION = 0.1
# Far above any N, so the budget never limits ours (the settings' upper bounds).
BUDGET_FPS = 10_000
BUDGET_SAMPLERS = 10_000
# Warm-up deadline: connecting and learning the keyframe interval take about 10 s alone; many
# decoders starting at once on two cores slow each other down, hence a share per camera.
WARMUP_BASE_S = 30.0
WARMUP_PER_CAMERA_S = 0.1
# Baseline warm-up: frames each decoder must deliver before it counts as started.
BASELINE_MIN_FRAMES = 2
BASELINE_POLL_S = 0.25  # poll period of the baseline's warm-up loop
READ_CHUNK_BYTES = 1 << 16
JPEG_EOI = b"\xff\xd9"  # end-of-image marker; entropy-coded JPEG data never contains it
STOP_GRACE_S = 2.0
MS_PER_S = 1000
CPU_COUNT = os.cpu_count() or 1


# -- judging ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Freshness:
    """One camera over one window."""

    max_age_s: float  # largest time since the latest frame over the window; inf: none by its start
    rate_fps: float  # frames delivered in the window / its length
    ambiguous: int = 0  # ours: polls that saw more than one new frame

    @property
    def passed(self) -> bool:
        return self.max_age_s < MAX_FRAME_AGE_S and MIN_RATE_FPS <= self.rate_fps <= MAX_RATE_FPS


def max_age_s(arrivals: Sequence[float], start: float, end: float) -> float:
    """Largest ``t - (latest arrival <= t)`` for ``t`` in ``[start, end]``; inf if none by start."""
    ordered = sorted(arrivals)
    before = [t for t in ordered if t <= start]
    if not before:
        return math.inf
    last, worst = before[-1], 0.0
    for t in ordered:
        if start < t <= end:
            worst = max(worst, t - last)
            last = t
    return max(worst, end - last)


@dataclass
class Level:
    n: int
    passed: bool
    reason: str  # why it failed; "" when it passed
    worst_age_s: float = math.nan
    min_rate_fps: float = math.nan
    max_rate_fps: float = math.nan
    failing_cameras: int = 0
    ambiguous_polls: int = 0
    warm_s: float = 0.0  # adding or removing cameras and waiting until all deliver
    settle_s: float = 0.0  # settle time after warm-up
    seconds: float = 0.0  # wall time of the whole level, set-up included
    usage: Usage | None = None
    details: dict[str, Any] = field(default_factory=dict)  # the side's state at the end

    @property
    def side_cores(self) -> float:
        """The side's own CPU: the kernel and its ffmpegs, or the baseline's ffmpegs."""
        cores = self.usage.cores if self.usage is not None else {}
        return sum(cores.get(group, 0.0) for group in SIDE_GROUPS)

    @property
    def side_memory_mb(self) -> float:
        memory = self.usage.memory_mb if self.usage is not None else {}
        return sum(memory.get(group, 0.0) for group in SIDE_GROUPS)

    @property
    def other_cores(self) -> float:
        """CPU of everything else on the (shared) machine: what a quiet machine would not have."""
        if self.usage is None:
            return math.nan
        ours = sum(self.usage.cores.values())
        return self.usage.machine_busy_pct / 100 * CPU_COUNT - ours


SIDE_GROUPS = ("kernel", "decoders")


def judge(n: int, cameras: list[Freshness], usage: Usage) -> Level:
    failing = [c for c in cameras if not c.passed]
    rates = [c.rate_fps for c in cameras]
    level = Level(
        n=n,
        passed=not failing and len(cameras) == n,
        reason="",
        worst_age_s=max((c.max_age_s for c in cameras), default=math.inf),
        min_rate_fps=min(rates, default=0.0),
        max_rate_fps=max(rates, default=0.0),
        failing_cameras=len(failing),
        ambiguous_polls=sum(c.ambiguous for c in cameras),
        usage=usage,
    )
    if failing:
        level.reason = f"{len(failing)}/{n} cameras fail"
    return level


# -- the search ------------------------------------------------------------------------------------


class Side(Protocol):
    name: str

    def resize(self, n: int) -> None: ...
    def warm(self) -> str | None: ...  # why warm-up failed, or None
    def measure(self, window_s: float) -> tuple[list[Freshness], Usage]: ...
    def details(self) -> dict[str, Any]: ...  # the side's own state, for the record
    def close(self) -> None: ...


def settle(side: Side) -> tuple[float, str | None]:
    """Probe until the cameras' mean rate is at the sampling rate twice in a row (a backlog
    drains in bursts); return (seconds taken, problem or None)."""
    started = time.monotonic()
    calm = 0
    while True:
        cameras, _ = side.measure(SETTLE_PROBE_S)
        mean_fps = statistics.fmean(c.rate_fps for c in cameras)
        calm = calm + 1 if mean_fps <= SETTLED_RATE_FPS else 0
        elapsed = time.monotonic() - started
        if calm >= SETTLED_PROBES:
            return elapsed, None
        if elapsed >= SETTLE_TIMEOUT_S:
            return elapsed, f"a backlog: still {mean_fps:.2f} fps per camera after {elapsed:.0f} s"


def run_level(side: Side, n: int, window_s: float) -> Level:
    started = time.monotonic()
    side.resize(n)
    problem = side.warm()
    warm_s = time.monotonic() - started
    settle_s = 0.0
    if problem is None:
        settle_s, problem = settle(side)
    if problem is not None:
        level = Level(n=n, passed=False, reason=problem)
    else:
        level = judge(n, *side.measure(window_s))
    level.details = side.details()
    level.warm_s, level.settle_s = warm_s, settle_s
    level.seconds = time.monotonic() - started
    print(format_level(side.name, level), flush=True)
    return level


def next_level(lo: int, hi: int | None, n: int, max_n: int, resolution: float) -> int | None:
    """The next N to try, or None when done: double until a failure, then bisect."""
    if hi is None:
        return None if n >= max_n else min(2 * n, max_n)
    if hi - lo <= max(1, math.floor(lo * resolution)):
        return None
    return (lo + hi) // 2


def search(
    open_side: Callable[[], Side], levels: Iterator[int] | None, start: int, max_n: int,
    window_s: float, resolution: float,
) -> tuple[int, list[Level]]:  # fmt: skip
    """The largest passing N (0 if none) and every level measured, in order. With ``levels``,
    exactly those are measured, no search."""
    results: list[Level] = []
    lo, hi = 0, None
    side = open_side()
    try:
        n = next(levels, None) if levels is not None else min(start, max_n)
        while n is not None:
            level = run_level(side, n, window_s)
            results.append(level)
            if level.passed:
                lo = max(lo, n)
            else:
                hi = n if hi is None else min(hi, n)
            n = (
                next(levels, None)
                if levels is not None
                else next_level(lo, hi, n, max_n, resolution)
            )
    finally:
        side.close()
    return lo, results


# -- ours ------------------------------------------------------------------------------------------


class OursSide:
    """The real kernel; cameras are added and deleted through its API."""

    name = "ours"

    def __init__(self, source: Source, decode_mode: DecodeMode) -> None:
        env = {
            "HELDAR_AI_MAX_TOTAL_FPS": str(BUDGET_FPS),
            "HELDAR_AI_MAX_SAMPLERS": str(BUDGET_SAMPLERS),
            "HELDAR_AI_DECODE_MODE": decode_mode.value,
        }
        self._stack = ExitStack()
        self.kernel: BenchKernel = self._stack.enter_context(kernel_session(source, env=env))
        self.ids: list[str] = []
        self._batch = 0

    def resize(self, n: int) -> None:
        if n > len(self.ids):
            self._batch += 1  # a fresh prefix per batch keeps the ids unique
            new = self.kernel.add_cameras(n - len(self.ids), prefix=f"b{self._batch}_")
            self.kernel.add_ai_tasks(new, fps=SAMPLE_FPS, width=OUT_WIDTH)
            self.ids += new
        for camera_id in self.ids[n:]:
            self.kernel.api.delete(f"/cameras/{camera_id}").raise_for_status()
        del self.ids[n:]

    def warm(self) -> str | None:
        timeout_s = WARMUP_BASE_S + WARMUP_PER_CAMERA_S * len(self.ids)
        try:
            self.kernel.wait_sampling(self.ids, timeout_s=timeout_s)
        except RuntimeError as exc:
            return f"warm-up: {exc}"
        return None

    def measure(self, window_s: float) -> tuple[list[Freshness], Usage]:
        k = self.kernel
        meter = UsageMeter(
            {
                "kernel": lambda: [k.pid],
                "decoders": lambda: children(k.pid),
                "camera": lambda: camera_pids(k.camera),
                "harness": this_process,
            }
        )
        arrivals: dict[str, list[float]] = {c: [] for c in self.ids}
        totals: dict[str, int] = {}
        delivered = dict.fromkeys(self.ids, 0)  # frames after the first poll
        ambiguous = dict.fromkeys(self.ids, 0)
        meter.start()
        start = end = math.nan
        deadline = time.monotonic() + window_s
        while True:
            sent = time.monotonic()
            samplers = k.samplers()
            end = (sent + time.monotonic()) / 2
            first = math.isnan(start)
            if first:
                start = end
            for camera_id in self.ids:
                sampler = samplers.get(camera_id)
                if sampler is None or sampler["frame_age_ms"] is None:
                    continue
                total, previous = sampler["frames_total"], totals.get(camera_id)
                totals[camera_id] = total
                if total == previous:
                    continue
                arrivals[camera_id].append(end - sampler["frame_age_ms"] / MS_PER_S)
                if first:
                    continue
                # A replaced sampler counts from zero again; then all of its frames are new.
                new = total - previous if previous is not None and total > previous else total
                delivered[camera_id] += new
                ambiguous[camera_id] += new > 1
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL_S)  # poll period of the measurement
        usage = meter.stop()
        cameras = [
            Freshness(
                max_age_s=max_age_s(arrivals[c], start, end),
                rate_fps=delivered[c] / (end - start),
                ambiguous=ambiguous[c],
            )
            for c in self.ids
        ]
        return cameras, usage

    def details(self) -> dict[str, Any]:
        """How the samplers run: decode modes, learned keyframe intervals, states, restarts."""
        samplers = [s for c, s in self.kernel.samplers().items() if c in set(self.ids)]

        def count(values: Iterable[object]) -> dict[str, int]:
            return {str(k): v for k, v in sorted(Counter(values).items(), key=str)}

        return {
            "decode_modes": count(s["decode_mode"] for s in samplers),
            "keyframe_intervals_s": count(
                None if s["keyframe_interval_s"] is None else round(s["keyframe_interval_s"], 2)
                for s in samplers
            ),
            "states": count(s["state"] for s in samplers),
            "restarts": sum(s["restarts"] for s in samplers),
        }

    def close(self) -> None:
        self._stack.close()


def camera_pids(camera: RtspTestCamera) -> list[int]:
    server = [camera.server_pid] if camera.server_pid is not None else []
    return [*server, *camera.keeper_pids]


# -- baseline --------------------------------------------------------------------------------------


@dataclass
class _Decoder:
    proc: subprocess.Popen[bytes]
    reader: threading.Thread
    arrivals: list[float] = field(default_factory=list)


class BaselineSide:
    """N independent ffmpeg decoders on the test camera, each drained by its own thread."""

    name = "baseline"

    def __init__(self, source: Source) -> None:
        self.ffmpeg = discover().ffmpeg
        self.camera = source.camera()
        self.camera.start()
        self.decoders: list[_Decoder] = []

    def resize(self, n: int) -> None:
        while len(self.decoders) < n:
            self.decoders.append(self._spawn())
        for decoder in self.decoders[n:]:
            self._stop(decoder)
        del self.decoders[n:]

    def _spawn(self) -> _Decoder:
        read_fd, write_fd = os.pipe()  # the reader thread owns read_fd and closes it at EOF
        try:
            proc = processes.spawn(
                baseline_argv(self.ffmpeg, self.camera.url, SAMPLE_FPS),
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=subprocess.DEVNULL,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        arrivals: list[float] = []
        reader = threading.Thread(target=drain, args=(read_fd, arrivals), daemon=True)
        reader.start()
        return _Decoder(proc, reader, arrivals)

    @staticmethod
    def _stop(decoder: _Decoder) -> None:
        processes.stop(decoder.proc, STOP_GRACE_S)
        decoder.reader.join(timeout=STOP_GRACE_S)  # it ends at EOF, once ffmpeg is gone

    def warm(self) -> str | None:
        deadline = time.monotonic() + WARMUP_BASE_S + WARMUP_PER_CAMERA_S * len(self.decoders)
        while True:
            dead = [d for d in self.decoders if d.proc.poll() is not None]
            if dead:
                return f"warm-up: {len(dead)} ffmpeg exited (first code {dead[0].proc.returncode})"
            waiting = [d for d in self.decoders if len(d.arrivals) < BASELINE_MIN_FRAMES]
            if not waiting:
                return None
            if time.monotonic() >= deadline:
                return f"warm-up: {len(waiting)}/{len(self.decoders)} decoders without frames"
            time.sleep(BASELINE_POLL_S)  # poll interval of a deadline loop

    def measure(self, window_s: float) -> tuple[list[Freshness], Usage]:
        meter = UsageMeter(
            {
                "decoders": lambda: [d.proc.pid for d in self.decoders if d.proc.poll() is None],
                "camera": lambda: camera_pids(self.camera),
                "harness": this_process,
            }
        )
        meter.start()
        start = time.monotonic()
        time.sleep(window_s)  # the reader threads stamp arrivals meanwhile
        end = time.monotonic()
        usage = meter.stop()
        cameras = []
        for decoder in self.decoders:
            arrivals = list(decoder.arrivals)
            delivered = sum(1 for t in arrivals if start < t <= end)
            cameras.append(Freshness(max_age_s(arrivals, start, end), delivered / (end - start)))
        return cameras, usage

    def details(self) -> dict[str, Any]:
        return {"exited": sum(1 for d in self.decoders if d.proc.poll() is not None)}

    def close(self) -> None:
        try:
            for decoder in self.decoders:
                self._stop(decoder)
            self.decoders = []
        finally:
            self.camera.stop()


def drain(fd: int, arrivals: list[float]) -> None:
    """Read a decoder's stdout until EOF; stamp each JPEG end marker with its arrival time."""
    tail = b""
    try:
        while chunk := os.read(fd, READ_CHUNK_BYTES):
            now = time.monotonic()
            arrivals.extend([now] * (tail + chunk).count(JPEG_EOI))
            tail = chunk[-1:]  # a marker split across two reads is still counted, once
    finally:
        os.close(fd)


# -- report ----------------------------------------------------------------------------------------


def format_level(side: str, level: Level) -> str:
    verdict = "pass" if level.passed else "FAIL"
    line = (
        f"{side:8s} N={level.n:4d} {verdict} ({level.seconds:4.0f} s, settle {level.settle_s:2.0f})"
    )
    if level.usage is not None:
        u = level.usage
        line += (
            f" | age max {level.worst_age_s:5.2f} s, rate {level.min_rate_fps:4.2f}.."
            f"{level.max_rate_fps:4.2f} fps | machine {u.machine_busy_pct:3.0f} %, {side} "
            f"{level.side_cores:4.2f} cores ({1000 * level.side_cores / level.n:3.0f} mcore/cam),"
            f" camera {u.cores['camera']:4.2f}, harness {u.cores['harness']:4.2f},"
            f" others {level.other_cores:4.2f}"
            f" | {level.side_memory_mb:5.0f} MB"
        )
    modes = level.details.get("decode_modes")
    if modes and set(modes) != {DecodeMode.KEYFRAMES.value}:
        line += f" | decode modes {modes}"
    if level.reason:
        line += f" | {level.reason}"
    return line


def summary_table(results: dict[str, tuple[int, list[Level]]], max_n: int) -> str:
    lines = [
        "| side | largest passing N | max age (s) | rate (fps) | machine CPU | side CPU "
        "(cores) | per camera (cores) | camera server CPU (cores) | others' CPU (cores) | "
        "side memory (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for side, (largest, levels) in results.items():
        shown = f"{largest}" + (" (--max)" if largest >= max_n else "")
        best = next((lv for lv in reversed(levels) if lv.passed and lv.n == largest), None)
        if best is None or best.usage is None:
            lines.append(f"| {side} | {shown} | - | - | - | - | - | - | - | - |")
            continue
        u = best.usage
        lines.append(
            f"| {side} | {shown} | {best.worst_age_s:.2f} | {best.min_rate_fps:.2f}.."
            f"{best.max_rate_fps:.2f} | {u.machine_busy_pct:.0f} % | {best.side_cores:.2f} | "
            f"{best.side_cores / best.n:.4f} | {u.cores['camera']:.2f} | "
            f"{best.other_cores:.2f} | {best.side_memory_mb:.0f} |"
        )
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """Non-finite floats (a camera that never delivered has an infinite age) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="baseline,ours", help="comma-separated, in order")
    parser.add_argument("--start", type=int, default=START_N, help="first N of the search")
    parser.add_argument("--max", type=int, default=MAX_N, help="largest N tried")
    parser.add_argument("--window", type=float, default=WINDOW_S, help="seconds judged per N")
    parser.add_argument("--resolution", type=float, default=RESOLUTION)
    parser.add_argument("--levels", help="comma-separated N to measure instead of searching")
    parser.add_argument("--decode-mode", type=DecodeMode, default=DecodeMode.AUTO, help="ours")
    args = parser.parse_args()
    sides: dict[str, Callable[[], Side]] = {
        "ours": lambda: OursSide(SOURCE, args.decode_mode),
        "baseline": lambda: BaselineSide(SOURCE),
    }
    print(
        f"{SOURCE.name} at {SAMPLE_FPS:g} fps, width {OUT_WIDTH}: N passes when every camera's "
        f"frame age stays < {MAX_FRAME_AGE_S:g} s and its rate is {MIN_RATE_FPS:g}.."
        f"{MAX_RATE_FPS:g} fps over {args.window:g} s"
    )
    results: dict[str, tuple[int, list[Level]]] = {}
    for name in args.sides.split(","):
        levels = iter([int(n) for n in args.levels.split(",")]) if args.levels else None
        # Ours starts at twice the baseline's count: the levels below are not in question.
        start = max(args.start, 2 * results["baseline"][0]) if "baseline" in results else args.start
        results[name] = search(sides[name], levels, start, args.max, args.window, args.resolution)
    print()
    print(summary_table(results, args.max))
    ratio = None
    if "ours" in results and results.get("baseline", (0,))[0] > 0:
        ratio = results["ours"][0] / results["baseline"][0]
        print(f"\nours / baseline: {ratio:.1f}x the cameras (target: at least 5x)")
    path = write_result(
        "capacity",
        {
            "source": asdict(SOURCE),
            "sample_fps": SAMPLE_FPS,
            "out_width": OUT_WIDTH,
            "rule": {
                "max_frame_age_s": MAX_FRAME_AGE_S,
                "min_rate_fps": MIN_RATE_FPS,
                "max_rate_fps": MAX_RATE_FPS,
            },
            "window_s": args.window,
            "poll_interval_s": POLL_INTERVAL_S,
            "decode_mode": args.decode_mode.value,
            "max_n": args.max,
            "ours_over_baseline": ratio,
            "sides": {
                name: {
                    "largest_passing_n": largest,
                    "levels": [_json_safe(asdict(lv)) for lv in levels],
                }
                for name, (largest, levels) in results.items()
            },
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
