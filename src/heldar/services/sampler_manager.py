"""The sampler manager: turns enabled AI tasks into running samplers (SPEC §5 Reconcile).

``plan`` is pure: tasks + cameras + budget -> the desired sampler specs and states.
``SamplerManager.reconcile`` carries a plan out: it stops samplers that disappeared or
whose (url, fps, width, mode) changed, starts the new ones, and leaves every other sampler
untouched. Reconciles are serialised by one lock. A removed sampler's frame leaves the
store before its process is stopped, so a frame is never served for a sampler that no
longer exists. Every sampler task is a child of the manager's TaskGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from heldar.clock import Clock
from heldar.config import DecodeMode, KeyframeReceiver
from heldar.media import ffmpeg
from heldar.media.feed import FeedHub
from heldar.media.keyframes import FrameSize
from heldar.media.urls import Profile, StreamUrl
from heldar.services.ai_tasks import AiTask, AiTaskRegistry
from heldar.services.budget import SamplerGrant, SamplerKey, SamplerRequest, allocate_budget
from heldar.services.cameras import Camera, CameraRegistry
from heldar.services.events import EventLog
from heldar.services.frames import FrameStore
from heldar.services.sampler import Sampler, SamplerSpec, SamplerState

log = logging.getLogger(__name__)

# Safety pass: picks up changes made outside the API and heals anything missed.
SAFETY_RECONCILE_INTERVAL_S = 30.0
# Keyframe timestamps jitter a little: a grant up to 5 % over the keyframe rate still takes
# keyframes (it gets the keyframe rate, a hair under its grant), rather than a full decode.
KEYFRAME_RATE_SLACK = 1.05
MAX_CAMERAS = 100_000
# Full decode up to this frame size stays on one decoder thread (1920x1088 coded 1080p).
SINGLE_THREAD_MAX_PIXELS = 1920 * 1088


@dataclass(frozen=True, slots=True)
class PlannedSampler:
    key: SamplerKey
    requested_fps: float
    requested_width: int
    grant: SamplerGrant
    spec: SamplerSpec | None  # None when budget_exhausted


def effective_mode(
    setting: DecodeMode, granted_fps: float, keyframe_interval_s: float | None
) -> DecodeMode:
    """``auto`` -> KEYFRAMES while the grant is at or below the keyframe rate, else ALL.

    An unknown interval decodes everything: frames at the granted rate from the start, and the
    interval is learned meanwhile (full decode reports keyframes too), then the sampler moves to
    keyframes if they suffice.
    """
    if setting is not DecodeMode.AUTO:
        return setting
    if keyframe_interval_s is None:
        return DecodeMode.ALL
    keyframe_rate = 1.0 / keyframe_interval_s
    return (
        DecodeMode.KEYFRAMES
        if granted_fps <= keyframe_rate * KEYFRAME_RATE_SLACK
        else DecodeMode.ALL
    )


def gop_prefix(setting: DecodeMode, mode: DecodeMode, url: StreamUrl | None) -> bool:
    """Whether a full decode skips the needless end of each GOP (``gop_prefix_filter``).

    Only in ``auto``: ``all`` set by hand decodes every frame, as it says. Only for RTSP, whose
    90 kHz timestamps the receiver's filter reads exactly (see ``keyframe_drop_filter``).
    """
    rtsp = url is not None and url.is_rtsp
    return setting is DecodeMode.AUTO and mode is DecodeMode.ALL and rtsp


def decode_threads(mode: DecodeMode, frame_pixels: int | None) -> int:
    """Decoder threads for a sampler: 1, or 0 for ffmpeg's own choice.

    Full decode of a stream up to 1080p runs on one thread: that costs 10-15 % less CPU than
    ffmpeg's frame threading and adds no frames of latency, and one core decodes 1080p several
    times faster than real time. A larger stream gets ffmpeg's threading, so it keeps up. The
    size is learned from the stream; until then, one thread (AI samplers mostly read sub
    streams). Keyframe decoding always runs on one thread.
    """
    if mode is DecodeMode.KEYFRAMES or frame_pixels is None:
        return 1
    return 1 if frame_pixels <= SINGLE_THREAD_MAX_PIXELS else 0


def sampler_spec(
    grant: SamplerGrant,
    url: StreamUrl | None,
    *,
    decode_mode: DecodeMode,
    keyframe_interval_s: float | None,
    frame_pixels: int | None,
    packet_drop: bool,
) -> SamplerSpec:
    """How one granted sampler decodes: the mode, its threads, whether it skips GOP ends."""
    assert grant.fps is not None
    mode = effective_mode(decode_mode, grant.fps, keyframe_interval_s)
    threads = decode_threads(mode, frame_pixels)
    skip_tails = packet_drop and gop_prefix(decode_mode, mode, url)
    return SamplerSpec(grant.key, url, grant.fps, grant.width, mode, threads, skip_tails)


def plan(
    tasks: Iterable[AiTask],
    cameras: dict[str, Camera],
    *,
    ai_enabled: bool,
    budget_fps: float,
    max_samplers: int,
    decode_mode: DecodeMode = DecodeMode.AUTO,
    keyframe_intervals: Mapping[SamplerKey, float] | None = None,
    frame_pixels: Mapping[SamplerKey, int] | None = None,
    packet_drop: bool = True,
) -> dict[SamplerKey, PlannedSampler]:
    """The desired samplers: one per (camera, profile) of an enabled camera with tasks.

    ``packet_drop``: whether ffmpeg can drop packets in a bitstream filter, which receivers
    need (see :func:`~.sampler.build_argv`)."""
    if not ai_enabled:
        return {}
    wanted: dict[SamplerKey, tuple[float, int]] = {}
    for task in tasks:
        camera = cameras.get(task.camera_id)
        if camera is None or not camera.enabled or not task.enabled:
            continue
        key = SamplerKey(task.camera_id, task.stream_profile.value)
        fps, width = wanted.get(key, (0.0, 0))
        wanted[key] = (max(fps, task.fps), max(width, task.width))
    requests = [
        SamplerRequest(key=key, priority=cameras[key.camera_id].priority, fps=fps, width=width)
        for key, (fps, width) in wanted.items()
    ]
    grants = allocate_budget(requests, budget_fps, max_samplers)
    planned: dict[SamplerKey, PlannedSampler] = {}
    for key, grant in grants.items():
        fps, width = wanted[key]
        spec = None
        if grant.fps is not None:
            spec = sampler_spec(
                grant,
                cameras[key.camera_id].url_for(Profile(key.profile)),
                decode_mode=decode_mode,
                keyframe_interval_s=(keyframe_intervals or {}).get(key),
                frame_pixels=(frame_pixels or {}).get(key),
                packet_drop=packet_drop,
            )
        planned[key] = PlannedSampler(key, fps, width, grant, spec)
    return planned


@dataclass(frozen=True, slots=True)
class SamplerStatus:
    """A planned sampler and, unless the budget leaves it out, its running instance."""

    planned: PlannedSampler
    sampler: Sampler | None

    @property
    def state(self) -> SamplerState:
        return self.sampler.state if self.sampler else SamplerState.BUDGET_EXHAUSTED


@dataclass
class _Running:
    sampler: Sampler
    task: asyncio.Task[None]


class SamplerManager:
    def __init__(
        self,
        *,
        cameras: CameraRegistry,
        tasks: AiTaskRegistry,
        frames: FrameStore,
        events: EventLog,
        clock: Clock,
        ffmpeg_bin: str,
        ai_enabled: bool,
        budget_fps: float,
        max_samplers: int,
        decode_mode: DecodeMode = DecodeMode.AUTO,
        packet_drop: bool = True,
        keyframe_receiver: KeyframeReceiver = KeyframeReceiver.KERNEL,
    ) -> None:
        """``packet_drop``: whether ffmpeg can drop packets in a bitstream filter
        (:func:`heldar.media.ffmpeg.probe_packet_drop`; see :func:`~.sampler.build_argv`).
        ``keyframe_receiver``: who receives RTSP for keyframe samplers (:mod:`heldar.media.feed`).
        """
        self._feeds = (
            FeedHub(ffmpeg.DEFAULT_IO_TIMEOUT_S)
            if keyframe_receiver is KeyframeReceiver.KERNEL
            else None
        )
        self._decode_mode = decode_mode
        self._packet_drop = packet_drop
        # Learned per (camera, profile) by its samplers; kept across restarts of the sampler.
        self._keyframe_intervals: dict[SamplerKey, float] = {}
        self._frame_sizes: dict[SamplerKey, FrameSize] = {}
        self._replan = asyncio.Event()
        self._cameras = cameras
        self._tasks = tasks
        self._frames = frames
        self._events = events
        self._clock = clock
        self._ffmpeg_bin = ffmpeg_bin
        self._ai_enabled = ai_enabled
        self._budget_fps = budget_fps
        self._max_samplers = max_samplers
        self._lock = asyncio.Lock()
        self._group: asyncio.TaskGroup | None = None
        self._running: dict[SamplerKey, _Running] = {}
        self._plan: dict[SamplerKey, PlannedSampler] = {}

    async def run(self) -> None:
        """Own the sampler tasks until cancelled; reconcile now and then periodically."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                if self._feeds is not None:
                    group.create_task(self._feeds.run(), name="keyframe feeds")
                while True:
                    self._replan.clear()
                    await self.reconcile()
                    # A learned keyframe interval may change a sampler's mode: re-plan at once.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(SAFETY_RECONCILE_INTERVAL_S):
                            await self._replan.wait()
        finally:
            self._group = None
            await self._stop_all()

    async def on_change(self, _camera_id: str) -> None:
        """Registry listener: any camera or task change recomputes the plan at once."""
        if self._group is not None:
            await self.reconcile()

    async def reconcile(self) -> None:
        async with self._lock:
            group = self._group
            if group is None:
                return
            cameras = {c.id: c for c in await self._cameras.list(limit=MAX_CAMERAS)}
            desired = plan(
                await self._tasks.list_enabled(),
                cameras,
                ai_enabled=self._ai_enabled,
                budget_fps=self._budget_fps,
                max_samplers=self._max_samplers,
                decode_mode=self._decode_mode,
                keyframe_intervals=self._keyframe_intervals,
                frame_pixels={key: size.pixels for key, size in self._frame_sizes.items()},
                packet_drop=self._packet_drop,
            )
            self._plan = desired
            for key in list(self._running):
                target = desired.get(key)
                if target is None or target.spec != self._running[key].sampler.spec:
                    await self._stop(key, remove_frame=target is None or target.spec is None)
            for key, target in desired.items():
                if target.spec is not None and key not in self._running:
                    self._start(group, target.spec)

    def _start(self, group: asyncio.TaskGroup, spec: SamplerSpec) -> None:
        sampler = Sampler(
            spec,
            ffmpeg_bin=self._ffmpeg_bin,
            frames=self._frames,
            events=self._events,
            clock=self._clock,
            packet_drop=self._packet_drop,
            keyframe_interval_s=self._keyframe_intervals.get(spec.key),
            frame_size=self._frame_sizes.get(spec.key),
            on_keyframe_interval=self._learned,
            on_frame_size=self._learned_size,
            feeds=self._feeds,
        )
        name = f"{spec.key.camera_id}/{spec.key.profile}"
        task = group.create_task(sampler.run(), name=f"sampler {name}")
        self._running[spec.key] = _Running(sampler, task)
        log.info(
            "sampler %s started at %g fps, width %d, decoding %s",
            name,
            spec.fps,
            spec.width,
            "keyframes only" if spec.mode is DecodeMode.KEYFRAMES else "every frame",
        )

    def _learned(self, key: SamplerKey, keyframe_interval_s: float) -> None:
        """A sampler learned its stream's keyframe interval: re-plan if the mode changes."""
        self._keyframe_intervals[key] = keyframe_interval_s
        planned = self._plan.get(key)
        if planned is None or planned.spec is None:
            return
        wanted = effective_mode(self._decode_mode, planned.spec.fps, keyframe_interval_s)
        if wanted is not planned.spec.mode:
            log.info(
                "sampler %s/%s: keyframes every %.2f s; switching to %s decoding",
                key.camera_id,
                key.profile,
                keyframe_interval_s,
                "keyframe-only" if wanted is DecodeMode.KEYFRAMES else "full",
            )
            self._replan.set()

    def _learned_size(self, key: SamplerKey, size: FrameSize) -> None:
        """A sampler learned its stream's frame size: re-plan if the decoder threads change."""
        self._frame_sizes[key] = size
        planned = self._plan.get(key)
        if planned is None or planned.spec is None:
            return
        if decode_threads(planned.spec.mode, size.pixels) != planned.spec.decode_threads:
            log.info(
                "sampler %s/%s: the stream is %dx%d; restarting with ffmpeg's decoder threading",
                key.camera_id,
                key.profile,
                size.width,
                size.height,
            )
            self._replan.set()

    def keyframe_interval_s(self, key: SamplerKey) -> float | None:
        return self._keyframe_intervals.get(key)

    async def _stop(self, key: SamplerKey, *, remove_frame: bool) -> None:
        running = self._running.pop(key)
        # Cancel before the first await: were this call cancelled later, the task is still
        # on its way out instead of running on outside the running set.
        running.task.cancel()
        if remove_frame:
            await self._frames.remove(key.camera_id, key.profile)
        await asyncio.gather(running.task, return_exceptions=True)
        if remove_frame:
            # A publish that raced the cancellation must not leave a file behind.
            await self._frames.remove(key.camera_id, key.profile)
        log.info("sampler %s/%s stopped", key.camera_id, key.profile)

    async def _stop_all(self) -> None:
        for key in list(self._running):
            await self._stop(key, remove_frame=True)

    def status(self) -> list[SamplerStatus]:
        """Every planned sampler with its running instance, in rank order."""
        return [self._status(planned) for planned in self._plan.values()]

    def status_of(self, key: SamplerKey) -> SamplerStatus | None:
        """The status of one (camera, profile); None when no sampler is planned for it."""
        planned = self._plan.get(key)
        return None if planned is None else self._status(planned)

    def _status(self, planned: PlannedSampler) -> SamplerStatus:
        running = self._running.get(planned.key)
        return SamplerStatus(planned, running.sampler if running else None)
