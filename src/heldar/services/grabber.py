"""Taking a camera's picture now (SPEC §6 "Live snapshot"), for the API and the scheduler.

:meth:`Grabber.take` answers, in this order:

1. a running sampler's frame of the camera younger than ``max_age_ms``: no decode at all (the
   widest such frame, so a ``main`` sampler beats a ``sub`` one);
2. else one ffmpeg grab: the ``sub`` stream first (cheaper to decode), then the record stream,
   within ``GRAB_TIMEOUT_S`` in all, holding a media-job slot while ffmpeg runs.

Invariants:

* **One grab per camera at a time.** Concurrent callers for one camera share the grab in flight
  (and its outcome), so a burst of requests costs one ffmpeg.
* **Owned tasks.** Grabs run in this service's task group (:meth:`run`), shielded from their
  callers: a caller that goes away does not cancel the grab the others wait for.
* **Masked errors.** Failures are :class:`Unavailable` with the masked URL and ffmpeg's reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager

from heldar.clock import Clock
from heldar.errors import Conflict, KernelError, Unavailable
from heldar.media.grab import grab_frame
from heldar.media.urls import Profile, StreamUrl
from heldar.services.cameras import Camera, CameraRegistry
from heldar.services.frames import Frame, FrameStore
from heldar.services.media_jobs import MediaJobs
from heldar.services.snapshots import Shot, SnapshotSource

log = logging.getLogger(__name__)

# SPEC §6: a live grab gives up after 20 s.
GRAB_TIMEOUT_S = 20.0
# When a second URL is left to try, the first may use at most this much of the limit, so a
# hanging sub stream still leaves the record stream time to answer.
FIRST_URL_MAX_S = 12.0
# SPEC §6: a sampler frame younger than this (query `max_age_ms`) is served as is.
DEFAULT_MAX_AGE_MS = 2000
_MS_PER_S = 1000

SlotFactory = Callable[[str], AbstractAsyncContextManager[None]]


class Grabber:
    def __init__(
        self,
        *,
        cameras: CameraRegistry,
        frames: FrameStore,
        media_jobs: MediaJobs,
        clock: Clock,
        ffmpeg_bin: str,
        grab_timeout_s: float = GRAB_TIMEOUT_S,
    ) -> None:
        self._cameras = cameras
        self._frames = frames
        self._jobs = media_jobs
        self._clock = clock
        self._ffmpeg_bin = ffmpeg_bin
        self._grab_timeout_s = grab_timeout_s
        self._group: asyncio.TaskGroup | None = None
        self._inflight: dict[str, asyncio.Task[Shot | KernelError]] = {}
        self.grabs_total = 0

    async def run(self) -> None:
        """Own the grab tasks until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                await asyncio.Event().wait()
        finally:
            self._group = None

    def fresh_frame(self, camera_id: str, max_age_ms: float) -> Shot | None:
        """The widest sampler frame of the camera younger than ``max_age_ms``, if any."""
        now = self._clock.monotonic()
        best: Frame | None = None
        for profile in Profile:
            frame = self._frames.latest(camera_id, profile.value)
            if frame is None or (now - frame.captured_monotonic) * _MS_PER_S > max_age_ms:
                continue
            if best is None or (frame.width, frame.captured_monotonic) > (
                best.width,
                best.captured_monotonic,
            ):
                best = frame
        if best is None:
            return None
        return Shot(best.data, best.width, best.height, best.captured_at, SnapshotSource.SAMPLER)

    async def take(
        self, camera_id: str, *, max_age_ms: float, slot_wait_s: float | None = None
    ) -> Shot:
        """A sampler frame younger than ``max_age_ms``, else a (shared) grab.

        ``slot_wait_s=None`` (API requests): Busy at once when every media-job slot is taken;
        else wait up to that long for one (scheduled fires).
        """
        camera = await self._cameras.get(camera_id)
        if not camera.enabled:
            raise Conflict(f"camera '{camera_id}' is disabled; enable it to take snapshots")
        shot = self.fresh_frame(camera_id, max_age_ms)
        if shot is not None:
            return shot
        task = self._inflight.get(camera_id)
        if task is None:
            task = self._start(camera, slot_wait_s)
        outcome = await asyncio.shield(task)
        if isinstance(outcome, KernelError):
            raise outcome
        return outcome

    def _start(self, camera: Camera, slot_wait_s: float | None) -> asyncio.Task[Shot | KernelError]:
        group = self._group
        if group is None:
            raise Unavailable("the kernel is shutting down; no snapshot can be taken")

        def slot(what: str) -> AbstractAsyncContextManager[None]:
            if slot_wait_s is None:
                return self._jobs.slot_now(what)
            return self._jobs.slot(what, slot_wait_s)

        task = group.create_task(self._grab(camera, slot), name=f"grab {camera.id}")
        self._inflight[camera.id] = task

        def forget(done: asyncio.Task[Shot | KernelError]) -> None:
            if self._inflight.get(camera.id) is done:
                del self._inflight[camera.id]

        task.add_done_callback(forget)
        return task

    async def _grab(self, camera: Camera, slot: SlotFactory) -> Shot | KernelError:
        """Never raises (a failure must not end the task group): returns the error instead."""
        try:
            async with slot(f"snapshot of camera '{camera.id}'"):
                return await self._grab_urls(camera)
        except KernelError as exc:
            return exc
        except Exception as exc:
            log.exception("grab of camera %s: unexpected failure", camera.id)
            return Unavailable(f"snapshot of camera '{camera.id}' failed: internal error ({exc!r})")

    async def _grab_urls(self, camera: Camera) -> Shot:
        self.grabs_total += 1
        urls = list(_grab_order(camera))
        if not urls:
            raise Unavailable(f"camera '{camera.id}' has no usable stream URL")
        deadline = self._clock.monotonic() + self._grab_timeout_s
        reasons = []
        for index, url in enumerate(urls):
            remaining_s = deadline - self._clock.monotonic()
            if remaining_s <= 0:
                break
            if index < len(urls) - 1:
                remaining_s = min(remaining_s, FIRST_URL_MAX_S)
            try:
                grabbed = await grab_frame(
                    self._ffmpeg_bin, url, timeout_s=remaining_s, now=self._clock.now
                )
            except Unavailable as exc:
                reasons.append(exc.message)
                continue
            return Shot(
                grabbed.data,
                grabbed.width,
                grabbed.height,
                grabbed.captured_at,
                SnapshotSource.GRAB,
            )
        reasons = reasons or [f"no frame within {self._grab_timeout_s:g} s"]
        raise Unavailable(f"snapshot of camera '{camera.id}' failed: " + "; ".join(reasons))


def _grab_order(camera: Camera) -> Iterator[StreamUrl]:
    """The sub stream, then the record stream; each distinct URL once."""
    seen: set[str] = set()
    for url in (camera.own_url(Profile.SUB), camera.url_for(camera.record_stream)):
        if url is not None and url.reveal() not in seen:
            seen.add(url.reveal())
            yield url
