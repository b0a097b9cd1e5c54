"""The reference worker: one lease, one loop per held task, under one owner TaskGroup.

::

    Worker.run(stop)
    └── TaskGroup
        ├── lease loop         acquire/renew every ttl/3; reconcile task loops with the set
        └── task loop (each)   long-poll frame -> analyse in a thread -> post detections

How the worker keeps the protocol:

* **Lease = heartbeat.** ``POST /ai/leases`` every ``ttl_s / 3`` after the previous call was
  *sent*. The lease is taken to end at send time + ``ttl_s`` on the monotonic clock (not the
  kernel's ``expires_at``: clocks of two machines differ). When no renewal succeeded by then,
  every task loop stops: the tasks may be another worker's now.
* **The lease's ``tasks`` is the complete set.** :func:`plan_tasks` diffs it with the held
  tasks: new ids start a loop, missing ids stop theirs, a changed type/config/URL restarts it
  (a new analyser), fps/width changes only update the record.
* **Never the same frame twice.** A task loop sends ``If-None-Match`` with the ETag of the last
  frame it analysed; that ETag is remembered per task id across restarts of the loop, and a
  200 carrying it again is not analysed.
* **One post per analysed frame with detections**, with ``frame_id`` (the ETag without
  quotes), ``timestamp`` and ``frame_ticket``. A transient failure retries the same body up to
  :data:`MAX_POST_ATTEMPTS` times (a post the kernel already took answers ``duplicate``);
  a 4xx is never retried.
* **Failures.** Connection errors, 5xx and 429 back off with :data:`TRANSIENT_RETRY`; a 404
  frame (no frame yet) with :data:`NO_FRAME_RETRY`; each 4xx kind, unknown task type and bad
  config is logged once. Phases are logged on transitions; the rest goes to counters.
* **Stop.** When ``stop`` is set every loop is cancelled, the lease is released
  (``DELETE``), and the counters are logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import httpx

from heldar import __version__
from heldar.clock import Clock, SystemClock
from heldar.worker.analysers import (
    ANALYSERS,
    AnalyserError,
    AnalyserFactory,
    Detection,
    UnknownTaskType,
    build_analyser,
)
from heldar.worker.client import (
    ContractViolation,
    Frame,
    KernelClient,
    KernelUnavailable,
    LeaseRequest,
    NoFrame,
    NotModified,
    TaskSpec,
    WorkerHttpError,
    event_body,
)
from heldar.worker.counters import TaskCounters, WorkerCounters
from heldar.worker.taskset import plan_tasks

log = logging.getLogger(__name__)

# Kernel rules for POST /ai/leases, checked here so a bad option fails at startup.
WORKER_ID_RULE = "must be 1 to 128 of A-Z a-z 0-9 _ . : -"
_WORKER_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MIN_TTL_S, MAX_TTL_S, DEFAULT_TTL_S = 15, 300, 60
MIN_MAX_TASKS, MAX_MAX_TASKS = 1, 512
# Renew at a third of the lease: two renewals can fail before it expires.
RENEWALS_PER_TTL = 3
# Long-poll wait per frame request: under the kernel's 30 s cap and under the ~60 s idle
# timeout of common proxies, so a quiet camera costs one request per 25 s.
LONG_POLL_WAIT_S = 25.0
# Bound on every other call, and the read margin after a long poll's wait.
REQUEST_TIMEOUT_S = 10.0
# Transient failures: detections older than the retries are stale for alerting, and a frame
# ticket may expire; after this many tries the post is dropped (counted).
MAX_POST_ATTEMPTS = 5
# ETags remembered for tasks no longer held (so a task that comes back is not re-analysed).
LAST_ETAGS_KEPT = 4096
# Distinct "logged once" messages; past this, new kinds are only counted.
REPORTED_KINDS_MAX = 512


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: ``initial_s`` doubling to ``max_s``, times ``1 +- jitter``."""

    initial_s: float
    max_s: float
    jitter: float  # fraction; workers that fail together then do not retry in lockstep

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """Delay before retry ``attempt`` (0-based); never above ``max_s``."""
        base = min(self.max_s, self.initial_s * 2.0 ** min(attempt, 32))
        return min(self.max_s, base * (1 + rng.uniform(-self.jitter, self.jitter)))


# Connection errors and 5xx: 0.5 s doubling to 30 s, +-20 % (the contract's suggestion).
TRANSIENT_RETRY = RetryPolicy(initial_s=0.5, max_s=30.0, jitter=0.2)
# No frame yet (404): a new sampler delivers within seconds; a camera that comes back is
# picked up within 10 s.
NO_FRAME_RETRY = RetryPolicy(initial_s=1.0, max_s=10.0, jitter=0.2)


class WorkerOptionError(ValueError):
    """An option the kernel would refuse; the message names it and the rule."""


def default_worker_id() -> str:
    """``<hostname>-<pid>``, with characters outside the id rule replaced by ``_``."""
    raw = f"{socket.gethostname() or 'worker'}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", raw)[-128:]


class TaskPhase(StrEnum):
    STARTING = "starting"
    ANALYSING = "analysing frames"
    NO_FRAME = "no frame available"
    UNAVAILABLE = "kernel unavailable"


# The worker ---------------------------------------------------------------------------


@dataclass(slots=True)
class _HeldTask:
    spec: TaskSpec
    loop: asyncio.Task[None]


class Worker:
    """One worker process's protocol state; :meth:`run` until ``stop`` is set.

    ``analysers`` (default :data:`~heldar.worker.analysers.ANALYSERS`) maps task types to
    factories; ``task_types`` (default: all of them) is what the lease asks for. ``transport``,
    ``rng``, ``clock`` and the retry policies are for tests.
    """

    def __init__(
        self,
        api_base: str,
        worker_id: str,
        *,
        task_types: Sequence[str] | None = None,
        max_tasks: int | None = None,
        ttl_s: int = DEFAULT_TTL_S,
        analysers: Mapping[str, AnalyserFactory] | None = None,
        long_poll_wait_s: float = LONG_POLL_WAIT_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        retry: RetryPolicy = TRANSIENT_RETRY,
        no_frame_retry: RetryPolicy = NO_FRAME_RETRY,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._analysers = dict(ANALYSERS if analysers is None else analysers)
        types = tuple(dict.fromkeys(self._analysers if task_types is None else task_types))
        _check_options(worker_id, types, max_tasks, ttl_s)
        self.api_base = api_base.rstrip("/")
        self.worker_id = worker_id
        self.task_types = types
        self._lease_request = LeaseRequest(worker_id, types, max_tasks, ttl_s)
        self._ttl_s = ttl_s
        self._wait_s = long_poll_wait_s
        self._request_timeout_s = request_timeout_s
        self._retry = retry
        self._no_frame_retry = no_frame_retry
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._clock = clock or SystemClock()
        self._transport = transport
        self.counters = WorkerCounters()
        self.lease_id: str | None = None
        self._lease_deadline: float | None = None  # monotonic
        self._held: dict[str, _HeldTask] = {}
        self._last_etags: dict[str, str] = {}
        self._reported: set[str] = set()
        self._lease_unavailable = False

    @property
    def held_tasks(self) -> dict[str, TaskSpec]:
        """The tasks this worker holds now, by id."""
        return {task_id: held.spec for task_id, held in self._held.items()}

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; then cancel every loop and release the lease."""
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(
            base_url=self.api_base,
            timeout=self._request_timeout_s,
            limits=limits,
            transport=self._transport,
            headers={"user-agent": f"heldar-worker/{__version__}"},
        ) as http:
            client = KernelClient(http, request_timeout_s=self._request_timeout_s)
            log.info(
                "worker %s: kernel %s, task types %s, lease ttl %d s",
                self.worker_id,
                self.api_base,
                ", ".join(self.task_types),
                self._ttl_s,
            )
            try:
                async with asyncio.TaskGroup() as group:
                    lease_loop = group.create_task(self._lease_loop(client, group), name="lease")
                    await stop.wait()
                    lease_loop.cancel()
                    for held in self._held.values():
                        held.loop.cancel()
            finally:
                self._held.clear()
                await self._release(client)
                self._log_counters()

    # The lease ------------------------------------------------------------------------

    async def _lease_loop(self, client: KernelClient, group: asyncio.TaskGroup) -> None:
        renew_interval_s = self._ttl_s / RENEWALS_PER_TTL
        attempt = 0
        while True:
            sent_at = self._clock.monotonic()
            self.counters.lease_calls += 1
            try:
                lease = await client.acquire_lease(self._lease_request)
            except WorkerHttpError as exc:
                self.counters.lease_failures += 1
                self._lease_failed(exc)
                await self._sleep_within_lease(self._retry.delay_s(attempt, self._rng))
                attempt += 1
                continue
            attempt = 0
            if self._lease_unavailable:
                self._lease_unavailable = False
                log.info("kernel reachable again: lease renewed")
            if lease.lease_id != self.lease_id:
                log.info("lease %s acquired (expires %s)", lease.lease_id, lease.expires_at)
            self.lease_id = lease.lease_id
            self._lease_deadline = sent_at + self._ttl_s
            await self._apply(client, group, lease.tasks)
            elapsed_s = self._clock.monotonic() - sent_at
            await asyncio.sleep(max(0.0, renew_interval_s - elapsed_s))

    def _lease_failed(self, exc: WorkerHttpError) -> None:
        if isinstance(exc, ContractViolation):
            self._report_once(exc.kind, "lease refused: %s", exc)
        elif not self._lease_unavailable:
            self._lease_unavailable = True
            log.warning("kernel unavailable (%s); retrying the lease with backoff", exc)

    async def _sleep_within_lease(self, delay_s: float) -> None:
        """Sleep, but wake at the lease's end and stop every task if it ran out meanwhile."""
        deadline = self._lease_deadline
        if deadline is None:
            await asyncio.sleep(delay_s)
            return
        await asyncio.sleep(min(delay_s, max(0.0, deadline - self._clock.monotonic())))
        if self._clock.monotonic() >= deadline:
            log.warning(
                "lease %s expired before it could be renewed: stopping %d task(s)",
                self.lease_id,
                len(self._held),
            )
            for task_id in list(self._held):
                await self._stop_task(task_id)
            self.lease_id = None
            self._lease_deadline = None

    async def _apply(
        self, client: KernelClient, group: asyncio.TaskGroup, leased: Sequence[TaskSpec]
    ) -> None:
        plan = plan_tasks(self.held_tasks, leased)
        for task_id in (*plan.stop, *(task.id for task in plan.restart)):
            await self._stop_task(task_id)
        for task in (*plan.restart, *plan.start):
            loop = group.create_task(self._task_loop(client, task), name=f"task {task.id}")
            self._held[task.id] = _HeldTask(task, loop)
        for task in plan.keep:
            self._held[task.id].spec = task
        if plan.changed:
            log.info(
                "tasks: %d new, %d gone, %d changed; holding %d",
                len(plan.start),
                len(plan.stop),
                len(plan.restart),
                len(self._held),
            )
        self._prune_etags()

    async def _stop_task(self, task_id: str) -> None:
        held = self._held.pop(task_id, None)
        if held is None:
            return
        held.loop.cancel()
        await asyncio.wait({held.loop})  # its errors, if any, reach the TaskGroup

    async def _release(self, client: KernelClient) -> None:
        lease_id, self.lease_id = self.lease_id, None
        if lease_id is None:
            return
        try:
            released = await client.release_lease(lease_id)
        except WorkerHttpError as exc:
            log.warning("lease %s not released (%s); it ends by itself", lease_id, exc)
            return
        log.info("lease %s %s", lease_id, "released" if released else "had already expired")

    # One task -------------------------------------------------------------------------

    async def _task_loop(self, client: KernelClient, task: TaskSpec) -> None:
        counters = self.counters.task(task.id)
        name = f"{task.id} ({task.task_type} on {task.camera_id}/{task.stream_profile})"
        try:
            analyser = await asyncio.to_thread(
                build_analyser, task.task_type, task.config, self._analysers
            )
        except UnknownTaskType as exc:
            self._report_once(
                f"type:{task.task_type}", "tasks of this type are held but not analysed: %s", exc
            )
            return
        except AnalyserError as exc:  # a bad config, missing OpenCV
            counters.errors += 1
            config_json = json.dumps(task.config, sort_keys=True)
            self._report_once(f"config:{task.id}:{config_json}", "task %s skipped: %s", name, exc)
            return
        phase = _PhaseLog(name)
        transient_attempt = no_frame_attempt = 0
        while True:
            last_etag = self._last_etags.get(task.id)
            try:
                result = await client.fetch_frame(
                    task.frame_url, etag=last_etag, wait_s=self._wait_s
                )
            except WorkerHttpError as exc:
                if isinstance(exc, ContractViolation):
                    counters.errors += 1
                    self._report_once(exc.kind, "task %s: frame refused: %s", name, exc)
                else:
                    phase.enter(TaskPhase.UNAVAILABLE, str(exc))
                await asyncio.sleep(self._retry.delay_s(transient_attempt, self._rng))
                transient_attempt += 1
                continue
            transient_attempt = 0
            if isinstance(result, NotModified):
                continue
            if isinstance(result, NoFrame):
                phase.enter(TaskPhase.NO_FRAME, result.reason)
                await asyncio.sleep(self._no_frame_retry.delay_s(no_frame_attempt, self._rng))
                no_frame_attempt += 1
                continue
            no_frame_attempt = 0
            if result.etag == last_etag:  # the kernel ignored If-None-Match: do not spin
                counters.errors += 1
                self._report_once(f"repeat:{task.id}", "task %s: frame repeated", name)
                await asyncio.sleep(self._no_frame_retry.delay_s(0, self._rng))
                continue
            phase.enter(TaskPhase.ANALYSING)
            self._last_etags[task.id] = result.etag  # before analysis: a bad frame is not retried
            try:
                detections = await asyncio.to_thread(analyser.analyse, result.jpeg)
            except AnalyserError as exc:
                counters.errors += 1
                kind = f"analyse:{task.id}:{type(exc).__name__}"
                self._report_once(kind, "task %s: frame skipped: %s", name, exc)
                continue
            counters.frames_analysed += 1
            if detections:
                await self._post(client, task, result, detections, counters, phase)

    async def _post(
        self,
        client: KernelClient,
        task: TaskSpec,
        frame: Frame,
        detections: Sequence[Detection],
        counters: TaskCounters,
        phase: _PhaseLog,
    ) -> None:
        body = event_body(task, frame, detections)
        for attempt in range(MAX_POST_ATTEMPTS):
            try:
                result = await client.post_detections(body)
            except ContractViolation as exc:
                counters.errors += 1
                self._report_once(exc.kind, "task %s: detections refused: %s", phase.name, exc)
                return
            except KernelUnavailable as exc:
                phase.enter(TaskPhase.UNAVAILABLE, str(exc))
                if attempt + 1 < MAX_POST_ATTEMPTS:
                    await asyncio.sleep(self._retry.delay_s(attempt, self._rng))
                continue
            phase.enter(TaskPhase.ANALYSING)
            counters.posted_frame_ids.append(body["frame_id"])
            if result.duplicate:
                counters.duplicates += 1
            else:
                counters.posts += 1
                counters.detections_ingested += result.detections_ingested
            if frame.ticket and not result.ticketed:
                counters.unticketed += 1
                self._report_once(
                    f"unticketed:{task.id}", "task %s: ticket not accepted", phase.name
                )
            return
        counters.posts_dropped += 1

    # Bookkeeping ----------------------------------------------------------------------

    def _report_once(self, kind: str, message: str, *args: object) -> None:
        """Log ``message`` at warning the first time ``kind`` happens; later ones are counted."""
        if kind in self._reported or len(self._reported) >= REPORTED_KINDS_MAX:
            return
        self._reported.add(kind)
        log.warning(message + " (reported once)", *args)

    def _prune_etags(self) -> None:
        """Keep at most :data:`LAST_ETAGS_KEPT` ETags, forgetting tasks not held first."""
        excess = len(self._last_etags) - LAST_ETAGS_KEPT
        for task_id in list(self._last_etags):
            if excess <= 0:
                break
            if task_id not in self._held:
                del self._last_etags[task_id]
                excess -= 1

    def _log_counters(self) -> None:
        totals = self.counters.totals()
        log.info("worker %s stopped: %s", self.worker_id, _format_counts(totals))
        for task_id, task in self.counters.tasks.items():
            log.debug(
                "task %s: %d frames, %d posts, %d duplicates, %d dropped, %d errors",
                task_id,
                task.frames_analysed,
                task.posts,
                task.duplicates,
                task.posts_dropped,
                task.errors,
            )


class _PhaseLog:
    """A task loop's phase; logs once per change, with the reason of the new phase."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.phase = TaskPhase.STARTING

    def enter(self, phase: TaskPhase, reason: str = "") -> None:
        if phase is self.phase:
            return
        self.phase = phase
        level = logging.WARNING if phase is TaskPhase.UNAVAILABLE else logging.INFO
        suffix = f": {reason}" if reason else ""
        log.log(level, "task %s: %s%s", self.name, phase.value, suffix)


def _format_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in counts.items())


def _check_options(
    worker_id: str, task_types: Sequence[str], max_tasks: int | None, ttl_s: int
) -> None:
    if not _WORKER_ID.match(worker_id):
        raise WorkerOptionError(f"worker id {worker_id!r} {WORKER_ID_RULE}")
    if not task_types:
        raise WorkerOptionError("at least one task type is needed")
    if max_tasks is not None and not MIN_MAX_TASKS <= max_tasks <= MAX_MAX_TASKS:
        raise WorkerOptionError(
            f"max tasks must be from {MIN_MAX_TASKS} to {MAX_MAX_TASKS} (got {max_tasks})"
        )
    if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
        raise WorkerOptionError(f"ttl must be from {MIN_TTL_S} to {MAX_TTL_S} s (got {ttl_s})")


# The process --------------------------------------------------------------------------

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_until_signalled(worker: Worker) -> None:
    """Run ``worker`` in a new event loop until SIGTERM or SIGINT; returns after a clean stop."""
    asyncio.run(_run_until_signalled(worker))


async def _run_until_signalled(worker: Worker) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s: stopping", sig.name)
            stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await worker.run(stop)
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
