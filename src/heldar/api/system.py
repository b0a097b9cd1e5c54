"""System routes: ``/api/v1/health`` and ``/api/v1/system``."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from heldar import __version__
from heldar.api.deps import KernelDep

router = APIRouter(tags=["system"])


class Check(BaseModel):
    ok: bool
    detail: str | None = None


class FfmpegCheck(Check):
    version: str
    path: str
    source: str


class HealthChecks(BaseModel):
    database: Check
    ffmpeg: FfmpegCheck


class Health(BaseModel):
    status: str  # "ok" or "unavailable"
    version: str
    checks: HealthChecks


class CameraCounts(BaseModel):
    total: int
    enabled: int


class DiskUsage(BaseModel):
    path: str
    total_bytes: int
    free_bytes: int


class SamplerSummary(BaseModel):
    total: int = Field(description="Planned samplers (enabled camera + enabled AI task).")
    by_state: dict[str, int] = Field(description="Samplers per state; states with none left out.")


class SnapshotSummary(BaseModel):
    count: int
    total_bytes: int
    schedule_fires_total: int = Field(description="Fires since start.")
    schedule_failures_total: int
    schedule_skipped_total: int = Field(description="Fires skipped: the previous one still ran.")
    media_jobs_running: int
    media_jobs_limit: int


class LiveWorker(BaseModel):
    worker_id: str
    lease_expires_at: datetime
    tasks: int = Field(description="Tasks it holds.")


class WorkerSummary(BaseModel):
    live: list[LiveWorker] = Field(description="Workers with a live lease.")
    posts_total: int = Field(description="Accepted posts since start.")
    detections_total: int
    duplicate_posts_total: int = Field(description="Repeats of a posted frame: nothing stored.")


class SystemInfo(BaseModel):
    version: str
    started_at: datetime
    uptime_s: float
    ffmpeg: str
    cameras: CameraCounts
    samplers: SamplerSummary
    snapshots: SnapshotSummary
    workers: WorkerSummary
    disk: DiskUsage


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(kernel: KernelDep) -> JSONResponse:
    """Liveness and readiness: 200 when the database answers and ffmpeg is runnable."""
    db_ok = await kernel.database_ok()
    ffmpeg_path = kernel.binaries.ffmpeg
    ffmpeg_ok = os.access(ffmpeg_path, os.X_OK)
    body = Health(
        status="ok" if db_ok and ffmpeg_ok else "unavailable",
        version=__version__,
        checks=HealthChecks(
            database=Check(ok=db_ok, detail=None if db_ok else "database query failed"),
            ffmpeg=FfmpegCheck(
                ok=ffmpeg_ok,
                detail=None if ffmpeg_ok else "ffmpeg binary is no longer executable",
                version=kernel.ffmpeg_version,
                path=ffmpeg_path,
                source=kernel.binaries.ffmpeg_source,
            ),
        ),
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=200 if db_ok and ffmpeg_ok else 503
    )


@router.get("/system", response_model=SystemInfo)
async def system(kernel: KernelDep) -> SystemInfo:
    total, enabled = await kernel.cameras.counts()
    states = Counter(status.state.value for status in kernel.samplers.status())
    snapshot_count, snapshot_bytes = await kernel.snapshots.usage()
    stats = kernel.scheduler.stats
    data_dir = kernel.settings.data_dir
    usage = await asyncio.to_thread(shutil.disk_usage, data_dir)
    return SystemInfo(
        version=__version__,
        started_at=kernel.started_at,
        uptime_s=round(kernel.uptime_s(), 3),
        ffmpeg=kernel.ffmpeg_version,
        cameras=CameraCounts(total=total, enabled=enabled),
        samplers=SamplerSummary(total=sum(states.values()), by_state=dict(sorted(states.items()))),
        snapshots=SnapshotSummary(
            count=snapshot_count,
            total_bytes=snapshot_bytes,
            schedule_fires_total=stats.fires_total,
            schedule_failures_total=stats.failures_total,
            schedule_skipped_total=stats.skipped_total,
            media_jobs_running=kernel.media_jobs.running,
            media_jobs_limit=kernel.media_jobs.limit,
        ),
        workers=WorkerSummary(
            live=[
                LiveWorker(worker_id=w, lease_expires_at=expires_at, tasks=n)
                for w, expires_at, n in kernel.leases.summary()
            ],
            posts_total=kernel.detections.posts_total,
            detections_total=kernel.detections.detections_total,
            duplicate_posts_total=kernel.detections.duplicates_total,
        ),
        disk=DiskUsage(
            path=str(data_dir.resolve()), total_bytes=usage.total, free_bytes=usage.free
        ),
    )
