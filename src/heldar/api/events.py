"""Event routes: ``GET /api/v1/events``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from heldar.api.deps import KernelDep
from heldar.errors import InvalidInput
from heldar.ids import SLUG_PATTERN
from heldar.services.events import Event, Severity

router = APIRouter(tags=["events"])

DEFAULT_LIMIT = 100
MAX_LIMIT = 5000


@router.get("/events", response_model=list[Event])
async def list_events(
    kernel: KernelDep,
    camera_id: Annotated[str | None, Query(pattern=SLUG_PATTERN)] = None,
    event_type: Annotated[str | None, Query(pattern=SLUG_PATTERN)] = None,
    severity: Severity | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> list[Event]:
    """Newest first; ``since`` inclusive, ``until`` exclusive (RFC 3339 with a zone)."""
    if since is not None and until is not None and since >= until:
        raise InvalidInput.field(("query", "until"), "must be later than since")
    return await kernel.events.query(
        limit=limit,
        camera_id=camera_id,
        event_type=event_type,
        severity=severity,
        since=since,
        until=until,
    )
