"""Kernel overhead: CPU of the kernel process itself per frame its samplers deliver.

The decoders are ffmpeg children and are measured by ``benchmarks.decode_cpu``; this measures what
the Python process adds on top: reading each decoder's stdout, splitting it into JPEGs, writing
``latest_<profile>.jpg`` atomically, waking readers, serving the API. CPU is the kernel process's
own user + system time (psutil on the ``python -m heldar serve`` pid; its threads included, its
ffmpeg children not), over a window on the monotonic clock.

One kernel, ``--cameras`` cameras on one RTSP test source (720p H.264, keyframe every second by
default; all cameras read the same mount), three phases of ``--duration`` seconds each:

1. **idle**: the cameras exist, no AI task: the kernel's floor (event loop, safety reconciles);
2. **sampling**: every camera has an AI task at ``--fps`` and ``--width``; measured once every
   sampler is settled (sampling in the decode mode it keeps);
3. **sampling + client**: as 2, while one client thread per camera pulls every new frame over
   HTTP as a worker does (``GET /cameras/{id}/frame`` long-polling with ``If-None-Match``).
   ``--no-client`` leaves this phase out.

Frames delivered are the sum over samplers of ``frames_total`` (``GET /api/v1/ai/samplers``) at the
window's end minus at its start; a sampler that restarted in the window (another pid) counts its
new run only and is reported. Per phase the table shows kernel CPU % of one core, CPU-ms per
delivered frame, and the same above the idle floor (what one more frame costs). The decoders' CPU
(the kernel's children alive through the window) is shown beside it for scale. Usage::

    .venv/bin/python -m benchmarks.kernel_overhead [--cameras 16] [--fps 1] [--duration 30]
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import psutil

from benchmarks.kernel import SOURCES, BenchKernel, kernel_session
from benchmarks.machine import write_result

# Long-poll length of the frame-pulling client; a new frame ends it early.
CLIENT_WAIT_S = 5.0
CLIENT_TIMEOUT_S = CLIENT_WAIT_S + 10.0
CLIENT_STOP_S = CLIENT_TIMEOUT_S
MS_PER_S = 1000.0
PERCENT = 100.0
TABLE_HEADER = (
    "| phase | frames/s | pulled/s | kernel CPU % | CPU-ms/frame | above idle | decoders CPU % |"
)


@dataclass
class Phase:
    name: str
    wall_s: float
    kernel_cpu_s: float
    decoders_cpu_s: float
    frames_delivered: int
    frames_pulled: int
    samplers_restarted: int

    @property
    def kernel_cpu_percent(self) -> float:
        return self.kernel_cpu_s / self.wall_s * PERCENT

    def cpu_ms_per_frame(self, floor_cpu_per_s: float = 0.0) -> float | None:
        if self.frames_delivered == 0:
            return None
        above_floor_s = self.kernel_cpu_s - floor_cpu_per_s * self.wall_s
        return above_floor_s * MS_PER_S / self.frames_delivered


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def children_cpu(process: psutil.Process) -> dict[int, float]:
    found = {}
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            found[child.pid] = cpu_s(child)
    return found


def delivered(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> tuple[int, int]:
    """Frames delivered between two ``samplers()`` readings, and how many samplers restarted."""
    frames = restarted = 0
    for camera_id, now in after.items():
        then = before.get(camera_id)
        if then is not None and then["pid"] == now["pid"] and now["pid"] is not None:
            frames += now["frames_total"] - then["frames_total"]
        else:
            frames += now["frames_total"]
            restarted += then is not None
    return frames, restarted


@contextlib.contextmanager
def frame_pullers(kernel: BenchKernel, camera_ids: list[str]) -> Iterator[list[int]]:
    """One thread per camera long-polling its frames; yields the per-thread counts of 200s."""
    stop = threading.Event()
    counts = [0] * len(camera_ids)

    def pull(index: int, camera_id: str) -> None:
        etag: str | None = None
        with httpx.Client(base_url=kernel.api.base_url, timeout=CLIENT_TIMEOUT_S) as client:
            while not stop.is_set():
                headers = {"If-None-Match": etag} if etag else {}
                response = client.get(
                    f"/cameras/{camera_id}/frame",
                    params={"wait": CLIENT_WAIT_S},
                    headers=headers,
                )
                if response.status_code == 200:
                    counts[index] += 1
                    etag = response.headers["etag"]
                elif response.status_code != 304:
                    raise RuntimeError(f"frame of {camera_id}: {response.status_code}")

    threads = [
        threading.Thread(target=pull, args=(i, c), daemon=True) for i, c in enumerate(camera_ids)
    ]
    for thread in threads:
        thread.start()
    try:
        yield counts
    finally:
        stop.set()
        for thread in threads:
            thread.join(CLIENT_STOP_S)


def measure(kernel: BenchKernel, name: str, duration_s: float, pulled: list[int]) -> Phase:
    process = psutil.Process(kernel.pid)
    samplers_before = kernel.samplers()
    children_before = children_cpu(process)
    pulled_before = sum(pulled)
    cpu_before, started = cpu_s(process), time.monotonic()
    time.sleep(duration_s)  # the measured window
    cpu_after, wall_s = cpu_s(process), time.monotonic() - started
    pulled_after = sum(pulled)
    children_after = children_cpu(process)
    frames, restarted = delivered(samplers_before, kernel.samplers())
    decoders = sum(
        cpu - children_before[pid] for pid, cpu in children_after.items() if pid in children_before
    )
    phase = Phase(
        name=name,
        wall_s=wall_s,
        kernel_cpu_s=cpu_after - cpu_before,
        decoders_cpu_s=decoders,
        frames_delivered=frames,
        frames_pulled=pulled_after - pulled_before,
        samplers_restarted=restarted,
    )
    print(f"{name}: {phase.kernel_cpu_percent:.1f} % kernel CPU, {frames} frames", flush=True)
    return phase


def run(args: argparse.Namespace) -> list[Phase]:
    env = {"HELDAR_AI_MAX_TOTAL_FPS": str(max(40.0, args.cameras * args.fps))}
    with kernel_session(SOURCES[args.source], env=env) as kernel:
        camera_ids = kernel.add_cameras(args.cameras)
        phases = [measure(kernel, "idle", args.duration, [])]
        kernel.add_ai_tasks(camera_ids, fps=args.fps, width=args.width)
        kernel.wait_sampling(camera_ids)
        phases.append(measure(kernel, "sampling", args.duration, []))
        if args.client:
            with frame_pullers(kernel, camera_ids) as pulled:
                phases.append(measure(kernel, "sampling + client", args.duration, pulled))
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="h264-720p-gop25", choices=sorted(SOURCES))
    parser.add_argument("--cameras", type=int, default=16)
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--no-client", dest="client", action="store_false")
    args = parser.parse_args()
    phases = run(args)
    floor_per_s = phases[0].kernel_cpu_s / phases[0].wall_s
    print(
        f"kernel CPU, {args.cameras} cameras at {args.fps:g} fps, {args.width} wide, "
        f"{args.source}, {args.duration:g} s per phase"
    )
    print(TABLE_HEADER)
    print("|---|---|---|---|---|---|---|")
    rows = []
    for phase in phases:
        per_frame = phase.cpu_ms_per_frame()
        marginal = phase.cpu_ms_per_frame(floor_per_s)
        row = {
            **asdict(phase),
            "kernel_cpu_percent": phase.kernel_cpu_percent,
            "kernel_cpu_ms_per_frame": per_frame,
            "kernel_cpu_ms_per_frame_above_idle": marginal,
        }
        rows.append(row)
        print(
            f"| {phase.name} | {phase.frames_delivered / phase.wall_s:.1f} | "
            f"{phase.frames_pulled / phase.wall_s:.1f} | {phase.kernel_cpu_percent:.1f} | "
            f"{_ms(per_frame)} | {_ms(marginal)} | "
            f"{phase.decoders_cpu_s / phase.wall_s * PERCENT:.1f} |"
        )
        if phase.samplers_restarted:
            print(f"  ({phase.samplers_restarted} samplers restarted in this window)")
    path = write_result(
        "kernel_overhead",
        {
            "source": args.source,
            "cameras": args.cameras,
            "fps": args.fps,
            "width": args.width,
            "duration_s": args.duration,
            "phases": rows,
        },
    )
    print(f"wrote {path}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
