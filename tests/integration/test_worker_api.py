"""Worker protocol over the real app and SQLite: leases, frame tickets, ingest rules, query.

No camera is needed: frames are published into the kernel's frame store directly (the sampler of
the loopback camera below fails to connect and never replaces them).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from heldar.api.app import create_app
from heldar.config import Settings, load_settings
from heldar.kernel import Kernel
from heldar.media.jpeg import jpeg_dimensions
from tests.support.images import lavfi_jpeg

CAMERA = "gate"
DEAD_URL = "rtsp://127.0.0.1:9/gate"  # nothing listens: the sampler never publishes
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return lavfi_jpeg("testsrc2=s=320x180")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({}, data_dir=tmp_path / "data", snapshot_scheduler_enabled=False)


async def _setup(
    client: httpx.AsyncClient, cameras: int = 1, types: tuple[str, ...] = ("motion",)
) -> list[str]:
    ids = []
    for n in range(cameras):
        camera_id = CAMERA if n == 0 else f"{CAMERA}{n}"
        body = {"id": camera_id, "name": camera_id, "main_stream_url": DEAD_URL}
        assert (await client.post("/api/v1/cameras", json=body)).status_code == 201
        for task_type in types:
            created = await client.post(
                f"/api/v1/cameras/{camera_id}/ai-tasks",
                json={"task_type": task_type, "fps": 1, "width": 320},
            )
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
    return ids


async def _lease(client: httpx.AsyncClient, worker_id: str, **extra: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/ai/leases", json={"worker_id": worker_id, **extra})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _ticketed_frame(
    kernel: Kernel, client: httpx.AsyncClient, jpeg: bytes, task: dict[str, Any]
) -> httpx.Response:
    width, height = jpeg_dimensions(jpeg)
    await kernel.frames.publish(task["camera_id"], task["stream_profile"], jpeg, width, height)
    frame = await client.get(task["frame_url"])
    assert frame.status_code == 200, frame.text
    return frame


def _post_body(frame: httpx.Response, task: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {
        "camera_id": task["camera_id"],
        "task_type": task["task_type"],
        "frame_id": frame.headers["etag"].strip('"'),
        "frame_ticket": frame.headers["x-frame-ticket"],
        "detections": [{"label": "motion", "confidence": 0.8, "bbox": [0.1, 0.2, 0.3, 0.4]}],
    }
    body.update(extra)
    return body


async def _stored(client: httpx.AsyncClient, camera_id: str = CAMERA) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/cameras/{camera_id}/detections")
    assert response.status_code == 200, response.text
    return list(response.json())


# Discovery and leases ---------------------------------------------------------------------


async def test_tasks_and_a_fair_lease_split(client: httpx.AsyncClient, kernel: Kernel) -> None:
    task_ids = await _setup(client, cameras=5, types=("motion", "person"))
    listed = (await client.get("/api/v1/ai/tasks")).json()
    assert sorted(t["id"] for t in listed) == sorted(task_ids)
    first = listed[0]
    assert set(first) == {
        "id", "camera_id", "task_type", "stream_profile", "fps", "width", "config", "frame_url"
    }  # fmt: skip
    assert first["frame_url"] == (
        f"/api/v1/cameras/{first['camera_id']}/frame?profile=sub&task={first['id']}"
    )

    a = await _lease(client, "worker-a", ttl_secs=15)
    assert a["lease_id"].startswith("lease_") and len(a["tasks"]) == 10
    b = await _lease(client, "worker-b", ttl_secs=15)
    assert b["tasks"] == []  # a holds everything until it renews
    a = await _lease(client, "worker-a", ttl_secs=15)
    b = await _lease(client, "worker-b", ttl_secs=15)
    held_a, held_b = {t["id"] for t in a["tasks"]}, {t["id"] for t in b["tasks"]}
    assert (len(held_a), len(held_b)) == (5, 5) and not held_a & held_b
    # GET /ai/tasks?worker_id= is a heartbeat answering the same share
    mine = (await client.get("/api/v1/ai/tasks", params={"worker_id": "worker-b"})).json()
    assert {t["id"] for t in mine} == held_b

    only_person = await _lease(client, "worker-p", task_types=["person"], max_tasks=2)
    assert only_person["tasks"] == []  # all held; the share moves some at the others' renewals
    assert (await client.delete(f"/api/v1/ai/leases/{a['lease_id']}")).status_code == 204
    assert (await client.delete(f"/api/v1/ai/leases/{a['lease_id']}")).status_code == 404
    await _lease(client, "worker-b", ttl_secs=15)  # gives up the person tasks that are p's share
    only_person = await _lease(client, "worker-p", task_types=["person"], max_tasks=2)
    assert [t["task_type"] for t in only_person["tasks"]] == ["person", "person"]
    system = (await client.get("/api/v1/system")).json()
    live = {w["worker_id"]: w["tasks"] for w in system["workers"]["live"]}
    assert live == {"worker-b": 8, "worker-p": 2}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "worker_id"),
        ({"worker_id": "a b"}, "worker_id"),
        ({"worker_id": "w", "max_tasks": 0}, "max_tasks"),
        ({"worker_id": "w", "max_tasks": 513}, "max_tasks"),
        ({"worker_id": "w", "ttl_secs": 14}, "ttl_secs"),
        ({"worker_id": "w", "ttl_secs": 301}, "ttl_secs"),
        ({"worker_id": "w", "task_types": ["Motion"]}, "task_types"),
        ({"worker_id": "w", "lease": 1}, "lease"),
    ],
)
async def test_bad_lease_requests_are_422(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/v1/ai/leases", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]


# Tickets and ingest -----------------------------------------------------------------------


async def test_a_ticketed_post_is_stored_once(
    client: httpx.AsyncClient, kernel: Kernel, jpeg: bytes
) -> None:
    await _setup(client)
    (task,) = (await _lease(client, "w1"))["tasks"]
    frame = await _ticketed_frame(kernel, client, jpeg, task)
    body = _post_body(frame, task, event={"event_type": "line_crossed", "payload": {"n": 1}})
    first = await client.post("/api/v1/ai/events", json=body)
    assert first.status_code == 200, first.text
    assert first.json() == {"detections_ingested": 1, "ticketed": True, "duplicate": False}
    again = await client.post("/api/v1/ai/events", json=body)
    assert again.json() == {"detections_ingested": 0, "ticketed": True, "duplicate": True}
    stored = await _stored(client)
    assert len(stored) == 1
    (row,) = stored
    assert row["task_id"] == task["id"] and row["frame_id"] == body["frame_id"]
    assert row["bbox"] == [0.1, 0.2, 0.3, 0.4]
    assert row["timestamp"].startswith(frame.headers["x-frame-captured-at"][:19])
    events = (await client.get("/api/v1/events", params={"event_type": "line_crossed"})).json()
    assert len(events) == 1 and events[0]["payload"]["frame_id"] == body["frame_id"]


async def test_no_ticket_for_a_task_nobody_holds(
    client: httpx.AsyncClient, kernel: Kernel, jpeg: bytes
) -> None:
    (task_id,) = await _setup(client)
    task = next(t for t in (await client.get("/api/v1/ai/tasks")).json() if t["id"] == task_id)
    frame = await _ticketed_frame(kernel, client, jpeg, task)
    assert "x-frame-ticket" not in frame.headers
    wrong = await client.get(f"/api/v1/cameras/{CAMERA}/frame?profile=main&task={task_id}")
    assert wrong.status_code == 409 and "frame_url" in wrong.json()["error"]


async def test_forged_expired_and_other_camera_tickets_store_nothing(
    client: httpx.AsyncClient, kernel: Kernel, jpeg: bytes
) -> None:
    await _setup(client, cameras=2)
    tasks = (await _lease(client, "w1"))["tasks"]
    task = next(t for t in tasks if t["camera_id"] == CAMERA)
    frame = await _ticketed_frame(kernel, client, jpeg, task)
    good = _post_body(frame, task)
    payload, signature = good["frame_ticket"].split(".")
    forged = {**good, "frame_ticket": f"{payload}.{signature[::-1]}"}
    expired_token = kernel.tickets.issue(
        task_id=task["id"],
        task_type="motion",
        camera_id=CAMERA,
        frame_id=good["frame_id"],
        captured_at=kernel.clock.now(),
        now=kernel.clock.now() - timedelta(hours=1),
    )
    expired = {**good, "frame_ticket": expired_token}
    other_camera = {**good, "camera_id": f"{CAMERA}1"}
    other_frame = {**good, "frame_id": "99-000000000000"}
    for body, status in ((forged, 401), (expired, 401), (other_camera, 409), (other_frame, 409)):
        response = await client.post("/api/v1/ai/events", json=body)
        assert response.status_code == status, (body, response.text)
    assert await _stored(client) == [] and await _stored(client, f"{CAMERA}1") == []
    assert (await client.post("/api/v1/ai/events", json=good)).status_code == 200


async def test_ticketless_posts_under_warn(client: httpx.AsyncClient) -> None:
    await _setup(client)
    body = {
        "camera_id": CAMERA,
        "task_type": "motion",
        "frame_id": "f1",
        "detections": [{"label": "car", "confidence": 1, "bbox": [0, 0, 1, 1], "track_id": "7"}],
    }
    response = await client.post("/api/v1/ai/events", json=body)
    assert response.json() == {"detections_ingested": 1, "ticketed": False, "duplicate": False}
    assert (await client.post("/api/v1/ai/events", json=body)).json()["duplicate"] is True
    unknown = await client.post("/api/v1/ai/events", json={**body, "camera_id": "nope"})
    assert unknown.status_code == 404


async def test_enforce_refuses_ticketless_posts(tmp_path: Path) -> None:
    settings = load_settings(
        {}, data_dir=tmp_path / "data", ingest_provenance="enforce", ai_enabled=False
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kernel") as client:
            await _setup(client)
            body = {"camera_id": CAMERA, "task_type": "motion", "detections": []}
            refused = await client.post("/api/v1/ai/events", json=body)
            assert refused.status_code == 401
            assert "HELDAR_INGEST_PROVENANCE=enforce" in refused.json()["error"]
            assert await _stored(client) == []


def _detection(**overrides: Any) -> dict[str, Any]:
    return {"label": "x", "confidence": 0.5, "bbox": [0.1, 0.1, 0.2, 0.2], **overrides}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"detections": [_detection(bbox=[0.9, 0.1, 0.2, 0.2])]}, "bbox"),
        ({"detections": [_detection(bbox=[0.1, 0.95, 0.2, 0.1])]}, "bbox"),
        ({"detections": [_detection(bbox=[-0.1, 0.1, 0.2, 0.2])]}, "bbox"),
        ({"detections": [_detection(bbox=[0.1, 0.1, 0.2])]}, "bbox"),
        ({"detections": [_detection(bbox=[0.1, 0.1, 0.2, 1.5])]}, "bbox"),
        ({"detections": [_detection(confidence=1.01)]}, "confidence"),
        ({"detections": [_detection(label="")]}, "label"),
        ({"detections": [_detection()] * 1001}, "detections"),
        ({"detections": [_detection(attributes={"a": "x" * 17_000})]}, "attributes"),
        ({"event": {"event_type": "x", "payload": {"a": "x" * 70_000}}}, "payload"),
        ({"event": {"event_type": "sampler_offline"}}, "event_type"),
        ({"event": {"event_type": "disk_low"}}, "event_type"),
        ({"event": {"event_type": "x", "severity": "critical"}}, "severity"),
        ({"camera_id": "../etc"}, "camera_id"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_posts_are_422_and_store_nothing(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    await _setup(client)
    body = {"camera_id": CAMERA, "task_type": "motion", "detections": [], **change}
    response = await client.post("/api/v1/ai/events", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]
    assert await _stored(client) == []


async def test_oversize_and_malformed_bodies(client: httpx.AsyncClient) -> None:
    await _setup(client)
    attributes = {"blob": "x" * (8 * MiB)}
    body = {
        "camera_id": CAMERA,
        "task_type": "motion",
        "detections": [_detection(attributes=attributes)],
    }
    big = await client.post("/api/v1/ai/events", content=json.dumps(body))
    assert big.status_code == 413 and "8388608" in big.json()["error"]

    async def chunked() -> Any:  # no Content-Length: the limit holds while streaming
        yield b'{"camera_id": "gate", "task_type": "motion", "detections": [], "x": "'
        for _ in range(9):
            yield b"y" * MiB
        yield b'"}'

    streamed = await client.post("/api/v1/ai/events", content=chunked())
    assert streamed.status_code == 413
    broken = await client.post("/api/v1/ai/events", content=b'{"camera_id": ')
    assert broken.status_code == 400
    assert await _stored(client) == []


async def test_detections_query(client: httpx.AsyncClient, kernel: Kernel) -> None:
    await _setup(client)
    base = kernel.clock.now().replace(microsecond=0)
    for n, label in enumerate(["car", "person", "car", "car"]):
        body = {
            "camera_id": CAMERA,
            "task_type": "motion",
            "timestamp": (base + timedelta(seconds=n)).isoformat(),
            "detections": [_detection(label=label)],
        }
        assert (await client.post("/api/v1/ai/events", json=body)).status_code == 200
    everything = await _stored(client)
    assert [d["label"] for d in everything] == ["car", "car", "person", "car"]  # newest first
    cars = await client.get(
        f"/api/v1/cameras/{CAMERA}/detections",
        params={
            "label": "car",
            "from": (base + timedelta(seconds=1)).isoformat(),
            "to": (base + timedelta(seconds=3)).isoformat(),
            "limit": 1,
        },
    )
    assert [d["timestamp"] for d in cars.json()] == [
        (base + timedelta(seconds=3)).isoformat().replace("+00:00", "Z")
    ]
    for params in ({"limit": 0}, {"limit": 5001}, {"from": "2026-11-21T12:00:00"}):
        bad = await client.get(f"/api/v1/cameras/{CAMERA}/detections", params=params)
        assert bad.status_code == 422, params
    assert (await client.get("/api/v1/cameras/nope/detections")).status_code == 404
