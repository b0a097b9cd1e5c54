"""The snapshot scheduler (SPEC §6): fires every active schedule on its fixed grid.

Task tree: :meth:`SnapshotScheduler.run` owns one task group; the loop and every fire live in
it. The loop keeps the active schedules in memory (re-read on every API change, which wakes it
at once, and at least every ``HELDAR_SNAPSHOT_SCHEDULER_INTERVAL_S`` for changes made behind
the API's back), sleeps until the earliest due time, then for everything due:

1. stamps ``taken_at`` (the fire time: punctuality is visible in the data),
2. moves the grid on (:func:`~heldar.services.schedules.next_due_after`) in memory and, for all
   fires of that instant in one transaction, in the database,
3. starts the fire as its own task and goes back to sleep: a slow or dead camera never delays
   another schedule.

A fire takes the camera's fresh sampler frame when there is one (no decode) or a grab (under
the media-job limit, waiting for a slot up to ``SLOT_WAIT_S``), stores it, and records the
result. A schedule whose previous fire is still running skips this one (counted, and logged
once per episode) instead of piling up grabs of a dead camera. Errors set ``last_error``; the
transition from success to failure appends one ``snapshot_failed`` event.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from heldar.clock import Clock
from heldar.errors import KernelError
from heldar.services.events import EventLog, Severity
from heldar.services.grabber import DEFAULT_MAX_AGE_MS, GRAB_TIMEOUT_S, Grabber
from heldar.services.schedules import (
    Advance,
    Schedule,
    ScheduleRegistry,
    effective_due,
    next_due_after,
)
from heldar.services.snapshots import SnapshotStore

log = logging.getLogger(__name__)

# A fire waits this long for a media-job slot before it counts as failed.
SLOT_WAIT_S = GRAB_TIMEOUT_S
# A due time this close is fired now rather than slept for (asyncio timers are ~1 ms coarse).
FIRE_EARLY_S = 0.002


@dataclass(eq=False, slots=True)
class _Entry:
    schedule: Schedule
    due: datetime
    fire: asyncio.Task[None] | None = None
    skipping: bool = False


@dataclass(slots=True)
class SchedulerStats:
    fires_total: int = 0
    failures_total: int = 0
    skipped_total: int = 0  # fires skipped because the previous one still ran


class SnapshotScheduler:
    def __init__(
        self,
        *,
        schedules: ScheduleRegistry,
        grabber: Grabber,
        store: SnapshotStore,
        events: EventLog,
        clock: Clock,
        reread_interval_s: float,
        frame_max_age_ms: float = DEFAULT_MAX_AGE_MS,
    ) -> None:
        self._schedules = schedules
        self._grabber = grabber
        self._store = store
        self._events = events
        self._clock = clock
        self._reread_interval_s = reread_interval_s
        self._frame_max_age_ms = frame_max_age_ms
        self._entries: dict[str, _Entry] = {}
        self._wake = asyncio.Event()
        self._dirty = True
        self.stats = SchedulerStats()

    async def on_change(self, _camera_id: str) -> None:
        """Registry listener (schedules and cameras): re-read and re-plan at once."""
        self._dirty = True
        self._wake.set()

    def next_due(self, schedule_id: str) -> datetime | None:
        entry = self._entries.get(schedule_id)
        return entry.due if entry is not None else None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            reread_at = 0.0
            while True:
                if self._dirty or self._clock.monotonic() >= reread_at:
                    self._dirty = False
                    await self._reload()
                    reread_at = self._clock.monotonic() + self._reread_interval_s
                await self._fire_due(group)
                await self._sleep(reread_at)

    async def _reload(self) -> None:
        try:
            active = await self._schedules.list_active()
        except Exception:
            log.exception("cannot read snapshot schedules; keeping the ones known")
            return
        now = self._clock.now()
        entries: dict[str, _Entry] = {}
        for schedule in active:
            old = self._entries.get(schedule.id)
            due = effective_due(schedule.next_due_at, schedule.interval_seconds, now)
            if old is not None and old.schedule.updated_at == schedule.updated_at:
                due = old.due  # unchanged: the in-memory grid is ahead of a lagging write
            entries[schedule.id] = _Entry(
                schedule, due, old.fire if old else None, old.skipping if old else False
            )
        self._entries = entries

    async def _fire_due(self, group: asyncio.TaskGroup) -> None:
        now = self._clock.now()
        due_now = [
            e for e in self._entries.values() if (e.due - now).total_seconds() <= FIRE_EARLY_S
        ]
        if not due_now:
            return
        advances = []
        for entry in due_now:
            schedule = entry.schedule
            due = entry.due
            taken_at = self._clock.now()
            entry.due = next_due_after(due, schedule.interval_seconds, taken_at)
            advances.append(Advance(schedule.id, schedule.updated_at, due, entry.due))
            if entry.fire is not None and not entry.fire.done():
                self.stats.skipped_total += 1
                if not entry.skipping:
                    entry.skipping = True
                    log.warning(
                        "schedule %s (camera %s): previous fire still running; skipping fires "
                        "until it ends",
                        schedule.id,
                        schedule.camera_id,
                    )
                continue
            entry.skipping = False
            self.stats.fires_total += 1
            entry.fire = group.create_task(
                self._fire(schedule, taken_at), name=f"fire {schedule.id}"
            )
        try:
            await self._schedules.advance(advances)
        except Exception:
            log.exception("cannot record the grid of %d snapshot schedules", len(advances))

    async def _sleep(self, reread_at: float) -> None:
        if self._dirty:
            return
        delay_s = reread_at - self._clock.monotonic()
        if self._entries:
            earliest = min(e.due for e in self._entries.values())
            delay_s = min(delay_s, (earliest - self._clock.now()).total_seconds())
        if delay_s <= 0:
            return
        self._wake.clear()
        try:
            async with asyncio.timeout(delay_s):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _fire(self, schedule: Schedule, taken_at: datetime) -> None:
        """One fire; never raises (a failure must not end the scheduler's task group)."""
        error: str | None = None
        try:
            shot = await self._grabber.take(
                schedule.camera_id, max_age_ms=self._frame_max_age_ms, slot_wait_s=SLOT_WAIT_S
            )
            await self._store.store(
                schedule.camera_id, shot, taken_at=taken_at, schedule_id=schedule.id
            )
        except KernelError as exc:
            error = exc.message
        except Exception as exc:
            log.exception("schedule %s: unexpected failure", schedule.id)
            error = f"internal error: {type(exc).__name__}"
        if error is not None:
            self.stats.failures_total += 1
        try:
            await self._record(schedule, error)
        except Exception:
            log.exception("schedule %s: cannot record the fire's result", schedule.id)

    async def _record(self, schedule: Schedule, error: str | None) -> None:
        exists, was_failing = await self._schedules.record_result(schedule.id, error)
        if not exists:
            return
        if error is not None and not was_failing:
            log.warning(
                "schedule %s (camera %s) failed: %s", schedule.id, schedule.camera_id, error
            )
            await self._events.append(
                "snapshot_failed",
                Severity.WARNING,
                camera_id=schedule.camera_id,
                payload={"schedule_id": schedule.id, "reason": error},
            )
        elif error is None and was_failing:
            log.info("schedule %s (camera %s) recovered", schedule.id, schedule.camera_id)
