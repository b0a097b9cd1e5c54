"""Event routes: ``GET /api/v1/events``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel

from heldar.api.deps import KernelDep
from heldar.errors import InvalidInput
from heldar.ids import SLUG_PATTERN
from heldar.services.events import Severity

router = APIRouter(tags=["events"])

DEFAULT_LIMIT = 100
MAX_LIMIT = 5000


class EventOut(BaseModel):
    id: int
    camera_id: str | None
    event_type: str
    severity: Severity
    timestamp: datetime
    payload: dict[str, Any]
    created_at: datetime


@router.get("/events", response_model=list[EventOut])
async def list_events(
    kernel: KernelDep,
    camera_id: Annotated[str | None, Query(pattern=SLUG_PATTERN)] = None,
    event_type: Annotated[str | None, Query(pattern=SLUG_PATTERN)] = None,
    severity: Severity | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> list[EventOut]:
    """Newest first; ``since`` inclusive, ``until`` exclusive (RFC 3339 with a zone)."""
    if since is not None and until is not None and since >= until:
        raise InvalidInput.field(("query", "until"), "must be later than since")
    rows = await kernel.events.query(
        limit=limit,
        camera_id=camera_id,
        event_type=event_type,
        severity=severity,
        since=since,
        until=until,
    )
    return [EventOut.model_validate(row, from_attributes=True) for row in rows]
