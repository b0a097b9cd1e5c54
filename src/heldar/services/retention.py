"""Snapshot retention (SPEC §2, §6 "Retention"): a periodic sweep that evicts snapshots.

Three limits, applied in this order, always to the oldest snapshots first:

1. **age**: snapshots whose ``taken_at`` is more than ``max_age_s`` before the sweep's ``now``;
2. **size cap**: then more while the total of all snapshots exceeds ``max_total_bytes``;
3. **disk floor**: then more while free space on the snapshots filesystem is under
   ``min_free_bytes``.

Design: :func:`plan_retention` is pure: given one batch of the oldest snapshots, ``now``, the
policy, the total size and the free space, it says which of them to delete and why, assuming
each deletion frees its ``size_bytes``. :class:`Retention` carries plans out one batch at a
time, re-reading free space from the disk between batches, until the plan for the oldest
remaining batch deletes nothing.

Invariants:

* Deletions are always a **prefix of the oldest-first order**: no snapshot is deleted while
  an older one is kept.
* **File first, then row** (:meth:`SnapshotStore.delete_many`). A sweep cancelled between
  the two leaves rows without files, which the next sweep deletes (again) and startup
  reconciliation drops.
* One sweep at a time (a lock), whether from :meth:`Retention.run` or a direct call.
* The floor is honoured literally: when free space stays under it, every snapshot is
  deleted, and one ``disk_low`` warning event is appended on the transition into that state
  (one ``disk_ok`` info event on the way out), never once per sweep.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from heldar.clock import Clock
from heldar.config import Settings
from heldar.redaction import redact
from heldar.services.events import EventLog, Severity
from heldar.services.snapshots import BATCH_ROWS, Snapshot, SnapshotStore

log = logging.getLogger(__name__)

BYTES_PER_GB = 1_000_000_000  # settings count GB in SI units, like disk vendors and df -H
SECONDS_PER_HOUR = 3600
# Snapshots planned (and deleted) per step: bounded memory and short write locks.
SWEEP_BATCH_ROWS = BATCH_ROWS

DISK_LOW_EVENT = "disk_low"
DISK_OK_EVENT = "disk_ok"


def disk_free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


class RetentionReason(StrEnum):
    AGE = "age"  # older than the age limit
    SIZE_CAP = "size_cap"  # the total of all snapshots was over the cap
    DISK_FLOOR = "disk_floor"  # free space was under the floor


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    max_age_s: float | None  # None: no age limit
    max_total_bytes: int | None  # None: no size cap
    min_free_bytes: int  # 0: no floor
    interval_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            max_age_s=settings.snapshot_retention_hours * SECONDS_PER_HOUR
            if settings.snapshot_retention_hours
            else None,
            max_total_bytes=int(settings.snapshot_max_gb * BYTES_PER_GB)
            if settings.snapshot_max_gb
            else None,
            min_free_bytes=int(settings.min_free_disk_gb * BYTES_PER_GB),
            interval_s=settings.retention_interval_s,
        )


class Candidate(Protocol):
    """What the planner needs of a snapshot (``Snapshot`` has it)."""

    @property
    def taken_at(self) -> datetime: ...

    @property
    def size_bytes(self) -> int: ...


C = TypeVar("C", bound=Candidate)


@dataclass(frozen=True, slots=True)
class Deletion(Generic[C]):
    snapshot: C
    reason: RetentionReason


@dataclass(frozen=True, slots=True)
class RetentionPlan(Generic[C]):
    """Deletions (a prefix of the candidates, oldest first) and the state they lead to."""

    deletions: tuple[Deletion[C], ...]
    total_bytes_after: int
    free_bytes_after: int

    @property
    def freed_bytes(self) -> int:
        return sum(d.snapshot.size_bytes for d in self.deletions)

    def count_by_reason(self) -> dict[RetentionReason, int]:
        counts = dict.fromkeys(RetentionReason, 0)
        for deletion in self.deletions:
            counts[deletion.reason] += 1
        return counts


def plan_retention(
    candidates_oldest_first: Sequence[C],
    *,
    now: datetime,
    policy: RetentionPolicy,
    total_bytes: int,
    free_bytes: int,
) -> RetentionPlan[C]:
    """Which of the oldest snapshots to delete, and why.

    ``candidates_oldest_first`` is sorted by ``taken_at`` (the oldest snapshots there are);
    ``total_bytes`` is the size of *all* snapshots, ``free_bytes`` the free space now. Each
    candidate in turn is deleted for age if it is older than ``max_age_s``, else for the cap
    while the total exceeds ``max_total_bytes``, else for the floor while free space is under
    ``min_free_bytes``; the first one that meets all three ends the plan, so the deletions are
    a prefix. Each deletion is assumed to free its ``size_bytes``.
    """
    age_limit = timedelta(seconds=policy.max_age_s) if policy.max_age_s is not None else None
    deletions: list[Deletion[C]] = []
    for candidate in candidates_oldest_first:
        if age_limit is not None and now - candidate.taken_at > age_limit:
            reason = RetentionReason.AGE
        elif policy.max_total_bytes is not None and total_bytes > policy.max_total_bytes:
            reason = RetentionReason.SIZE_CAP
        elif free_bytes < policy.min_free_bytes:
            reason = RetentionReason.DISK_FLOOR
        else:
            break
        deletions.append(Deletion(candidate, reason))
        total_bytes -= candidate.size_bytes
        free_bytes += candidate.size_bytes
    return RetentionPlan(tuple(deletions), total_bytes, free_bytes)


@dataclass(frozen=True, slots=True)
class SweepResult:
    started_at: datetime
    finished_at: datetime
    deleted_by_reason: Mapping[RetentionReason, int]  # every reason present, 0 when none
    freed_bytes: int  # the sizes of the deleted rows
    disk_low: bool | None  # free space still under the floor afterwards; None: unknown (error)
    error: str | None  # why the sweep stopped early (redacted); None when it completed

    @property
    def deleted(self) -> int:
        return sum(self.deleted_by_reason.values())


@dataclass(frozen=True, slots=True)
class RetentionStatus:
    policy: RetentionPolicy
    snapshot_count: int
    total_bytes: int
    disk_free_bytes: int
    disk_total_bytes: int
    last_sweep: SweepResult | None


@dataclass
class _Progress:
    """A sweep's counters while it runs."""

    deleted_by_reason: dict[RetentionReason, int] = field(
        default_factory=lambda: dict.fromkeys(RetentionReason, 0)
    )
    freed_bytes: int = 0

    def add(self, plan: RetentionPlan[Snapshot]) -> None:
        for reason, count in plan.count_by_reason().items():
            self.deleted_by_reason[reason] += count
        self.freed_bytes += plan.freed_bytes


class Retention:
    def __init__(
        self,
        store: SnapshotStore,
        events: EventLog,
        clock: Clock,
        policy: RetentionPolicy,
        *,
        free_bytes: Callable[[Path], int] = disk_free_bytes,
    ) -> None:
        self._store = store
        self._events = events
        self._clock = clock
        self.policy = policy
        self._free_bytes = free_bytes
        self._lock = asyncio.Lock()
        self._last: SweepResult | None = None
        self._disk_low = False  # the state the last disk_low / disk_ok event announced

    @property
    def last_sweep(self) -> SweepResult | None:
        return self._last

    async def run(self) -> None:
        """Sweep now, then every ``policy.interval_s`` until cancelled; failures are logged."""
        while True:
            try:
                await self.sweep()
            except Exception:  # recorded in last_sweep; the next sweep tries again
                log.exception("snapshot retention sweep failed")
            await asyncio.sleep(self.policy.interval_s)

    async def sweep(self) -> SweepResult:
        """Apply the policy once; the result (also on failure, then re-raised) is kept."""
        async with self._lock:
            started_at = self._clock.now()
            progress = _Progress()
            try:
                disk_low = await self._sweep(started_at, progress)
            except Exception as exc:
                error = redact(str(exc) or repr(exc))
                self._last = self._result(started_at, progress, None, error)
                raise
            result = self._last = self._result(started_at, progress, disk_low, None)
        if result.deleted:
            log.info(
                "retention deleted %d snapshots (%s), %d bytes",
                result.deleted,
                ", ".join(f"{r.value} {n}" for r, n in result.deleted_by_reason.items()),
                result.freed_bytes,
            )
        return result

    async def status(self) -> RetentionStatus:
        count, total_bytes = await self._store.usage()
        free = await self._read_free_bytes()
        disk = await asyncio.to_thread(shutil.disk_usage, self._store.snapshots_dir)
        return RetentionStatus(
            policy=self.policy,
            snapshot_count=count,
            total_bytes=total_bytes,
            disk_free_bytes=free,
            disk_total_bytes=disk.total,
            last_sweep=self._last,
        )

    async def _sweep(self, now: datetime, progress: _Progress) -> bool:
        """Delete batch after batch; return whether free space is still under the floor."""
        _, total_bytes = await self._store.usage()
        while True:
            batch = await self._store.list(None, oldest_first=True, limit=SWEEP_BATCH_ROWS)
            plan = plan_retention(
                batch,
                now=now,
                policy=self.policy,
                total_bytes=total_bytes,
                free_bytes=await self._read_free_bytes(),
            )
            if not plan.deletions:
                break
            if await self._store.delete_many([d.snapshot for d in plan.deletions]) == 0:
                break  # someone else deleted them meanwhile; the next sweep goes on
            progress.add(plan)
            total_bytes = plan.total_bytes_after
        free = await self._read_free_bytes()
        disk_low = free < self.policy.min_free_bytes
        if disk_low != self._disk_low:
            await self._announce_disk(disk_low, free)
        return disk_low

    async def _announce_disk(self, disk_low: bool, free: int) -> None:
        count, _ = await self._store.usage()
        payload = {
            "free_bytes": free,
            "min_free_bytes": self.policy.min_free_bytes,
            "snapshot_count": count,
            "snapshots_dir": str(self._store.snapshots_dir),
        }
        if disk_low:
            await self._events.append(DISK_LOW_EVENT, Severity.WARNING, payload=payload)
            log.warning(
                "free space under %s is %d bytes, under the floor of %d bytes, with %d "
                "snapshots left: free space on that filesystem or lower HELDAR_MIN_FREE_DISK_GB",
                self._store.snapshots_dir,
                free,
                self.policy.min_free_bytes,
                count,
            )
        else:
            await self._events.append(DISK_OK_EVENT, Severity.INFO, payload=payload)
            log.info(
                "free space under %s is back over the floor: %d bytes",
                self._store.snapshots_dir,
                free,
            )
        self._disk_low = disk_low  # only once the event is stored: a failed append retries

    async def _read_free_bytes(self) -> int:
        return await asyncio.to_thread(self._free_bytes, self._store.snapshots_dir)

    def _result(
        self, started_at: datetime, progress: _Progress, disk_low: bool | None, error: str | None
    ) -> SweepResult:
        return SweepResult(
            started_at=started_at,
            finished_at=self._clock.now(),
            deleted_by_reason=dict(progress.deleted_by_reason),
            freed_bytes=progress.freed_bytes,
            disk_low=disk_low,
            error=error,
        )
