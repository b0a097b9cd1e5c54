"""Worker protocol routes: task discovery, leases, detections ingest and query.

- ``GET /ai/tasks?worker_id=``: enabled tasks of enabled cameras; with ``worker_id`` a
  heartbeat answering that worker's fair share.
- ``POST /ai/leases``, ``DELETE /ai/leases/{lease_id}``.
- ``POST /ai/events``: detections (and one optional event) of one analysed frame.
- ``GET /cameras/{id}/detections?from&to&label&limit``: newest first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from heldar.api.cameras import CameraId
from heldar.api.deps import KernelDep, TimeRangeDep
from heldar.errors import TooLarge
from heldar.ids import SLUG_PATTERN
from heldar.services.ai_tasks import AiTask
from heldar.services.detections import (
    MAX_LABEL_CHARS,
    Detection,
    IngestRequest,
)
from heldar.services.leases import (
    DEFAULT_TTL_S,
    LEASE_ID_PATTERN,
    MAX_TASKS_LIMIT,
    MAX_TTL_S,
    MIN_TTL_S,
)

router = APIRouter(tags=["workers"])

WORKER_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
MAX_TASK_TYPES = 64
# SPEC: a worker post is at most 8 MiB (1000 detections with attributes fit easily).
MAX_POST_BYTES = 8 * 1024 * 1024
DEFAULT_DETECTIONS_LIMIT = 200
MAX_DETECTIONS_LIMIT = 5000

WorkerId = Annotated[str, Field(pattern=WORKER_ID_PATTERN)]
LeaseId = Annotated[str, Path(pattern=LEASE_ID_PATTERN, description="lease_<32 hex>")]
TaskType = Annotated[str, Field(pattern=SLUG_PATTERN)]


class TaskOut(BaseModel):
    id: str
    camera_id: str
    task_type: str
    stream_profile: str
    fps: float
    width: int
    config: dict[str, Any]
    frame_url: str = Field(description="Where the task's frames are fetched (and ticketed).")

    @classmethod
    def of(cls, task: AiTask) -> TaskOut:
        profile = task.stream_profile.value
        return cls(
            id=task.id,
            camera_id=task.camera_id,
            task_type=task.task_type,
            stream_profile=profile,
            fps=task.fps,
            width=task.width,
            config=task.config,
            frame_url=f"/api/v1/cameras/{task.camera_id}/frame?profile={profile}&task={task.id}",
        )


class LeaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: WorkerId
    task_types: Annotated[list[TaskType], Field(min_length=1, max_length=MAX_TASK_TYPES)] | None = (
        None
    )
    max_tasks: Annotated[int, Field(ge=1, le=MAX_TASKS_LIMIT)] = MAX_TASKS_LIMIT
    ttl_secs: Annotated[int, Field(ge=MIN_TTL_S, le=MAX_TTL_S)] = DEFAULT_TTL_S


class LeaseOut(BaseModel):
    lease_id: str
    worker_id: str
    expires_at: datetime
    tasks: list[TaskOut] = Field(description="Every task this worker holds now.")


class IngestOut(BaseModel):
    detections_ingested: int
    ticketed: bool
    duplicate: bool = Field(False, description="The frame was posted before: nothing stored.")


@router.get("/ai/tasks", response_model=list[TaskOut])
async def list_worker_tasks(
    kernel: KernelDep,
    worker_id: Annotated[str | None, Query(pattern=WORKER_ID_PATTERN)] = None,
) -> list[TaskOut]:
    """Enabled tasks of enabled cameras; with ``worker_id``, that worker's share (heartbeat)."""
    if worker_id is None:
        tasks = await kernel.ai_tasks.list_enabled()
    else:
        tasks = (await kernel.leases.heartbeat(worker_id)).tasks
    return [TaskOut.of(t) for t in tasks]


@router.post("/ai/leases", response_model=LeaseOut)
async def acquire_lease(kernel: KernelDep, body: LeaseRequest) -> LeaseOut:
    """Acquire or renew this worker's lease; answers every task it holds now."""
    grant = await kernel.leases.acquire(
        body.worker_id,
        task_types=body.task_types,
        max_tasks=body.max_tasks,
        ttl_s=body.ttl_secs,
    )
    return LeaseOut(
        lease_id=grant.lease_id,
        worker_id=grant.worker_id,
        expires_at=grant.expires_at,
        tasks=[TaskOut.of(t) for t in grant.tasks],
    )


@router.delete("/ai/leases/{lease_id}", status_code=status.HTTP_204_NO_CONTENT)
async def release_lease(kernel: KernelDep, lease_id: LeaseId) -> Response:
    kernel.leases.release(lease_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/ai/events",
    response_model=IngestOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": IngestRequest.model_json_schema()}},
        }
    },
    responses={
        401: {"description": "Forged or expired ticket, or no ticket under `enforce`."},
        409: {"description": "The body names another camera, task type or frame than its ticket."},
        413: {"description": "Body over 8 MiB."},
    },
)
async def post_events(kernel: KernelDep, request: Request) -> IngestOut:
    """Detections of one analysed frame; a repeat (camera, task type, frame_id) stores nothing."""
    body = await _read_limited(request, MAX_POST_BYTES)
    try:
        post = IngestRequest.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None
    result = await kernel.ingest.post(post)
    return IngestOut(
        detections_ingested=result.detections_ingested,
        ticketed=result.ticketed,
        duplicate=result.duplicate,
    )


@router.get("/cameras/{camera_id}/detections", response_model=list[Detection])
async def list_detections(
    kernel: KernelDep,
    camera_id: CameraId,
    period: TimeRangeDep,
    label: Annotated[str | None, Query(min_length=1, max_length=MAX_LABEL_CHARS)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_DETECTIONS_LIMIT)] = DEFAULT_DETECTIONS_LIMIT,
) -> list[Detection]:
    """Newest first; ``from`` and ``to`` (RFC 3339 with a zone) bound ``timestamp``, inclusive."""
    await kernel.cameras.get(camera_id)  # 404 for an unknown camera
    return await kernel.detections.query(
        camera_id, since=period.since, until=period.until, label=label, limit=limit
    )


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) one over ``limit`` bytes without reading all of it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body: {declared} bytes; at most {limit} bytes per post")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body: over {limit} bytes; at most {limit} bytes per post")
        chunks.append(chunk)
    return b"".join(chunks)
