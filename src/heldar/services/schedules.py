"""Snapshot schedules (SPEC §3, §6): "take a snapshot of camera C every N seconds".

The fire grid: a schedule is first due when it is created or (re-)enabled, then every
``interval_seconds`` after the previous *due time*, never after the previous completion, so
it does not drift. After downtime it fires once, then resumes on its grid
(:func:`next_due_after`). ``next_due_at`` is stored so the grid survives restarts.

Invariants: interval in 5..86400 s (out of range is a 422, never clamped); ``last_fired_at``
is the due time of the last fire; ``last_error`` is redacted and cleared by the next success;
listeners (the scheduler) are notified after every committed change. Grid writes from the
scheduler (:meth:`ScheduleRegistry.advance`) and from PATCH are serialised by one lock, and an
advance only applies to a schedule unchanged since the scheduler read it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from heldar.clock import Clock
from heldar.db.schema import cameras, snapshot_schedules
from heldar.errors import InvalidInput, NotFound
from heldar.ids import SCHEDULE_PREFIX, new_id
from heldar.redaction import redact
from heldar.services.cameras import require_camera
from heldar.services.listeners import ChangeListener, ChangeListeners

MIN_INTERVAL_S, MAX_INTERVAL_S = 5, 86_400
SCHEDULE_ID_PATTERN = r"^snsch_[0-9a-f]{32}$"
MAX_ERROR_CHARS = 2000
_US_PER_S = 1_000_000

IntervalSeconds = Annotated[int, Field(ge=MIN_INTERVAL_S, le=MAX_INTERVAL_S, strict=True)]


def next_due_after(due: datetime, interval_s: int, now: datetime) -> datetime:
    """The grid point that follows a fire due at ``due``, seen at ``now``.

    ``due + k * interval`` for the smallest ``k >= 1`` that lies after ``now``: on time that is
    ``due + interval``; after downtime the missed points are skipped (one catch-up fire, then
    back on the grid). Exact: computed in whole microseconds.
    """
    interval_us = interval_s * _US_PER_S
    elapsed_us = _microseconds(now - due)
    k = max(1, elapsed_us // interval_us + 1)
    return due + timedelta(microseconds=k * interval_us)


def effective_due(next_due_at: datetime | None, interval_s: int, now: datetime) -> datetime:
    """When a schedule is due: its stored grid point, or ``now`` when it has none yet.

    A grid point more than one interval ahead can only come from a wall clock that stepped
    back; the schedule is then due at once rather than silent for the size of the step.
    """
    if next_due_at is None or next_due_at - now > timedelta(seconds=interval_s):
        return now
    return next_due_at


def _microseconds(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * _US_PER_S + delta.microseconds


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval_seconds: IntervalSeconds = Field(description="5 to 86400.")
    enabled: bool = True


class SchedulePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval_seconds: IntervalSeconds | None = None
    enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    id: str
    camera_id: str
    interval_seconds: int
    enabled: bool
    last_fired_at: datetime | None  # due time of the last fire
    last_error: str | None
    next_due_at: datetime | None  # None: due at once
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Advance:
    """The scheduler fired ``schedule_id`` for ``due``; its grid moves on to ``next_due``."""

    schedule_id: str
    loaded_updated_at: datetime  # the version the scheduler read; a changed row is left alone
    due: datetime
    next_due: datetime


class ScheduleRegistry:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._listeners = ChangeListeners()
        self._grid_lock = asyncio.Lock()

    def on_change(self, listener: ChangeListener) -> None:
        self._listeners.add(listener)

    async def list_for_camera(self, camera_id: str) -> list[Schedule]:
        await require_camera(self._engine, camera_id)
        query = (
            select(snapshot_schedules)
            .where(snapshot_schedules.c.camera_id == camera_id)
            .order_by(snapshot_schedules.c.created_at, snapshot_schedules.c.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_from_row(r) for r in rows]

    async def list_active(self) -> list[Schedule]:
        """Enabled schedules of enabled cameras: the scheduler's input."""
        query = (
            select(snapshot_schedules)
            .join(cameras, cameras.c.id == snapshot_schedules.c.camera_id)
            .where(snapshot_schedules.c.enabled.is_(True), cameras.c.enabled.is_(True))
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_from_row(r) for r in rows]

    async def get(self, schedule_id: str) -> Schedule:
        query = select(snapshot_schedules).where(snapshot_schedules.c.id == schedule_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise NotFound(f"snapshot schedule '{schedule_id}' does not exist")
        return _from_row(row)

    async def create(self, camera_id: str, spec: ScheduleCreate) -> Schedule:
        await require_camera(self._engine, camera_id)
        now = self._clock.now()
        schedule_id = new_id(SCHEDULE_PREFIX)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(snapshot_schedules).values(
                    id=schedule_id,
                    camera_id=camera_id,
                    interval_seconds=spec.interval_seconds,
                    enabled=spec.enabled,
                    next_due_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
        await self._listeners.notify(camera_id)
        return await self.get(schedule_id)

    async def patch(self, schedule_id: str, change: SchedulePatch) -> Schedule:
        sent = change.model_fields_set
        for name in sent:
            if getattr(change, name) is None:
                raise InvalidInput.field(("body", name), "must not be null")
        async with self._grid_lock:
            current = await self.get(schedule_id)
            now = self._clock.now()
            values: dict[str, Any] = {"updated_at": now}
            interval = change.interval_seconds if "interval_seconds" in sent else None
            if interval is not None and interval != current.interval_seconds:
                values["interval_seconds"] = interval
                # The grid keeps its phase: the next point is one new interval after the last fire.
                base = current.last_fired_at
                values["next_due_at"] = now if base is None else base + timedelta(seconds=interval)
            if "enabled" in sent and change.enabled != current.enabled:
                values["enabled"] = change.enabled
                if change.enabled:
                    values["next_due_at"] = now  # re-enabled: a new grid starts now
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(snapshot_schedules)
                    .where(snapshot_schedules.c.id == schedule_id)
                    .values(**values)
                )
        await self._listeners.notify(current.camera_id)
        return await self.get(schedule_id)

    async def delete(self, schedule_id: str) -> None:
        current = await self.get(schedule_id)
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(snapshot_schedules).where(snapshot_schedules.c.id == schedule_id)
            )
        await self._listeners.notify(current.camera_id)

    async def advance(self, fired: Sequence[Advance]) -> int:
        """Record fires and move their grids on, in one transaction; returns rows updated.

        A schedule changed since the scheduler read it (``updated_at`` differs) is left as the
        change set it: the scheduler re-reads it when notified.
        """
        if not fired:
            return 0
        statement = (
            update(snapshot_schedules)
            .where(
                and_(
                    snapshot_schedules.c.id == bindparam("b_id"),
                    snapshot_schedules.c.updated_at == bindparam("b_version"),
                )
            )
            .values(last_fired_at=bindparam("b_due"), next_due_at=bindparam("b_next"))
        )
        params = [
            {
                "b_id": a.schedule_id,
                "b_version": a.loaded_updated_at,
                "b_due": a.due,
                "b_next": a.next_due,
            }
            for a in fired
        ]
        async with self._grid_lock, self._engine.begin() as conn:
            result = await conn.execute(statement, params)
        return int(result.rowcount)

    async def record_result(self, schedule_id: str, error: str | None) -> tuple[bool, bool]:
        """Store the outcome of a fire: ``last_error`` set or cleared.

        Returns ``(exists, was_failing)``: whether the schedule still exists, and whether it
        had an error before this result (so the caller can act on transitions only).
        """
        stored = None if error is None else redact(error)[:MAX_ERROR_CHARS]
        query = select(snapshot_schedules.c.last_error).where(
            snapshot_schedules.c.id == schedule_id
        )
        async with self._engine.begin() as conn:
            previous = (await conn.execute(query)).first()
            if previous is None:
                return False, False
            if previous[0] != stored:
                await conn.execute(
                    update(snapshot_schedules)
                    .where(snapshot_schedules.c.id == schedule_id)
                    .values(last_error=stored)
                )
        return True, previous[0] is not None


def _from_row(row: Any) -> Schedule:
    return Schedule(
        id=row["id"],
        camera_id=row["camera_id"],
        interval_seconds=int(row["interval_seconds"]),
        enabled=bool(row["enabled"]),
        last_fired_at=row["last_fired_at"],
        last_error=row["last_error"],
        next_due_at=row["next_due_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
