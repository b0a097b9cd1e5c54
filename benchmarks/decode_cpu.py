"""Decode cost per sampled camera: ours against the baseline pipeline and the physical limit.

For each source (the RTSP test camera of SPEC §8, one codec/size/GOP at a time) and each output
rate, three decoders read the same live stream, one after the other, in one run:

- **baseline**: ``ffmpeg -rtsp_transport tcp -i URL -vf fps=F,scale=640:-2 -c:v mjpeg`` (decodes
  every frame, default threads): what a simple sampler does;
- **ours**: the kernel's own sampler command (``heldar.services.sampler.build_argv``) in ``auto``
  mode with the stream's keyframe interval and size known, as the kernel runs it after learning
  them: at or below the keyframe rate the two-process ``receiver | decoder`` pipeline, above it
  one full-decode ffmpeg;
- the **limit** is computed, not run: receiving the stream (``-c copy -f null``, measured) plus
  decoding, scaling and encoding exactly the keyframes that become output frames (the cost of one
  keyframe is measured by decoding only the keyframes of a recording of the same stream).

CPU is the user + system time (psutil) of the command's processes (both, for the pipeline) over
a window after a warm-up, scaled to CPU-seconds per minute of stream; memory is their PSS (RSS
where PSS is not readable). Each cell is the median of ``--repeats`` runs, baseline and ours
alternating. Usage::

    .venv/bin/python -m benchmarks.decode_cpu [--duration 30] [--repeats 1] [--sources ...]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from subprocess import DEVNULL
from typing import Any

import psutil

from benchmarks.machine import write_result
from heldar.config import DecodeMode
from heldar.media.ffmpeg import DEFAULT_IO_TIMEOUT_S, discover, jpeg_output_args
from heldar.media.urls import StreamUrl
from heldar.services.budget import SamplerGrant, SamplerKey
from heldar.services.sampler import (
    JPEG_QSCALE,
    SamplerCommand,
    build_argv,
    logs_keyframes,
    scale_filter,
)
from heldar.services.sampler_manager import effective_mode, sampler_spec
from tests.support.rtsp_camera import RtspTestCamera

OUT_WIDTH = 640
WARMUP_S = 6.0  # connect, first keyframe, steady state
RECORD_S = 40.0  # 8-20 keyframes
KEYFRAME_COST_RUNS = 3
SECONDS_PER_MINUTE = 60.0
FPS_LEVELS = (0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class Source:
    name: str
    codec: str
    width: int
    height: int
    fps: int
    gop: int
    bitrate_kbps: int

    @property
    def keyframe_interval_s(self) -> float:
        return self.gop / self.fps

    def camera(self) -> RtspTestCamera:
        """The RTSP test camera sending this source, with a keeper so it runs steadily."""
        return RtspTestCamera(
            width=self.width,
            height=self.height,
            fps=self.fps,
            gop=self.gop,
            bitrate_kbps=self.bitrate_kbps,
            codec=self.codec,
            keeper=True,
        )


SOURCES = {
    s.name: s
    for s in (
        Source("h264-1080p-gop50", "h264", 1920, 1080, 25, 50, 4000),
        Source("h264-1080p-gop25", "h264", 1920, 1080, 25, 25, 4000),
        Source("h264-720p-gop25", "h264", 1280, 720, 25, 25, 2000),
        Source("h265-1080p-gop50", "h265", 1920, 1080, 25, 50, 3000),
    )
}


@dataclass
class Sample:
    cpu_s_per_min: float
    out_fps: float
    memory_mb: float


def measure(command: SamplerCommand, duration_s: float) -> Sample:
    """Run ``command`` (one ffmpeg, or ``receiver | decoder``), drain the decoder's stdout, and
    measure CPU (all its processes together) and output rate after the warm-up."""
    procs: list[subprocess.Popen[bytes]] = []
    if command.receiver is None:
        procs.append(subprocess.Popen(command.decoder, stdout=subprocess.PIPE, stderr=DEVNULL))
    else:
        receiver = subprocess.Popen(command.receiver, stdout=subprocess.PIPE, stderr=DEVNULL)
        procs.append(receiver)
        procs.append(
            subprocess.Popen(
                command.decoder, stdin=receiver.stdout, stdout=subprocess.PIPE, stderr=DEVNULL
            )
        )
        assert receiver.stdout is not None
        receiver.stdout.close()  # the decoder holds the read end
    output = procs[-1].stdout
    assert output is not None
    ends = [0]

    def drain() -> None:
        while chunk := os.read(output.fileno(), 1 << 16):
            ends[0] += chunk.count(b"\xff\xd9")

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        watched = [psutil.Process(proc.pid) for proc in procs]
        time.sleep(WARMUP_S)  # benchmark pacing, not synchronisation
        before, frames_before, started = _cpu_s(watched), ends[0], time.monotonic()
        time.sleep(duration_s)
        after, frames_after, elapsed = _cpu_s(watched), ends[0], time.monotonic() - started
        memory = sum(_memory_bytes(ps) for ps in watched)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
    return Sample(
        cpu_s_per_min=(after - before) / elapsed * SECONDS_PER_MINUTE,
        out_fps=(frames_after - frames_before) / elapsed,
        memory_mb=memory / 1e6,
    )


def _cpu_s(processes: list[psutil.Process]) -> float:
    return sum(t.user + t.system for t in (ps.cpu_times() for ps in processes))


def _memory_bytes(ps: psutil.Process) -> int:
    """PSS (shared pages split between their users), else RSS."""
    try:
        return int(ps.memory_full_info().pss)
    except (psutil.AccessDenied, AttributeError):
        return int(ps.memory_info().rss)


def single(argv: list[str]) -> SamplerCommand:
    return SamplerCommand(argv)


def baseline_argv(ffmpeg: str, url: str, fps: float) -> list[str]:
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
        "-rtsp_transport", "tcp", "-i", url,
        "-an", "-vf", f"fps={fps:g},scale={OUT_WIDTH}:-2",
        "-c:v", "mjpeg", "-q:v", "5", "-f", "image2pipe", "pipe:1",
    ]  # fmt: skip


def ours_command(ffmpeg: str, url: str, fps: float, source: Source) -> SamplerCommand:
    """The kernel's sampler command once it knows the stream (keyframe interval, size)."""
    spec = sampler_spec(
        SamplerGrant(SamplerKey("bench", "sub"), fps, OUT_WIDTH),
        StreamUrl(url),
        decode_mode=DecodeMode.AUTO,
        keyframe_interval_s=source.keyframe_interval_s,
        frame_pixels=source.width * source.height,
        packet_drop=True,
    )
    log = logs_keyframes(spec, stream_known=True)
    return build_argv(ffmpeg, spec, DEFAULT_IO_TIMEOUT_S, log_keyframes=log)


def receive_argv(ffmpeg: str, url: str) -> list[str]:
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
        "-rtsp_transport", "tcp", "-i", url, "-c", "copy", "-f", "null", "-",
    ]  # fmt: skip


def keyframe_cost_s(ffmpeg: str, url: str, workdir: Path) -> tuple[float, int]:
    """CPU seconds to decode, scale and encode one keyframe, from a recording of the stream.

    The recording holds only the keyframes. Decoding them to JPEGs (one per keyframe: no frame
    is duplicated) is measured against reading and stream-copying the same file, so process
    start and demuxing (counted in the receive cost) are not counted twice.
    """
    recording = workdir / "keyframes.nut"
    subprocess.run(
        [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp",
         "-i", url, "-t", f"{RECORD_S:g}", "-map", "0:v:0", "-c", "copy",
         "-bsf:v", "noise=drop=not(key)", "-y", str(recording)],
        check=True,
    )  # fmt: skip
    head = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1",
            "-i", str(recording)]  # fmt: skip
    decode = [*head, "-vf", scale_filter(OUT_WIDTH),
              "-fps_mode", "passthrough", *jpeg_output_args(JPEG_QSCALE)]  # fmt: skip
    copy = [*head, "-c", "copy", "-f", "null", "-"]
    decode_s, out = _child_cpu_s(decode)
    copy_s, _ = _child_cpu_s(copy)
    keyframes = out.count(b"\xff\xd9")
    return max(0.0, decode_s - copy_s) / max(keyframes, 1), keyframes


def _child_cpu_s(argv: list[str]) -> tuple[float, bytes]:
    """The median CPU time of a few runs of ``argv``, and its stdout."""
    times, out = [], b""
    for _ in range(KEYFRAME_COST_RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(argv, capture_output=True, check=True).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return statistics.median(times), out


def run_source(
    source: Source, fps_levels: list[float], duration_s: float, repeats: int
) -> dict[str, Any]:
    ffmpeg = discover().ffmpeg
    camera = source.camera()
    camera.start()
    try:
        url = camera.url
        with tempfile.TemporaryDirectory() as work:
            per_keyframe_s, recorded = keyframe_cost_s(ffmpeg, url, Path(work))
        receive = [measure(single(receive_argv(ffmpeg, url)), duration_s) for _ in range(repeats)]
        receive_cpm = statistics.median(s.cpu_s_per_min for s in receive)
        keyframe_rate = 1 / source.keyframe_interval_s
        rows = []
        for fps in fps_levels:
            base, ours = [], []
            for _ in range(repeats):  # alternate, so drift of the machine hits both alike
                base.append(measure(single(baseline_argv(ffmpeg, url, fps)), duration_s))
                ours.append(measure(ours_command(ffmpeg, url, fps, source), duration_s))
            mode = effective_mode(DecodeMode.AUTO, fps, source.keyframe_interval_s)
            # The limit is defined where keyframes suffice; above, every frame must be decoded.
            limit = (
                receive_cpm + min(fps, keyframe_rate) * SECONDS_PER_MINUTE * per_keyframe_s
                if mode is DecodeMode.KEYFRAMES
                else None
            )
            row: dict[str, Any] = {
                "fps": fps,
                "mode": mode.value,
                "baseline_cpu_s_per_min": statistics.median(s.cpu_s_per_min for s in base),
                "ours_cpu_s_per_min": statistics.median(s.cpu_s_per_min for s in ours),
                "limit_cpu_s_per_min": limit,
                "baseline_out_fps": statistics.median(s.out_fps for s in base),
                "ours_out_fps": statistics.median(s.out_fps for s in ours),
                "baseline_memory_mb": statistics.median(s.memory_mb for s in base),
                "ours_memory_mb": statistics.median(s.memory_mb for s in ours),
            }
            row["baseline_over_ours"] = row["baseline_cpu_s_per_min"] / row["ours_cpu_s_per_min"]
            row["ours_over_limit"] = None if limit is None else row["ours_cpu_s_per_min"] / limit
            rows.append(row)
            print(_format_row(source.name, row), flush=True)
        return {
            "source": asdict(source),
            "receive_cpu_s_per_min": receive_cpm,
            "per_keyframe_cpu_ms": per_keyframe_s * 1000,
            "keyframes_recorded": recorded,
            "rows": rows,
        }
    finally:
        camera.stop()


def _format_row(name: str, row: dict[str, Any]) -> str:
    return (
        f"{name:18s} {row['fps']:>4g} fps {row['mode']:>9s} | baseline "
        f"{row['baseline_cpu_s_per_min']:6.2f} | ours {row['ours_cpu_s_per_min']:5.2f} | limit "
        f"{_opt(row['limit_cpu_s_per_min'], '5.2f')} | base/ours "
        f"{row['baseline_over_ours']:5.1f}x | ours/limit {_opt(row['ours_over_limit'], '4.2f')} | "
        f"out {row['ours_out_fps']:.2f} fps | "
        f"mem {row['baseline_memory_mb']:.0f}/{row['ours_memory_mb']:.0f} MB"
    )


def _markdown_row(name: str, row: dict[str, Any]) -> str:
    cells = [
        name, f"{row['fps']:g}", row["mode"], f"{row['baseline_cpu_s_per_min']:.2f}",
        f"{row['ours_cpu_s_per_min']:.2f}", _opt(row["limit_cpu_s_per_min"], ".2f"),
        f"{row['baseline_over_ours']:.2f}x", _opt(row["ours_over_limit"], ".2f", "x"),
        f"{row['ours_out_fps']:.2f}",
        f"{row['baseline_memory_mb']:.0f} / {row['ours_memory_mb']:.0f}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _opt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated names")
    parser.add_argument("--fps", default=",".join(f"{f:g}" for f in FPS_LEVELS))
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured per run")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    fps_levels = [float(f) for f in args.fps.split(",")]
    print("CPU-seconds per minute of stream (lower is better); memory PSS baseline/ours")
    results = [
        run_source(SOURCES[name], fps_levels, args.duration, args.repeats)
        for name in args.sources.split(",")
    ]
    print("\n| source | out fps | mode | baseline | ours | limit | baseline / ours | "
          "ours / limit | ours out fps | PSS baseline / ours (MB) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        for row in result["rows"]:
            print(_markdown_row(result["source"]["name"], row))
    path = write_result("decode_cpu", {"duration_s": args.duration, "repeats": args.repeats,
                                       "sources": results})  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
