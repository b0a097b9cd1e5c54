"""Snapshot routes (SPEC §6, §7): schedules, stored snapshots, and the live snapshot.

- ``GET/POST /cameras/{id}/snapshot-schedules``, ``PATCH/DELETE /snapshot-schedules/{id}``
- ``GET /cameras/{id}/snapshots?from&to&limit``, ``DELETE /snapshots/{id}``
- ``GET /cameras/{id}/snapshot?max_age_ms&store``: a JPEG, ``X-Snapshot-Source: sampler|grab``
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, Field

from heldar.api.cameras import CameraId
from heldar.api.deps import KernelDep, TimeRangeDep
from heldar.clock import rfc3339
from heldar.kernel import Kernel
from heldar.services.grabber import DEFAULT_MAX_AGE_MS
from heldar.services.schedules import (
    SCHEDULE_ID_PATTERN,
    Schedule,
    ScheduleCreate,
    SchedulePatch,
    effective_due,
)
from heldar.services.snapshots import SNAPSHOT_ID_PATTERN, Snapshot, SnapshotSource

router = APIRouter(tags=["snapshots"])

DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 10_000
# A sampler frame older than an hour is no "live" picture; past that, ask for a grab (0).
MAX_FRAME_AGE_MS = 3_600_000

ScheduleId = Annotated[str, Path(pattern=SCHEDULE_ID_PATTERN, description="snsch_<32 hex>")]
SnapshotId = Annotated[str, Path(pattern=SNAPSHOT_ID_PATTERN, description="snap_<32 hex>")]


class ScheduleOut(BaseModel):
    id: str
    camera_id: str
    interval_seconds: int
    enabled: bool
    last_fired_at: datetime | None = Field(description="Due time of the last fire.")
    last_error: str | None
    next_due_at: datetime | None = Field(description="Next fire; null while disabled.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, kernel: Kernel, schedule: Schedule) -> ScheduleOut:
        next_due = None
        if schedule.enabled:
            next_due = kernel.scheduler.next_due(schedule.id) or effective_due(
                schedule.next_due_at, schedule.interval_seconds, kernel.clock.now()
            )
        return cls(
            id=schedule.id,
            camera_id=schedule.camera_id,
            interval_seconds=schedule.interval_seconds,
            enabled=schedule.enabled,
            last_fired_at=schedule.last_fired_at,
            last_error=schedule.last_error,
            next_due_at=next_due,
            created_at=schedule.created_at,
            updated_at=schedule.updated_at,
        )


class SnapshotOut(BaseModel):
    id: str
    camera_id: str
    schedule_id: str | None
    path: str = Field(description="Relative to the snapshots directory.")
    url: str = Field(description="Where the JPEG is served (outside /api/v1).")
    taken_at: datetime = Field(description="Fire time of the schedule, or the request time.")
    captured_at: datetime = Field(description="When the image itself was captured.")
    size_bytes: int
    width: int
    height: int
    source: SnapshotSource
    created_at: datetime

    @classmethod
    def of(cls, snapshot: Snapshot) -> SnapshotOut:
        return cls(
            id=snapshot.id,
            camera_id=snapshot.camera_id,
            schedule_id=snapshot.schedule_id,
            path=snapshot.path,
            url=snapshot.url,
            taken_at=snapshot.taken_at,
            captured_at=snapshot.captured_at,
            size_bytes=snapshot.size_bytes,
            width=snapshot.width,
            height=snapshot.height,
            source=snapshot.source,
            created_at=snapshot.created_at,
        )


@router.get("/cameras/{camera_id}/snapshot-schedules", response_model=list[ScheduleOut])
async def list_schedules(kernel: KernelDep, camera_id: CameraId) -> list[ScheduleOut]:
    return [ScheduleOut.of(kernel, s) for s in await kernel.schedules.list_for_camera(camera_id)]


@router.post(
    "/cameras/{camera_id}/snapshot-schedules",
    response_model=ScheduleOut,
    status_code=status.HTTP_201_CREATED,
)
async def create_schedule(
    kernel: KernelDep, camera_id: CameraId, body: ScheduleCreate
) -> ScheduleOut:
    """The first fire is at once, then every ``interval_seconds`` on a fixed grid."""
    return ScheduleOut.of(kernel, await kernel.schedules.create(camera_id, body))


@router.patch("/snapshot-schedules/{schedule_id}", response_model=ScheduleOut)
async def patch_schedule(
    kernel: KernelDep, schedule_id: ScheduleId, body: SchedulePatch
) -> ScheduleOut:
    return ScheduleOut.of(kernel, await kernel.schedules.patch(schedule_id, body))


@router.delete("/snapshot-schedules/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_schedule(kernel: KernelDep, schedule_id: ScheduleId) -> Response:
    await kernel.schedules.delete(schedule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/cameras/{camera_id}/snapshots", response_model=list[SnapshotOut])
async def list_snapshots(
    kernel: KernelDep,
    camera_id: CameraId,
    period: TimeRangeDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
) -> list[SnapshotOut]:
    """Newest first; ``from`` and ``to`` (RFC 3339 with a zone) bound ``taken_at``, inclusive."""
    await kernel.cameras.get(camera_id)  # 404 for an unknown camera
    found = await kernel.snapshots.list(
        camera_id, since=period.since, until=period.until, limit=limit
    )
    return [SnapshotOut.of(s) for s in found]


@router.delete("/snapshots/{snapshot_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_snapshot(kernel: KernelDep, snapshot_id: SnapshotId) -> Response:
    """Deletes the file, then the row."""
    await kernel.snapshots.delete(snapshot_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/cameras/{camera_id}/snapshot",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The camera's picture now."},
        404: {"description": "Unknown camera."},
        409: {"description": "The camera is disabled."},
        503: {"description": "The grab failed, or every media job slot is busy (Retry-After)."},
    },
)
async def live_snapshot(
    kernel: KernelDep,
    camera_id: CameraId,
    max_age_ms: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_FRAME_AGE_MS,
            description="Serve a sampler frame at most this old; else grab (0: always grab).",
        ),
    ] = DEFAULT_MAX_AGE_MS,
    store: Annotated[
        bool, Query(description="Also store it as a snapshot (X-Snapshot-Id).")
    ] = False,
) -> Response:
    requested_at = kernel.clock.now()
    shot = await kernel.grabber.take(camera_id, max_age_ms=max_age_ms)
    headers = {
        "Cache-Control": "no-store",
        "X-Snapshot-Source": shot.source.value,
        "X-Snapshot-Captured-At": rfc3339(shot.captured_at),
        "X-Snapshot-Width": str(shot.width),
        "X-Snapshot-Height": str(shot.height),
    }
    if store:
        stored = await kernel.snapshots.store(camera_id, shot, taken_at=requested_at)
        headers["X-Snapshot-Id"] = stored.id
        headers["Location"] = stored.url
    return Response(content=shot.data, media_type="image/jpeg", headers=headers)
