"""Shared setup for kernel-level benchmarks: a real camera, a real kernel, cameras via the API.

:func:`kernel_session` starts the RTSP test camera of SPEC §8 (one mount, with a keeper reader so
the shared pipeline runs steadily like a real camera) and a real kernel process
(``python -m heldar serve``, :class:`~tests.support.kernel_server.KernelServer`) in a temporary
data directory, with the ``HELDAR_*`` settings given, and yields a :class:`BenchKernel`. Both are
stopped and reaped when the block ends, also on error or Ctrl-C; on error the tail of the kernel's
log is printed.

:class:`BenchKernel` drives the kernel only through its REST API, as an operator would:

- :meth:`~BenchKernel.add_cameras` registers cameras; they all point at the one RTSP URL unless
  told otherwise (the test camera serves any number of readers from one encoder);
- :meth:`~BenchKernel.add_ai_tasks` gives each an enabled AI task, so the kernel runs a sampler;
- :meth:`~BenchKernel.wait_sampling` waits, with a deadline, until every sampler delivers frames
  in its settled decode mode (a sampler in ``auto`` restarts once when it has learned the
  stream's keyframe interval, and its ``frames_total`` starts again from zero then);
- :meth:`~BenchKernel.samplers` and :meth:`~BenchKernel.system` read the kernel's own counters.

:func:`percentile` is the one percentile rule the kernel benchmarks report with.

Usage::

    with kernel_session(SOURCES["h264-1080p-gop50"], env={"HELDAR_AI_MAX_TOTAL_FPS": "100"}) as k:
        ids = k.add_cameras(20)
        k.add_ai_tasks(ids, fps=1, width=640)
        k.wait_sampling(ids)
        before = k.samplers()
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.decode_cpu import SOURCES, Source
from heldar.config import DecodeMode
from heldar.services.sampler_manager import effective_mode
from tests.support.kernel_server import KernelServer
from tests.support.rtsp_camera import RtspTestCamera

__all__ = ["SOURCES", "BenchKernel", "Source", "kernel_session", "percentile"]

# The kernel's API answers in milliseconds; this is only a guard against a hung kernel. Creating
# one of hundreds of cameras or schedules on a loaded 2-core machine can take a second or two.
API_TIMEOUT_S = 30.0
# A sampler connects, waits for an IDR (2 s at GOP 50), learns the keyframe interval from a few
# keyframes, then may restart once in keyframe mode: about 10 s alone; many samplers starting
# together on two cores take longer.
SAMPLING_TIMEOUT_S = 90.0
# How often a deadline loop looks again at the samplers.
POLL_INTERVAL_S = 0.25
KERNEL_LOG_TAIL_CHARS = 4000
API_PREFIX = "/api/v1"


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class BenchKernel:
    """A running camera and kernel; every method talks to the kernel's REST API."""

    camera: RtspTestCamera
    server: KernelServer
    api: httpx.Client  # base URL ``http://127.0.0.1:<port>/api/v1``
    decode_mode: DecodeMode  # the kernel's HELDAR_AI_DECODE_MODE

    @property
    def camera_url(self) -> str:
        """The RTSP URL of the test camera's mount."""
        return self.camera.url

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, without the API prefix (media files live outside it)."""
        return self.server.base_url

    @property
    def pid(self) -> int:
        """The kernel process (not its ffmpeg children)."""
        assert self.server.proc is not None
        return self.server.proc.pid

    def add_cameras(self, count: int, *, prefix: str = "cam", url: str | None = None) -> list[str]:
        """Register ``count`` cameras ``<prefix>000``, ... on ``url`` (default: the test camera)."""
        ids = []
        for n in range(count):
            camera_id = f"{prefix}{n:03d}"
            body = {"id": camera_id, "name": camera_id, "main_stream_url": url or self.camera_url}
            self._expect(self.api.post("/cameras", json=body), 201)
            ids.append(camera_id)
        return ids

    def add_ai_tasks(
        self, camera_ids: Sequence[str], *, fps: float, width: int, task_type: str = "bench"
    ) -> None:
        """One enabled AI task per camera (sub profile): the kernel starts a sampler for each."""
        body = {"task_type": task_type, "fps": fps, "width": width}
        for camera_id in camera_ids:
            self._expect(self.api.post(f"/cameras/{camera_id}/ai-tasks", json=body), 201)

    def samplers(self) -> dict[str, dict[str, Any]]:
        """``GET /ai/samplers`` keyed by camera id (the benchmarks sample one profile each)."""
        return {s["camera_id"]: s for s in self._expect(self.api.get("/ai/samplers"), 200)}

    def system(self) -> dict[str, Any]:
        """``GET /system``: counts, sampler states, scheduler and media-job counters."""
        result: dict[str, Any] = self._expect(self.api.get("/system"), 200)
        return result

    def wait_sampling(
        self,
        camera_ids: Sequence[str],
        *,
        min_frames: int = 2,
        timeout_s: float = SAMPLING_TIMEOUT_S,
    ) -> dict[str, dict[str, Any]]:
        """Wait until every camera's sampler is settled; return ``samplers()`` at that moment.

        Settled: ``sampling``, at least ``min_frames`` frames from the current ffmpeg, the
        keyframe interval known, and the decode mode the one the kernel will keep for it. Raises
        RuntimeError with the laggards' states at the deadline.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            samplers = self.samplers()
            waiting = {c: samplers.get(c) for c in camera_ids if not self._settled(samplers.get(c))}
            if not waiting:
                return samplers
            if time.monotonic() >= deadline:
                shown = {
                    c: None if s is None else {k: s[k] for k in ("state", "frames_total")}
                    for c, s in list(waiting.items())[:10]
                }
                raise RuntimeError(
                    f"{len(waiting)} of {len(camera_ids)} samplers not settled within "
                    f"{timeout_s:g} s, e.g. {shown}"
                )
            time.sleep(POLL_INTERVAL_S)  # poll interval of a deadline loop

    def _settled(self, sampler: dict[str, Any] | None) -> bool:
        if sampler is None or sampler["state"] != "sampling":
            return False
        interval_s = sampler["keyframe_interval_s"]
        if sampler["frames_total"] < 1 or interval_s is None or sampler["fps"] is None:
            return False
        wanted = effective_mode(self.decode_mode, sampler["fps"], interval_s)
        return bool(sampler["decode_mode"] == wanted.value)

    @staticmethod
    def _expect(response: httpx.Response, status: int) -> Any:
        if response.status_code != status:
            raise RuntimeError(
                f"{response.request.method} {response.request.url} answered "
                f"{response.status_code}, wanted {status}: {response.text[:500]}"
            )
        return response.json()


@contextmanager
def kernel_session(
    source: Source, *, env: Mapping[str, str] | None = None
) -> Iterator[BenchKernel]:
    """A running test camera for ``source`` and a kernel with ``env``; both stopped on exit."""
    settings = dict(env or {})
    camera = source.camera()
    with tempfile.TemporaryDirectory(prefix="heldar-bench-") as work:
        server = KernelServer(Path(work) / "data", env=settings)
        try:
            camera.start()
            server.start()
            with httpx.Client(base_url=server.base_url + API_PREFIX, timeout=API_TIMEOUT_S) as api:
                mode = DecodeMode(settings.get("HELDAR_AI_DECODE_MODE") or DecodeMode.AUTO.value)
                yield BenchKernel(camera, server, api, mode)
        except Exception:
            tail = server.log[-KERNEL_LOG_TAIL_CHARS:]
            print(f"--- kernel log tail ---\n{tail}", file=sys.stderr)
            raise
        finally:
            server.stop()
            camera.stop()
