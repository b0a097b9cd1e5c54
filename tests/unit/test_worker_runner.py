"""The worker's pure parts, and its loops against an in-process fake kernel (no network).

The fake kernel is an ``httpx.MockTransport`` that keeps the wire contract's rules (lease,
long-polled frames with ETags, events with duplicate detection); the end-to-end test against
the real kernel lives with the integration tests.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from heldar.worker.analysers import Analyser, Detection
from heldar.worker.client import (
    MAX_DETECTIONS_PER_POST,
    Frame,
    TaskSpec,
    event_body,
    frame_id_from_etag,
)
from heldar.worker.runner import (
    MAX_POST_ATTEMPTS,
    TRANSIENT_RETRY,
    RetryPolicy,
    Worker,
    WorkerOptionError,
    default_worker_id,
)
from heldar.worker.taskset import plan_tasks
from tests.support.polling import eventually

# Retries short enough for a unit test; the schedule itself is tested on TRANSIENT_RETRY.
FAST_RETRY = RetryPolicy(initial_s=0.01, max_s=0.05, jitter=0.2)
WAIT_S = 5.0


def task(task_id: str = "ai_1", **changes: Any) -> TaskSpec:
    fields: dict[str, Any] = {
        "id": task_id,
        "camera_id": "lobby",
        "task_type": "fake",
        "stream_profile": "sub",
        "fps": 2.0,
        "width": 640,
        "config": {},
        "frame_url": f"/api/v1/cameras/lobby/frame?profile=sub&task={task_id}",
    }
    fields.update(changes)
    return TaskSpec(**fields)


# Backoff --------------------------------------------------------------------------------


def test_transient_backoff_doubles_from_half_a_second_to_thirty_with_jitter() -> None:
    rng = random.Random(7)
    delays = [TRANSIENT_RETRY.delay_s(attempt, rng) for attempt in range(10)]
    for attempt, delay in enumerate(delays):
        base = min(30.0, 0.5 * 2**attempt)
        assert base * 0.8 <= delay <= min(30.0, base * 1.2), (attempt, delay)
    assert TRANSIENT_RETRY.delay_s(10_000, rng) <= 30.0  # no overflow, still capped


def test_backoff_is_deterministic_for_a_seed_and_jittered_between_seeds() -> None:
    schedule = [TRANSIENT_RETRY.delay_s(a, random.Random(1)) for a in range(6)]
    again = [TRANSIENT_RETRY.delay_s(a, random.Random(1)) for a in range(6)]
    other = [TRANSIENT_RETRY.delay_s(a, random.Random(2)) for a in range(6)]
    assert schedule == again
    assert schedule != other


# Task-set reconciliation -----------------------------------------------------------------


def test_plan_starts_new_stops_gone_and_keeps_the_rest() -> None:
    held = {"ai_1": task("ai_1"), "ai_2": task("ai_2")}
    plan = plan_tasks(held, [task("ai_2"), task("ai_3")])
    assert [t.id for t in plan.start] == ["ai_3"]
    assert plan.stop == ("ai_1",)
    assert plan.restart == ()
    assert [t.id for t in plan.keep] == ["ai_2"]
    assert plan.changed


def test_plan_restarts_when_what_is_analysed_changes() -> None:
    held = {"ai_1": task("ai_1")}
    for change in (
        {"config": {"threshold": 40}},
        {"task_type": "person"},
        {"camera_id": "yard"},
        {"stream_profile": "main"},
        {"frame_url": "/api/v1/cameras/lobby/frame?profile=main&task=ai_1"},
    ):
        plan = plan_tasks(held, [task("ai_1", **change)])
        assert [t.id for t in plan.restart] == ["ai_1"], change
        assert plan.start == () and plan.stop == ()


def test_plan_only_records_fps_and_width_changes() -> None:
    plan = plan_tasks({"ai_1": task("ai_1")}, [task("ai_1", fps=0.5, width=320)])
    assert not plan.changed
    assert plan.keep[0].fps == 0.5


def test_plan_for_an_empty_lease_stops_everything_and_a_repeated_id_counts_once() -> None:
    assert plan_tasks({"ai_1": task("ai_1")}, []).stop == ("ai_1",)
    plan = plan_tasks({}, [task("ai_1", fps=1), task("ai_1", fps=3)])
    assert [(t.id, t.fps) for t in plan.start] == [("ai_1", 3)]


# Wire helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("etag", "frame_id"),
    [('"12-ab3f09c1d2e4"', "12-ab3f09c1d2e4"), ('W/"7-x"', "7-x"), ("bare", "bare"), ('""', "")],
)
def test_frame_id_is_the_etag_without_quotes(etag: str, frame_id: str) -> None:
    assert frame_id_from_etag(etag) == frame_id


def frame(etag: str = '"3-abc"', ticket: str | None = "tkt", captured: str | None = None) -> Frame:
    return Frame(b"\xff\xd8\xff\xd9", etag, captured, ticket)


def test_event_body_carries_frame_id_ticket_and_timestamp() -> None:
    found = [
        Detection("motion", 0.75, (0.1, 0.2, 0.3, 0.4), attributes={"changed_fraction": 0.01}),
        Detection("person", 0.9, (0.0, 0.0, 1.0, 1.0), track_id="t1"),
    ]
    body = event_body(task(), frame(captured="2026-01-02T03:04:05.678Z"), found)
    assert body == {
        "camera_id": "lobby",
        "task_type": "fake",
        "frame_id": "3-abc",
        "frame_ticket": "tkt",
        "timestamp": "2026-01-02T03:04:05.678Z",
        "detections": [
            {
                "label": "motion",
                "confidence": 0.75,
                "bbox": [0.1, 0.2, 0.3, 0.4],
                "attributes": {"changed_fraction": 0.01},
            },
            {"label": "person", "confidence": 0.9, "bbox": [0.0, 0.0, 1.0, 1.0], "track_id": "t1"},
        ],
    }
    json.dumps(body)  # plain JSON


def test_event_body_leaves_out_what_the_frame_did_not_have() -> None:
    body = event_body(task(), frame(ticket=None), [Detection("x", 1.0, (0, 0, 1, 1))])
    assert "frame_ticket" not in body and "timestamp" not in body


def test_event_body_keeps_the_most_confident_detections_up_to_the_limit() -> None:
    many = [Detection("p", (i % 997) / 997, (0, 0, 1, 1)) for i in range(1500)]
    body = event_body(task(), frame(), many)
    kept = [d["confidence"] for d in body["detections"]]
    assert len(kept) == MAX_DETECTIONS_PER_POST
    assert min(kept) >= sorted((d.confidence for d in many), reverse=True)[999]


# Options ----------------------------------------------------------------------------------


def test_default_worker_id_follows_the_kernel_rule() -> None:
    Worker("http://127.0.0.1:1", default_worker_id())  # accepted


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"worker_id": "has space"}, "worker id"),
        ({"worker_id": "x" * 129}, "worker id"),
        ({"worker_id": "w", "ttl_s": 10}, "ttl must be from 15 to 300"),
        ({"worker_id": "w", "max_tasks": 0}, "max tasks must be from 1 to 512"),
        ({"worker_id": "w", "task_types": []}, "at least one task type"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkerOptionError, match=message):
        Worker("http://127.0.0.1:1", **kwargs)


# The loops against a fake kernel ---------------------------------------------------------


class FakeKernel:
    """The kernel side of the contract, in memory: one lease, frames per task, events."""

    def __init__(self, tasks: list[TaskSpec], frames: int) -> None:
        self.tasks = tasks
        self.frames = {t.id: [f'"{n}-{t.id}"' for n in range(1, frames + 1)] for t in tasks}
        self.if_none_match: list[str | None] = []
        self.events: list[dict[str, Any]] = []
        self.lease_bodies: list[dict[str, Any]] = []
        self.released: list[str] = []
        self.fail_events = 0  # answer this many event posts with 503
        self.no_frame_answers = 0  # answer this many frame requests with 404
        self.seen_frame_ids: set[str] = set()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if path == "/api/v1/ai/leases" and method == "POST":
            self.lease_bodies.append(json.loads(request.content))
            tasks = [t.model_dump() for t in self.tasks]
            lease = {"lease_id": "lease_1", "worker_id": "w", "expires_at": "x", "tasks": tasks}
            return httpx.Response(200, json=lease)
        if path.startswith("/api/v1/ai/leases/") and method == "DELETE":
            self.released.append(path.rsplit("/", 1)[1])
            return httpx.Response(204)
        if path.endswith("/frame"):
            return await self.frame(request)
        if path == "/api/v1/ai/events":
            if self.fail_events:
                self.fail_events -= 1
                return httpx.Response(503, json={"error": "busy"})
            body = json.loads(request.content)
            self.events.append(body)
            duplicate = body["frame_id"] in self.seen_frame_ids
            self.seen_frame_ids.add(body["frame_id"])
            if duplicate:
                return httpx.Response(200, json={"detections_ingested": 0, "duplicate": True})
            n = len(body["detections"])
            return httpx.Response(200, json={"detections_ingested": n, "ticketed": True})
        return httpx.Response(404, json={"error": f"no route {method} {path}"})

    async def frame(self, request: httpx.Request) -> httpx.Response:
        assert request.url.params["wait"] == f"{WAIT_S:g}"
        if self.no_frame_answers:
            self.no_frame_answers -= 1
            return httpx.Response(404, json={"error": "no frame yet: sampler connecting"})
        etags = self.frames[request.url.params["task"]]
        known = request.headers.get("if-none-match")
        self.if_none_match.append(known)
        after = etags.index(known) + 1 if known in etags else 0
        if after >= len(etags):
            await asyncio.sleep(0.02)  # a long poll that ends without a newer frame
            return httpx.Response(304, headers={"ETag": etags[-1]})
        etag = etags[after]
        headers = {
            "ETag": etag,
            "x-frame-captured-at": "2026-01-02T03:04:05.000Z",
            "x-frame-ticket": f"ticket-{etag.strip(chr(34))}",
        }
        return httpx.Response(200, content=etag.encode(), headers=headers)


class RecordingAnalyser:
    """One detection per frame; remembers every frame it was given."""

    def __init__(self, seen: list[bytes]) -> None:
        self.seen = seen

    def analyse(self, jpeg: bytes) -> list[Detection]:
        self.seen.append(jpeg)
        return [Detection("thing", 0.5, (0.25, 0.25, 0.5, 0.5))]


def recording_factory(seen: list[bytes]) -> Mapping[str, Any]:
    def build(config: Mapping[str, Any]) -> Analyser:
        return RecordingAnalyser(seen)

    return {"fake": build}


async def run_until(worker: Worker, condition: Any, what: str) -> None:
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await eventually(_async(condition), 5.0, what)
    finally:
        stop.set()
        await asyncio.wait_for(running, 5.0)


def _async(condition: Any) -> Any:
    async def check() -> Any:
        return condition()

    return check


def fake_worker(kernel: FakeKernel, seen: list[bytes]) -> Worker:
    return Worker(
        "http://kernel.test",
        "w",
        analysers=recording_factory(seen),
        long_poll_wait_s=WAIT_S,
        retry=FAST_RETRY,
        no_frame_retry=FAST_RETRY,
        rng=random.Random(0),
        transport=kernel.transport(),
    )


async def test_worker_analyses_each_frame_once_and_posts_it_with_its_ticket() -> None:
    kernel = FakeKernel([task("ai_1")], frames=3)
    seen: list[bytes] = []
    worker = fake_worker(kernel, seen)
    await run_until(worker, lambda: len(kernel.if_none_match) >= 5, "long polls after 3 frames")

    assert seen == [b'"1-ai_1"', b'"2-ai_1"', b'"3-ai_1"']  # each frame once, in order
    assert kernel.if_none_match[:4] == [None, '"1-ai_1"', '"2-ai_1"', '"3-ai_1"']
    assert set(kernel.if_none_match[3:]) == {'"3-ai_1"'}  # then long polls, no re-analysis
    assert [e["frame_id"] for e in kernel.events] == ["1-ai_1", "2-ai_1", "3-ai_1"]
    assert [e["frame_ticket"] for e in kernel.events] == [
        "ticket-1-ai_1",
        "ticket-2-ai_1",
        "ticket-3-ai_1",
    ]
    assert kernel.events[0]["timestamp"] == "2026-01-02T03:04:05.000Z"
    assert kernel.lease_bodies[0] == {"worker_id": "w", "task_types": ["fake"], "ttl_secs": 60}
    assert kernel.released == ["lease_1"]
    counters = worker.counters.task("ai_1")
    assert (counters.frames_analysed, counters.posts, counters.duplicates) == (3, 3, 0)
    assert list(counters.posted_frame_ids) == ["1-ai_1", "2-ai_1", "3-ai_1"]
    assert worker.lease_id is None and worker.held_tasks == {}


async def test_a_transient_post_failure_is_retried_with_the_same_frame_id() -> None:
    kernel = FakeKernel([task("ai_1")], frames=1)
    kernel.fail_events = MAX_POST_ATTEMPTS - 1
    seen: list[bytes] = []
    worker = fake_worker(kernel, seen)
    await run_until(worker, lambda: kernel.events, "the post after the 503s")
    assert [e["frame_id"] for e in kernel.events] == ["1-ai_1"]
    assert worker.counters.task("ai_1").posts == 1
    assert len(seen) == 1


async def test_no_frame_yet_backs_off_then_frames_flow() -> None:
    kernel = FakeKernel([task("ai_1")], frames=2)
    kernel.no_frame_answers = 3
    seen: list[bytes] = []
    worker = fake_worker(kernel, seen)
    await run_until(worker, lambda: len(kernel.events) == 2, "both frames posted")
    assert len(seen) == 2


async def test_unknown_task_types_are_skipped_and_others_run() -> None:
    kernel = FakeKernel([task("ai_1"), task("ai_2", task_type="face")], frames=1)
    seen: list[bytes] = []
    worker = fake_worker(kernel, seen)
    await run_until(worker, lambda: kernel.events, "the known task's post")
    assert {e["task_type"] for e in kernel.events} == {"fake"}
    assert "ai_2" in worker.counters.tasks and worker.counters.task("ai_2").frames_analysed == 0


async def test_worker_stops_cleanly_when_the_kernel_is_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    worker = Worker(
        "http://kernel.test",
        "w",
        analysers=recording_factory([]),
        retry=FAST_RETRY,
        transport=httpx.MockTransport(refuse),
    )
    await run_until(worker, lambda: worker.counters.lease_failures >= 3, "lease retries")
    assert worker.lease_id is None
