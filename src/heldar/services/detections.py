"""Detections posted by workers (SPEC §3 ``detections``): the wire models and the store.

Invariants: boxes are ``[x, y, w, h]`` normalised to 0..1 and inside the frame; a post with a
``frame_id`` is stored at most once per (camera, task type, frame id): a repeat stores nothing
and says ``duplicate`` (the ``ingested_frames`` primary key decides, also under concurrent
posts); a post's detections and its event are stored in one transaction, or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from heldar.clock import Clock
from heldar.db.schema import detections, events, ingested_frames
from heldar.ids import DETECTION_PREFIX, SLUG_PATTERN, new_id
from heldar.services.events import EventLog, Severity

MAX_DETECTIONS_PER_POST = 1000
MAX_LABEL_CHARS = 128
MAX_FRAME_ID_CHARS = 128
MAX_TICKET_CHARS = 4096
# Attributes and event payloads are annotations, not data: keep rows small.
MAX_ATTRIBUTES_BYTES = 16 * 1024
MAX_EVENT_PAYLOAD_BYTES = 64 * 1024
# A box edge may overshoot 1 by float rounding of the worker's own normalisation.
BBOX_TOLERANCE = 1e-6
# Event types a worker may not use: the kernel's own (SPEC: sampler_, snapshot_, camera_, disk_).
KERNEL_EVENT_PREFIXES = ("sampler_", "snapshot_", "camera_", "disk_")


def _at_most_json_bytes(limit: int) -> AfterValidator:
    """Annotations, not data: a JSON object of at most ``limit`` bytes keeps rows small."""

    def check(value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":")).encode("utf-8"))
        if size > limit:
            raise ValueError(f"must be at most {limit} bytes as JSON (got {size})")
        return value

    return AfterValidator(check)


Slug = Annotated[str, Field(pattern=SLUG_PATTERN)]
Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Attributes = Annotated[dict[str, Any], _at_most_json_bytes(MAX_ATTRIBUTES_BYTES)]
EventPayload = Annotated[dict[str, Any], _at_most_json_bytes(MAX_EVENT_PAYLOAD_BYTES)]


class DetectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]
    confidence: Unit
    bbox: tuple[Unit, Unit, Unit, Unit] = Field(description="[x, y, w, h], normalised 0..1.")
    track_id: Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)] | None = None
    attributes: Attributes = Field(default_factory=dict)

    @field_validator("bbox")
    @classmethod
    def _inside_the_frame(cls, bbox: tuple[float, float, float, float]) -> Any:
        x, y, w, h = bbox
        if x + w > 1 + BBOX_TOLERANCE or y + h > 1 + BBOX_TOLERANCE:
            raise ValueError("box must lie inside the frame: x + w <= 1 and y + h <= 1")
        return bbox


class WorkerEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_type: Slug
    severity: Literal["info", "warning"] = "info"
    payload: EventPayload = Field(default_factory=dict)

    @field_validator("event_type")
    @classmethod
    def _not_the_kernels(cls, event_type: str) -> str:
        if event_type.startswith(KERNEL_EVENT_PREFIXES):
            raise ValueError(
                f"must not start with a kernel prefix ({', '.join(KERNEL_EVENT_PREFIXES)})"
            )
        return event_type


class IngestRequest(BaseModel):
    """``POST /api/v1/ai/events``."""

    model_config = ConfigDict(extra="forbid")

    camera_id: Slug
    task_type: Slug
    timestamp: AwareDatetime | None = Field(
        None, description="Default: the ticket's capture time, else now."
    )
    frame_id: Annotated[str, Field(min_length=1, max_length=MAX_FRAME_ID_CHARS)] | None = None
    frame_ticket: Annotated[str, Field(min_length=1, max_length=MAX_TICKET_CHARS)] | None = None
    detections: Annotated[list[DetectionIn], Field(max_length=MAX_DETECTIONS_PER_POST)] = Field(
        default_factory=list
    )
    event: WorkerEventIn | None = None


@dataclass(frozen=True, slots=True)
class Detection:
    id: str
    camera_id: str
    task_id: str | None
    task_type: str
    timestamp: datetime
    label: str
    confidence: float
    bbox: list[float]
    track_id: str | None
    attributes: dict[str, Any]
    frame_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Accepted:
    """A post that passed the provenance rules, with its camera, type and frame settled."""

    camera_id: str
    task_type: str
    task_id: str | None
    frame_id: str | None
    timestamp: datetime
    ticketed: bool
    detections: list[DetectionIn]
    event: WorkerEventIn | None


@dataclass(frozen=True, slots=True)
class IngestResult:
    detections_ingested: int
    ticketed: bool
    duplicate: bool = False


class DetectionStore:
    def __init__(self, engine: AsyncEngine, clock: Clock, events: EventLog) -> None:
        self._engine = engine
        self._clock = clock
        self._events = events
        self.posts_total = 0
        self.detections_total = 0
        self.duplicates_total = 0

    async def ingest(self, post: Accepted) -> IngestResult:
        """Store the post's detections and event in one transaction; repeats store nothing."""
        now = self._clock.now()
        rows = [
            {
                "id": new_id(DETECTION_PREFIX),
                "camera_id": post.camera_id,
                "task_id": post.task_id,
                "task_type": post.task_type,
                "timestamp": post.timestamp,
                "label": d.label,
                "confidence": d.confidence,
                "bbox": list(d.bbox),
                "track_id": d.track_id,
                "attributes": d.attributes,
                "frame_id": post.frame_id,
                "created_at": now,
            }
            for d in post.detections
        ]
        try:
            async with self._engine.begin() as conn:
                if post.frame_id is not None:
                    await conn.execute(
                        insert(ingested_frames).values(
                            camera_id=post.camera_id,
                            task_type=post.task_type,
                            frame_id=post.frame_id,
                            detections=len(rows),
                            ticketed=post.ticketed,
                            created_at=now,
                        )
                    )
                if rows:
                    await conn.execute(insert(detections), rows)
                if post.event is not None:
                    payload = {**post.event.payload, "task_type": post.task_type}
                    if post.frame_id is not None:
                        payload["frame_id"] = post.frame_id
                    await conn.execute(
                        insert(events).values(
                            **self._events.row(
                                post.event.event_type,
                                Severity(post.event.severity),
                                camera_id=post.camera_id,
                                payload=payload,
                                timestamp=post.timestamp,
                            )
                        )
                    )
        except IntegrityError:
            if post.frame_id is None or not await self._seen(post):
                raise  # not a repeat: the camera went away, or a real fault
            self.duplicates_total += 1
            return IngestResult(0, post.ticketed, duplicate=True)
        self.posts_total += 1
        self.detections_total += len(rows)
        return IngestResult(len(rows), post.ticketed)

    async def _seen(self, post: Accepted) -> bool:
        query = select(ingested_frames.c.frame_id).where(
            ingested_frames.c.camera_id == post.camera_id,
            ingested_frames.c.task_type == post.task_type,
            ingested_frames.c.frame_id == post.frame_id,
        )
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def query(
        self,
        camera_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        label: str | None = None,
        limit: int,
    ) -> list[Detection]:
        """Newest first; ``since <= timestamp <= until``."""
        q = select(detections).where(detections.c.camera_id == camera_id)
        if since is not None:
            q = q.where(detections.c.timestamp >= since)
        if until is not None:
            q = q.where(detections.c.timestamp <= until)
        if label is not None:
            q = q.where(detections.c.label == label)
        q = q.order_by(detections.c.timestamp.desc(), detections.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [
            Detection(
                id=r["id"],
                camera_id=r["camera_id"],
                task_id=r["task_id"],
                task_type=r["task_type"],
                timestamp=r["timestamp"],
                label=r["label"],
                confidence=float(r["confidence"]),
                bbox=list(r["bbox"]),
                track_id=r["track_id"],
                attributes=dict(r["attributes"]),
                frame_id=r["frame_id"],
                created_at=r["created_at"],
            )
            for r in rows
        ]
