"""System routes: ``/api/v1/health`` and ``/api/v1/system``."""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

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


class SystemInfo(BaseModel):
    version: str
    started_at: datetime
    uptime_s: float
    ffmpeg: str
    cameras: CameraCounts
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
    data_dir = kernel.settings.data_dir
    usage = await asyncio.to_thread(shutil.disk_usage, data_dir)
    return SystemInfo(
        version=__version__,
        started_at=kernel.started_at,
        uptime_s=round(kernel.uptime_s(), 3),
        ffmpeg=kernel.ffmpeg_version,
        cameras=CameraCounts(total=total, enabled=enabled),
        disk=DiskUsage(
            path=str(data_dir.resolve()), total_bytes=usage.total, free_bytes=usage.free
        ),
    )
