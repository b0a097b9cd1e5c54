"""The append-only event log (SPEC §3 ``events``): kernel transitions and worker events.

Invariants: rows are never updated; every string in a payload is redacted before it is
stored; callers append on state *transitions*, never per retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from heldar.clock import Clock
from heldar.db.schema import events
from heldar.redaction import redact

# SPEC §5: an ffmpeg stderr tail in an event payload is at most 8 KiB.
MAX_PAYLOAD_TEXT_BYTES = 8192


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    camera_id: str | None
    event_type: str
    severity: Severity
    timestamp: datetime
    payload: dict[str, Any]
    created_at: datetime


def redact_payload(value: Any) -> Any:
    """Redact every string inside a JSON-like value (keys included), bounding long text."""
    if isinstance(value, str):
        text = redact(value)
        raw = text.encode("utf-8")
        if len(raw) > MAX_PAYLOAD_TEXT_BYTES:
            text = raw[-MAX_PAYLOAD_TEXT_BYTES:].decode("utf-8", "ignore")
        return text
    if isinstance(value, dict):
        return {redact(str(k)): redact_payload(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_payload(v) for v in value]
    return value


class EventLog:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def append(
        self,
        event_type: str,
        severity: Severity,
        *,
        camera_id: str | None = None,
        payload: dict[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> int:
        values = self.row(
            event_type, severity, camera_id=camera_id, payload=payload, timestamp=timestamp
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(insert(events).values(**values))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def row(
        self,
        event_type: str,
        severity: Severity,
        *,
        camera_id: str | None = None,
        payload: dict[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> dict[str, Any]:
        """The values of an event row (payload redacted), for inserting within another
        transaction (a worker post stores its event with its detections, or neither)."""
        now = self._clock.now()
        return {
            "camera_id": camera_id,
            "event_type": event_type,
            "severity": severity.value,
            "timestamp": timestamp or now,
            "payload": redact_payload(payload or {}),
            "created_at": now,
        }

    async def query(
        self,
        *,
        limit: int,
        camera_id: str | None = None,
        event_type: str | None = None,
        severity: Severity | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Event]:
        """Newest first."""
        q = select(events).order_by(events.c.timestamp.desc(), events.c.id.desc()).limit(limit)
        if camera_id is not None:
            q = q.where(events.c.camera_id == camera_id)
        if event_type is not None:
            q = q.where(events.c.event_type == event_type)
        if severity is not None:
            q = q.where(events.c.severity == severity.value)
        if since is not None:
            q = q.where(events.c.timestamp >= since)
        if until is not None:
            q = q.where(events.c.timestamp < until)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [
            Event(
                id=row["id"],
                camera_id=row["camera_id"],
                event_type=row["event_type"],
                severity=Severity(row["severity"]),
                timestamp=row["timestamp"],
                payload=row["payload"],
                created_at=row["created_at"],
            )
            for row in rows
        ]
