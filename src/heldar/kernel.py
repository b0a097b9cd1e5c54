"""The composition root: opens every component in order and closes them in reverse.

Task tree: ``Kernel.open`` owns one ``asyncio.TaskGroup``; long-running services start
their children in it and are stopped before the group exits. Nothing is fire-and-forget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from heldar import __version__
from heldar.clock import Clock, SystemClock
from heldar.config import Settings, unknown_variables
from heldar.db import migrate
from heldar.db.engine import create_engine
from heldar.errors import Conflict
from heldar.media import demo, ffmpeg
from heldar.media.urls import Vendor
from heldar.services.ai_tasks import AiTaskRegistry
from heldar.services.cameras import CameraCreate, CameraRegistry
from heldar.services.detections import DetectionStore
from heldar.services.events import EventLog
from heldar.services.frames import FrameStore
from heldar.services.grabber import Grabber
from heldar.services.ingest import Ingest
from heldar.services.leases import LeaseBook
from heldar.services.media_jobs import MediaJobs
from heldar.services.retention import Retention, RetentionPolicy
from heldar.services.sampler_manager import SamplerManager
from heldar.services.scheduler import SnapshotScheduler
from heldar.services.schedules import ScheduleRegistry
from heldar.services.snapshots import SnapshotStore
from heldar.services.tickets import TicketSigner, load_or_create_key

log = logging.getLogger(__name__)

# The frame-ticket signing key, beside the database (protect the data dir like a credential).
TICKET_KEY_FILE = "ticket.key"


@dataclass
class Kernel:
    settings: Settings
    clock: Clock
    engine: AsyncEngine
    binaries: ffmpeg.Binaries
    ffmpeg_version: str
    cameras: CameraRegistry
    ai_tasks: AiTaskRegistry
    events: EventLog
    frames: FrameStore
    samplers: SamplerManager
    snapshots: SnapshotStore
    media_jobs: MediaJobs
    grabber: Grabber
    schedules: ScheduleRegistry
    scheduler: SnapshotScheduler
    retention: Retention
    leases: LeaseBook
    tickets: TicketSigner
    detections: DetectionStore
    ingest: Ingest
    started_at: datetime
    started_monotonic: float

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, clock: Clock | None = None) -> AsyncIterator[Kernel]:
        clock = clock or SystemClock()
        for name in unknown_variables():
            log.warning("unknown setting %s is ignored (typo? see docs/configuration.md)", name)
        for directory in (
            settings.data_dir,
            settings.resolved_frames_dir,
            settings.resolved_snapshots_dir,
            settings.media_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        # Exports a crash interrupted; nothing there outlives the request that made it.
        await asyncio.to_thread(shutil.rmtree, settings.temp_dir, ignore_errors=True)
        binaries = ffmpeg.discover(settings.ffmpeg_bin, settings.ffprobe_bin)
        version = await ffmpeg.probe_version(binaries.ffmpeg)
        packet_drop = await ffmpeg.probe_packet_drop(binaries.ffmpeg)
        if not packet_drop:
            log.warning(
                "%s cannot drop packets in a bitstream filter (needs ffmpeg 5.1+): keyframe "
                "sampling falls back to -skip_frame, which costs more CPU",
                version,
            )
        engine = create_engine(settings.resolved_database_url)
        try:
            await migrate.upgrade(engine)
            registry = CameraRegistry(engine, clock, media_dir=settings.media_dir)
            registry.remove_dirs_on_delete(settings.resolved_frames_dir)
            registry.remove_dirs_on_delete(settings.resolved_snapshots_dir)
            tasks = AiTaskRegistry(
                engine,
                clock,
                default_fps=settings.default_ai_fps,
                default_width=settings.default_ai_width,
            )
            events = EventLog(engine, clock)
            frames = FrameStore(settings.resolved_frames_dir, clock)
            samplers = SamplerManager(
                cameras=registry,
                tasks=tasks,
                frames=frames,
                events=events,
                clock=clock,
                ffmpeg_bin=binaries.ffmpeg,
                ai_enabled=settings.ai_enabled,
                budget_fps=settings.ai_max_total_fps,
                max_samplers=settings.max_samplers,
                decode_mode=settings.ai_decode_mode,
                packet_drop=packet_drop,
                keyframe_receiver=settings.ai_keyframe_receiver,
            )
            registry.on_change(samplers.on_change)
            tasks.on_change(samplers.on_change)
            snapshots = SnapshotStore(engine, clock, settings.resolved_snapshots_dir)
            await snapshots.reconcile()
            media_jobs = MediaJobs(settings.media_job_concurrency)
            grabber = Grabber(
                cameras=registry,
                frames=frames,
                media_jobs=media_jobs,
                clock=clock,
                ffmpeg_bin=binaries.ffmpeg,
            )
            schedules = ScheduleRegistry(engine, clock)
            scheduler = SnapshotScheduler(
                schedules=schedules,
                grabber=grabber,
                store=snapshots,
                events=events,
                clock=clock,
                reread_interval_s=settings.snapshot_scheduler_interval_s,
            )
            schedules.on_change(scheduler.on_change)
            registry.on_change(scheduler.on_change)
            retention = Retention(snapshots, events, clock, RetentionPolicy.from_settings(settings))
            leases = LeaseBook(tasks, clock)
            tickets = TicketSigner(load_or_create_key(settings.data_dir / TICKET_KEY_FILE))
            detections = DetectionStore(engine, clock, events)
            ingest = Ingest(
                signer=tickets,
                store=detections,
                cameras=registry,
                clock=clock,
                provenance=settings.ingest_provenance,
            )
            kernel = cls(
                settings=settings,
                clock=clock,
                engine=engine,
                binaries=binaries,
                ffmpeg_version=version,
                cameras=registry,
                ai_tasks=tasks,
                events=events,
                frames=frames,
                samplers=samplers,
                snapshots=snapshots,
                media_jobs=media_jobs,
                grabber=grabber,
                schedules=schedules,
                scheduler=scheduler,
                retention=retention,
                leases=leases,
                tickets=tickets,
                detections=detections,
                ingest=ingest,
                started_at=clock.now(),
                started_monotonic=clock.monotonic(),
            )
            if settings.demo:
                await kernel.register_demo_camera()
            log.info(
                "heldar %s ready: database %s, %s (%s)",
                __version__,
                engine.url.render_as_string(hide_password=True),
                version,
                binaries.ffmpeg_source,
            )
            async with asyncio.TaskGroup() as services:
                children = [
                    services.create_task(samplers.run(), name="sampler manager"),
                    services.create_task(grabber.run(), name="grabber"),
                    services.create_task(retention.run(), name="retention"),
                ]
                if settings.snapshot_scheduler_enabled:
                    children.append(services.create_task(scheduler.run(), name="scheduler"))
                try:
                    yield kernel
                finally:
                    for child in children:
                        child.cancel()
                    for child in children:
                        with contextlib.suppress(asyncio.CancelledError):
                            await child
        finally:
            await engine.dispose()

    async def register_demo_camera(self) -> None:
        clip = await demo.ensure_demo_clip(self.binaries.ffmpeg, self.settings.media_dir)
        spec = CameraCreate(
            id=demo.DEMO_CAMERA_ID,
            name="Demo test pattern",
            vendor=Vendor.GENERIC,
            main_stream_url=clip.resolve().as_uri(),
        )
        try:
            await self.cameras.create(spec)
            log.info("registered demo camera '%s' (%s)", demo.DEMO_CAMERA_ID, clip)
        except Conflict:
            log.info("demo camera '%s' already registered", demo.DEMO_CAMERA_ID)

    async def database_ok(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:  # any driver error means "not ready"
            log.exception("database check failed")
            return False
        return True

    def uptime_s(self) -> float:
        return self.clock.monotonic() - self.started_monotonic
