"""SPEC §6 live snapshot ``GET /cameras/{id}/snapshot`` against the real RTSP test camera.

One kernel (in process, real ffmpeg and SQLite) with one media-job slot serves the module:

- ``front``: a sampler at 5 fps, 320 wide: served from the sampler in milliseconds;
- ``still``: no sampler: a grab, shared by concurrent requests;
- ``down``: a closed loopback port, with credentials that must never show;
- ``hang``: an RTSP server that never answers, to hold the only slot (503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import httpx
import pytest
import pytest_asyncio

from heldar.api.app import create_app
from heldar.config import load_settings
from heldar.kernel import Kernel
from heldar.media.jpeg import jpeg_dimensions
from tests.support.polling import eventually
from tests.support.rtsp_camera import RtspTestCamera
from tests.support.silent_rtsp import SilentRtspServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

FIRST_FRAME_S = 20.0
SAMPLER_WIDTH = 320
SECRET = "s3cret-pa55"
# "Answers in milliseconds": in-process, one frame copied from memory. Generous for a loaded CI
# machine; the measured figure is printed.
WARM_ANSWER_S = 0.25
GRAB_ANSWER_S = 20.0


@dataclass
class Live:
    kernel: Kernel
    client: httpx.AsyncClient
    hang: SilentRtspServer


def closed_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when we leave: connection refused


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(
    rtsp_camera: RtspTestCamera, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Live]:
    settings = load_settings(
        {},
        data_dir=tmp_path_factory.mktemp("live_snapshot") / "data",
        media_job_concurrency=1,
        snapshot_scheduler_enabled=False,
    )
    app = create_app(settings)
    with SilentRtspServer(mode="mute") as hang:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://kernel") as client:
                cameras = {
                    "front": rtsp_camera.url,
                    "still": rtsp_camera.url,
                    "down": f"rtsp://viewer:{SECRET}@127.0.0.1:{closed_loopback_port()}/x",
                    "hang": hang.url,
                }
                for camera_id, url in cameras.items():
                    body = {"id": camera_id, "name": camera_id, "main_stream_url": url}
                    assert (await client.post("/api/v1/cameras", json=body)).status_code == 201
                task = await client.post(
                    "/api/v1/cameras/front/ai-tasks",
                    json={"task_type": "motion", "fps": 5, "width": SAMPLER_WIDTH},
                )
                assert task.status_code == 201
                yield Live(app.state.kernel, client, hang)


async def test_with_a_sampler_the_snapshot_comes_from_it_in_milliseconds(live: Live) -> None:
    async def sampled() -> bool:
        return live.kernel.frames.latest("front", "sub") is not None

    await eventually(sampled, FIRST_FRAME_S, "a first sampler frame")
    grabs_before = live.kernel.grabber.grabs_total
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        response = await live.client.get("/api/v1/cameras/front/snapshot")
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        assert response.headers["x-snapshot-source"] == "sampler"
        assert response.headers["content-type"] == "image/jpeg"
        assert jpeg_dimensions(response.content) == (SAMPLER_WIDTH, 180)
        latest = live.kernel.frames.latest("front", "sub")
        assert latest is not None
    timings.sort()
    print(f"warm live snapshot: p50 {timings[10] * 1000:.1f} ms, max {timings[-1] * 1000:.1f} ms")
    assert timings[10] < WARM_ANSWER_S
    assert live.kernel.grabber.grabs_total == grabs_before  # no ffmpeg was started


async def test_max_age_zero_or_no_sampler_means_a_full_resolution_grab(live: Live) -> None:
    for camera_id, params in (("front", {"max_age_ms": 0}), ("still", {})):
        started = time.perf_counter()
        before = live.kernel.clock.now()
        response = await live.client.get(f"/api/v1/cameras/{camera_id}/snapshot", params=params)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.text
        assert response.headers["x-snapshot-source"] == "grab"
        assert jpeg_dimensions(response.content) == (640, 360)
        captured = datetime.fromisoformat(response.headers["x-snapshot-captured-at"])
        assert before <= captured <= live.kernel.clock.now()
        print(f"cold grab of {camera_id}: {elapsed:.2f} s")
        assert elapsed < GRAB_ANSWER_S


async def test_concurrent_requests_share_one_grab(live: Live) -> None:
    before = live.kernel.grabber.grabs_total
    responses = await asyncio.gather(
        *(live.client.get("/api/v1/cameras/still/snapshot") for _ in range(6))
    )
    assert [r.status_code for r in responses] == [200] * 6
    assert {r.headers["x-snapshot-source"] for r in responses} == {"grab"}
    assert len({r.content for r in responses}) == 1  # one picture, handed to all six
    assert live.kernel.grabber.grabs_total == before + 1


async def test_a_down_camera_is_a_clear_503_without_credentials(live: Live) -> None:
    response = await live.client.get("/api/v1/cameras/down/snapshot")
    assert response.status_code == 503
    body = response.json()
    assert "camera 'down'" in body["error"]
    assert "refused" in body["error"].lower()
    assert SECRET not in response.text and "viewer:" not in response.text
    assert "rtsp://***@127.0.0.1" in body["error"]


async def test_disabled_and_unknown_cameras(live: Live) -> None:
    await live.client.patch("/api/v1/cameras/still", json={"enabled": False})
    try:
        disabled = await live.client.get("/api/v1/cameras/still/snapshot")
        assert disabled.status_code == 409 and "disabled" in disabled.json()["error"]
    finally:
        await live.client.patch("/api/v1/cameras/still", json={"enabled": True})
    assert (await live.client.get("/api/v1/cameras/nope/snapshot")).status_code == 404
    bad = await live.client.get("/api/v1/cameras/still/snapshot", params={"max_age_ms": -1})
    assert bad.status_code == 422 and "max_age_ms" in bad.json()["error"]


async def test_store_keeps_the_live_snapshot(live: Live) -> None:
    before = live.kernel.clock.now()
    response = await live.client.get("/api/v1/cameras/front/snapshot", params={"store": "true"})
    assert response.status_code == 200
    snapshot_id = response.headers["x-snapshot-id"]
    stored = await live.kernel.snapshots.get(snapshot_id)
    assert stored.source.value == response.headers["x-snapshot-source"]
    assert before <= stored.taken_at <= live.kernel.clock.now()
    assert live.kernel.snapshots.file_path(stored).read_bytes() == response.content
    assert response.headers["location"] == stored.url


async def test_past_the_media_job_limit_the_answer_is_503_with_retry_after(live: Live) -> None:
    """The module's only slot is held by a grab that hangs; a second camera is refused at once."""
    hanging = asyncio.create_task(live.client.get("/api/v1/cameras/hang/snapshot"))

    async def slot_taken() -> bool:
        return live.kernel.media_jobs.running == 1

    await eventually(slot_taken, 10, "the hanging grab to hold the slot")
    started = time.perf_counter()
    refused = await live.client.get("/api/v1/cameras/still/snapshot")
    assert time.perf_counter() - started < 1.0
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert "HELDAR_MEDIA_JOB_CONCURRENCY" in refused.json()["error"]
    # A sampler frame needs no slot.
    assert (await live.client.get("/api/v1/cameras/front/snapshot")).status_code == 200
    live.hang.stop()  # the camera hangs up: the grab fails and frees the slot
    failed = await asyncio.wait_for(hanging, GRAB_ANSWER_S)
    assert failed.status_code == 503
    assert live.kernel.media_jobs.running == 0


async def test_system_summarises_samplers_snapshots_and_media_jobs(live: Live) -> None:
    system = (await live.client.get("/api/v1/system")).json()
    assert system["samplers"] == {"total": 1, "by_state": {"sampling": 1}}
    stored, total_bytes = await live.kernel.snapshots.usage()
    assert stored >= 1  # the live snapshot kept by test_store_keeps_the_live_snapshot
    snapshots = system["snapshots"]
    assert (snapshots["count"], snapshots["total_bytes"]) == (stored, total_bytes)
    assert (snapshots["media_jobs_running"], snapshots["media_jobs_limit"]) == (0, 1)
    assert snapshots["schedule_fires_total"] == 0  # the scheduler is off in this module
