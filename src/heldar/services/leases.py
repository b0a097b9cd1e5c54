"""Worker leases (worker protocol): which live worker holds which AI task.

Decision and bookkeeping are split:

* :func:`share_tasks` is pure: from the tasks, the live workers (their task-type filters and
  ``max_tasks``) and who holds what now, it says who *should* hold each task: a fair share
  (balanced loads, respecting filters and caps), keeping current holdings where that is fair,
  so tasks do not move for nothing.
* :class:`LeaseBook` keeps the live workers and the holdings in memory (a kernel restart
  simply makes workers lease again) and applies the share on every lease call of a worker, for
  that worker only: it gives up what the share moved away at once, and takes a task the share
  gave it only when nobody holds it. A task therefore has **one holder at a time**: a task moves
  from A to B when A's next call releases it, then B's next call takes it; a dead worker's tasks
  are free once its lease expires.

A worker is live while its lease has not expired; every lease call and every
``GET /ai/tasks?worker_id=`` renews it (a heartbeat).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from heldar.clock import Clock
from heldar.errors import NotFound
from heldar.ids import new_id
from heldar.services.ai_tasks import AiTask, AiTaskRegistry

log = logging.getLogger(__name__)

LEASE_PREFIX = "lease_"
LEASE_ID_PATTERN = r"^lease_[0-9a-f]{32}$"
MIN_TTL_S, MAX_TTL_S, DEFAULT_TTL_S = 15, 300, 60
MAX_TASKS_LIMIT = 512


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the share needs of a live worker."""

    worker_id: str
    task_types: frozenset[str] | None  # None: any type
    max_tasks: int

    def accepts(self, task_type: str) -> bool:
        return self.task_types is None or task_type in self.task_types


@dataclass(frozen=True, slots=True)
class TaskRef:
    task_id: str
    task_type: str


def share_tasks(
    tasks: Sequence[TaskRef], workers: Sequence[WorkerSpec], holdings: Mapping[str, str]
) -> dict[str, str]:
    """task id -> worker id: who should hold each task (tasks nobody can take are left out).

    1. Targets: a greedy assignment, most constrained task type first (fewest eligible
       workers), each task to the eligible worker with the fewest tasks under its
       ``max_tasks`` (ties: who holds more of that type now, then the smallest id). Its counts per
       (worker, task type) are the fair loads, also when type filters make workers unequal.
    2. Keep: a current holder keeps its tasks of a type (in id order) up to its target for it.
    3. Fill: every other task goes to the eligible worker furthest below its target for the type,
       else to the least loaded one under its ``max_tasks``.

    Deterministic for the same input; with equal workers the loads differ by at most one, and a
    fair holding is never moved.
    """
    by_id = {w.worker_id: w for w in workers}
    caps = {w.worker_id: w.max_tasks for w in workers}
    eligible = {t.task_id: [w for w in workers if w.accepts(t.task_type)] for t in tasks}
    ordered = sorted(
        (t for t in tasks if eligible[t.task_id]),
        key=lambda t: (len(eligible[t.task_id]), t.task_type, t.task_id),
    )
    held = Counter(
        (holdings[t.task_id], t.task_type) for t in ordered if holdings.get(t.task_id) in by_id
    )
    total = dict.fromkeys(by_id, 0)
    target: dict[tuple[str, str], int] = {}
    for task in ordered:
        under = [
            w.worker_id for w in eligible[task.task_id] if total[w.worker_id] < caps[w.worker_id]
        ]
        if not under:
            continue
        # Fewest tasks first; a tie goes to who holds more of this type now (so the rounding
        # favours a current holder and nothing moves for it), then by id.
        fair = min(under, key=lambda w: (total[w], -held[w, task.task_type], w))
        total[fair] += 1
        target[fair, task.task_type] = target.get((fair, task.task_type), 0) + 1
    load = dict.fromkeys(by_id, 0)
    kept: dict[tuple[str, str], int] = {}
    share: dict[str, str] = {}
    for task in sorted(ordered, key=lambda t: t.task_id):
        owner = by_id.get(holdings.get(task.task_id, ""))
        if owner is None or owner not in eligible[task.task_id]:
            continue
        slot = (owner.worker_id, task.task_type)
        if kept.get(slot, 0) < target.get(slot, 0):
            share[task.task_id] = owner.worker_id
            kept[slot] = kept.get(slot, 0) + 1
            load[owner.worker_id] += 1
    for task in ordered:
        if task.task_id in share:
            continue

        def deficit(w: WorkerSpec, task_type: str = task.task_type) -> int:
            slot = (w.worker_id, task_type)
            return kept.get(slot, 0) - target.get(slot, 0)

        below = [w for w in eligible[task.task_id] if deficit(w) < 0]
        chosen: str | None = (
            min(below, key=lambda w: (deficit(w), w.worker_id)).worker_id
            if below
            else _least_loaded(eligible[task.task_id], load, caps)
        )
        if chosen is not None:
            share[task.task_id] = chosen
            kept[chosen, task.task_type] = kept.get((chosen, task.task_type), 0) + 1
            load[chosen] += 1
    return share


def _least_loaded(
    candidates: Iterable[WorkerSpec], load: Mapping[str, int], limit: Mapping[str, int]
) -> str | None:
    under = [w.worker_id for w in candidates if load[w.worker_id] < limit[w.worker_id]]
    return min(under, key=lambda w: (load[w], w)) if under else None


@dataclass(slots=True)
class _Lease:
    lease_id: str
    spec: WorkerSpec
    ttl_s: float
    expires_monotonic: float
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    lease_id: str
    worker_id: str
    expires_at: datetime
    tasks: list[AiTask]


class LeaseBook:
    """Live workers and task holdings, in memory; see the module docstring for the rules."""

    def __init__(self, tasks: AiTaskRegistry, clock: Clock) -> None:
        self._tasks = tasks
        self._clock = clock
        self._leases: dict[str, _Lease] = {}  # by worker id
        self._holdings: dict[str, str] = {}  # task id -> worker id

    async def acquire(
        self,
        worker_id: str,
        *,
        task_types: Iterable[str] | None = None,
        max_tasks: int = MAX_TASKS_LIMIT,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> LeaseGrant:
        """Acquire or renew ``worker_id``'s lease and rebalance its tasks (also a heartbeat)."""
        enabled = await self._tasks.list_enabled()  # before any change: no await below
        types = frozenset(task_types) if task_types is not None else None
        lease = self._renew(WorkerSpec(worker_id, types, max_tasks), ttl_s)
        held = self._rebalance(worker_id, enabled)
        return LeaseGrant(lease.lease_id, worker_id, lease.expires_at, held)

    async def heartbeat(self, worker_id: str) -> LeaseGrant:
        """``GET /ai/tasks?worker_id=``: renew with the worker's own lease terms (its type
        filter, cap and TTL), or the defaults for a worker that never leased."""
        self._expire()
        lease = self._leases.get(worker_id)
        if lease is None:
            return await self.acquire(worker_id)
        return await self.acquire(
            worker_id,
            task_types=lease.spec.task_types,
            max_tasks=lease.spec.max_tasks,
            ttl_s=lease.ttl_s,
        )

    def release(self, lease_id: str) -> None:
        """End a lease at once: its tasks are free for the next worker's call."""
        self._expire()
        for worker_id, lease in self._leases.items():
            if lease.lease_id == lease_id:
                del self._leases[worker_id]
                self._drop_holdings_of(worker_id)
                log.info("worker %s released its lease", worker_id)
                return
        raise NotFound(f"lease '{lease_id}' does not exist or has expired")

    def holder(self, task_id: str) -> str | None:
        """The live worker holding ``task_id``, if any."""
        self._expire()
        return self._holdings.get(task_id)

    def summary(self) -> list[tuple[str, datetime, int]]:
        """(worker id, lease expiry, tasks held) of every live worker, by id."""
        self._expire()
        held: dict[str, int] = {}
        for worker_id in self._holdings.values():
            held[worker_id] = held.get(worker_id, 0) + 1
        return [
            (worker_id, lease.expires_at, held.get(worker_id, 0))
            for worker_id, lease in sorted(self._leases.items())
        ]

    def _renew(self, spec: WorkerSpec, ttl_s: float) -> _Lease:
        self._expire()
        lease = self._leases.get(spec.worker_id)
        if lease is None:
            lease_id = new_id(LEASE_PREFIX)
            log.info("worker %s is live (lease %s)", spec.worker_id, lease_id)
        else:
            lease_id = lease.lease_id
        lease = _Lease(
            lease_id=lease_id,
            spec=spec,
            ttl_s=ttl_s,
            expires_monotonic=self._clock.monotonic() + ttl_s,
            expires_at=self._clock.now() + timedelta(seconds=ttl_s),
        )
        self._leases[spec.worker_id] = lease
        return lease

    def _rebalance(self, worker_id: str, enabled: Sequence[AiTask]) -> list[AiTask]:
        by_id = {t.id: t for t in enabled}
        for task_id in [t for t in self._holdings if t not in by_id]:
            del self._holdings[task_id]  # deleted or disabled tasks are held by nobody
        share = share_tasks(
            [TaskRef(t.id, t.task_type) for t in enabled],
            [lease.spec for lease in self._leases.values()],
            self._holdings,
        )
        for task_id, holder in list(self._holdings.items()):
            if holder == worker_id and share.get(task_id) != worker_id:
                del self._holdings[task_id]  # moved away: released now, taken by its next call
        for task_id, chosen in share.items():
            if chosen == worker_id and task_id not in self._holdings:
                self._holdings[task_id] = worker_id
        return [by_id[t] for t in sorted(self._holdings) if self._holdings[t] == worker_id]

    def _expire(self) -> None:
        now = self._clock.monotonic()
        for worker_id in [w for w, lease in self._leases.items() if lease.expires_monotonic <= now]:
            del self._leases[worker_id]
            self._drop_holdings_of(worker_id)
            log.warning("worker %s missed its lease renewal; its tasks are free", worker_id)

    def _drop_holdings_of(self, worker_id: str) -> None:
        for task_id in [t for t, w in self._holdings.items() if w == worker_id]:
            del self._holdings[task_id]
