"""SPEC §5/§7 frames over HTTP: ``GET /cameras/{id}/frame`` and ``GET /ai/samplers``, live.

One kernel (in process, real SQLite, real ffmpeg) serves the whole module, sampling the session
RTSP camera (640x360 @ 15 fps) through four cameras that all start at once:

- ``front``: a task at 5 fps, 320 wide: headers, body, long polls that must return soon;
- ``slow``: a task at 0.5 fps: a frame that cannot advance for ~2 s, for 304s and timeouts;
- ``cycle``: restarted, removed and re-added by one test (ETags are never reused);
- ``bare`` (no task) and ``off`` (disabled, with a task): the 404 messages.

Waiting is a poll with a deadline, or the API's own long poll. ffmpeg's constant-frame-rate
output starts with a short burst of duplicates (it fills from the stream start to the first
decodable frame), so tests that need a frame that "cannot advance" first wait for a frame that
came a whole interval after its predecessor: the next one is then an interval away.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil
import pytest
import pytest_asyncio

from heldar.api.app import create_app
from heldar.config import load_settings
from heldar.kernel import Kernel
from heldar.media.jpeg import jpeg_dimensions
from tests.support.binaries import ffmpeg_bin
from tests.support.polling import eventually
from tests.support.rtsp_camera import RtspTestCamera

pytestmark = pytest.mark.asyncio(loop_scope="module")


FIRST_FRAME_S = 20.0  # ffmpeg start, RTSP handshake, next IDR, probing: about 3-5 s
PROMPT_S = 2.0  # what the kernel answers "at once" (far below any long-poll wait used here)
WIDTH = 320
HEIGHT = 180  # 640x360 scaled to 320 wide
FRONT_FPS = 5.0
SLOW_FPS = 0.5  # a frame every 2 s
SLOW_GAP_S = 1.5  # a frame this long after its predecessor is past the start-up burst
RFC3339_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ETAG = re.compile(r'^"(\d+)-([0-9a-f]{12})"$')
SAMPLER_FIELDS = {
    "camera_id",
    "profile",
    "state",
    "fps",
    "width",
    "requested_fps",
    "requested_width",
    "frame_age_ms",
    "frames_total",
    "restarts",
    "last_error",
    "pid",
    "pids",
    "decode_mode",
    "keyframe_interval_s",
    "gop_prefix",
    "receiver",
}


@dataclass
class Live:
    kernel: Kernel
    client: httpx.AsyncClient
    task_ids: dict[str, str]  # camera id -> its task id


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(
    rtsp_camera: RtspTestCamera, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Live]:
    # Decoding every frame keeps the cadence these tests time exactly (auto would move the
    # 0.5 fps sampler to keyframes once it learns the GOP: test_decode_modes covers that).
    settings = load_settings(
        {}, data_dir=tmp_path_factory.mktemp("frame_api") / "data", ai_decode_mode="all"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kernel") as client:
            task_ids: dict[str, str] = {}
            for camera_id, fps, enabled in (
                ("front", FRONT_FPS, True),
                ("slow", SLOW_FPS, True),
                ("cycle", FRONT_FPS, True),
                ("off", FRONT_FPS, False),
            ):
                await _create_camera(client, camera_id, rtsp_camera.url, enabled=enabled)
                task = await client.post(
                    f"/api/v1/cameras/{camera_id}/ai-tasks",
                    json={"task_type": "motion", "fps": fps, "width": WIDTH},
                )
                assert task.status_code == 201, task.text
                task_ids[camera_id] = task.json()["id"]
            await _create_camera(client, "bare", rtsp_camera.url)
            yield Live(app.state.kernel, client, task_ids)
    # Shutdown stopped and reaped every sampler's ffmpeg (the camera's keeper is not ours).
    keepers = set(rtsp_camera.keeper_pids)
    left = [
        p for p in psutil.Process().children(recursive=True)
        if "ffmpeg" in p.name() and p.pid not in keepers
    ]  # fmt: skip
    assert left == [], f"ffmpeg processes outlived the kernel: {left}"


async def _create_camera(
    client: httpx.AsyncClient, camera_id: str, url: str, *, enabled: bool = True
) -> None:
    body = {"id": camera_id, "name": camera_id, "main_stream_url": url, "enabled": enabled}
    created = await client.post("/api/v1/cameras", json=body)
    assert created.status_code == 201, created.text


# -- helpers ----------------------------------------------------------------------------------


def frame_url(camera_id: str) -> str:
    return f"/api/v1/cameras/{camera_id}/frame"


async def get_frame(
    client: httpx.AsyncClient,
    camera_id: str,
    etag: str | None = None,
    wait: float | None = None,
    **params: Any,
) -> httpx.Response:
    headers = {"If-None-Match": etag} if etag is not None else {}
    if wait is not None:
        params["wait"] = wait
    return await client.get(frame_url(camera_id), headers=headers, params=params)


async def first_frame(client: httpx.AsyncClient, camera_id: str) -> httpx.Response:
    async def probe() -> httpx.Response | None:
        response = await get_frame(client, camera_id)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return response

    return await eventually(probe, FIRST_FRAME_S, f"a first frame of {camera_id}")


def captured_at(response: httpx.Response) -> datetime:
    text = response.headers["x-frame-captured-at"]
    assert RFC3339_MS_Z.match(text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def steady_frame(
    client: httpx.AsyncClient, camera_id: str, min_gap_s: float, **match: str
) -> httpx.Response:
    """A frame just published at least ``min_gap_s`` after its predecessor (long-polled for).

    ``match`` names header values the frame must have (e.g. ``x_frame_width="240"``).
    """
    previous = await first_frame(client, camera_id)
    deadline = time.monotonic() + FIRST_FRAME_S
    while time.monotonic() < deadline:
        response = await get_frame(client, camera_id, previous.headers["etag"], wait=10)
        assert response.status_code == 200, response.text
        gap = (captured_at(response) - captured_at(previous)).total_seconds()
        wanted = all(response.headers[k.replace("_", "-")] == v for k, v in match.items())
        if wanted and gap >= min_gap_s and int(response.headers["x-frame-age-ms"]) < 300:
            return response
        previous = response
    raise AssertionError(f"no frame of {camera_id} {min_gap_s} s after another ({match})")


async def samplers(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    listed = await client.get("/api/v1/ai/samplers")
    assert listed.status_code == 200, listed.text
    return {f"{s['camera_id']}/{s['profile']}": s for s in listed.json()}


def decodes_as_one_jpeg(data: bytes) -> None:
    """ffmpeg decodes ``data`` as exactly one JPEG image, without a warning."""
    argv = [ffmpeg_bin(), "-nostdin", "-v", "warning", "-xerror", "-f", "image2pipe"]
    argv += ["-c:v", "mjpeg", "-i", "pipe:0", "-f", "framecrc", "pipe:1"]
    done = subprocess.run(argv, input=data, capture_output=True, timeout=10, check=False)
    assert done.returncode == 0 and not done.stderr, done.stderr.decode(errors="replace")
    frames = [line for line in done.stdout.decode().splitlines() if not line.startswith("#")]
    assert len(frames) == 1


# -- the frame and its headers ---------------------------------------------------------------


async def test_frame_headers_and_body(live: Live) -> None:
    response = await first_frame(live.client, "front")
    headers = response.headers
    assert headers["content-type"] == "image/jpeg"
    assert headers["cache-control"] == "no-store"
    seq = int(headers["x-frame-seq"])
    assert seq >= 1
    taken = captured_at(response)
    assert abs((datetime.now(UTC) - taken).total_seconds()) < PROMPT_S
    assert 0 <= int(headers["x-frame-age-ms"]) < 1000  # a frame every 200 ms
    assert (headers["x-frame-width"], headers["x-frame-height"]) == (str(WIDTH), str(HEIGHT))
    assert headers["x-sampler-state"] == "sampling"
    etag = ETAG.match(headers["etag"])
    assert etag is not None, headers["etag"]
    assert int(etag.group(1)) == seq
    body = response.content
    assert body.startswith(b"\xff\xd8") and body.endswith(b"\xff\xd9")
    assert jpeg_dimensions(body) == (WIDTH, HEIGHT)
    assert int(headers["content-length"]) == len(body)
    await asyncio.to_thread(decodes_as_one_jpeg, body)
    # The file beside it holds a whole JPEG of the same size (it may already be a newer one).
    on_disk = live.kernel.frames.path("front", "sub").read_bytes()
    assert jpeg_dimensions(on_disk) == (WIDTH, HEIGHT)


async def test_ai_samplers_lists_every_planned_sampler(live: Live) -> None:
    seen_seq = int((await first_frame(live.client, "front")).headers["x-frame-seq"])
    await first_frame(live.client, "slow")
    listed = await samplers(live.client)
    # Planned: enabled cameras with an enabled task; ranked by priority (all 100), then id.
    assert list(listed) == ["cycle/sub", "front/sub", "slow/sub"]
    for key, fps in (("front/sub", FRONT_FPS), ("slow/sub", SLOW_FPS)):
        row = listed[key]
        assert set(row) == SAMPLER_FIELDS
        assert row["state"] == "sampling"
        assert (row["fps"], row["width"]) == (fps, WIDTH)  # the default budget grants it all
        assert (row["requested_fps"], row["requested_width"]) == (fps, WIDTH)
        assert isinstance(row["frame_age_ms"], int)
        assert 0 <= row["frame_age_ms"] < 1000 / fps + 1000
        assert row["frames_total"] >= 1
        assert (row["restarts"], row["last_error"]) == (0, None)
        process = psutil.Process(row["pid"])
        assert "ffmpeg" in process.name()
        assert f"floor(t*{fps:g})" in " ".join(process.cmdline())
        assert row["decode_mode"] == "all"
    assert listed["front/sub"]["frames_total"] >= seen_seq


# -- conditional requests and long polls -------------------------------------------------------


async def test_wait_returns_the_next_frame_soon(live: Live) -> None:
    current = await first_frame(live.client, "front")
    started = time.monotonic()
    newer = await get_frame(live.client, "front", current.headers["etag"], wait=5)
    elapsed = time.monotonic() - started
    assert newer.status_code == 200, newer.text
    assert int(newer.headers["x-frame-seq"]) > int(current.headers["x-frame-seq"])
    assert newer.headers["etag"] != current.headers["etag"]
    assert jpeg_dimensions(newer.content) == (WIDTH, HEIGHT)
    assert elapsed < 1.0, f"a 5 fps sampler took {elapsed:.2f} s for the next frame"
    # wait without If-None-Match: the current frame, at once.
    started = time.monotonic()
    plain = await get_frame(live.client, "front", wait=5)
    assert plain.status_code == 200
    assert time.monotonic() - started < 0.5


async def test_if_none_match_on_a_frame_that_cannot_advance(live: Live) -> None:
    frame = await steady_frame(live.client, "slow", SLOW_GAP_S)  # the next one is ~2 s away
    etag = frame.headers["etag"]
    # No wait: 304 at once, with the ETag, no body; the weak form compares equal.
    for tag in (etag, f"W/{etag}", f"  {etag} "):
        unchanged = await get_frame(live.client, "slow", tag)
        assert unchanged.status_code == 304, (tag, unchanged.text)
        assert unchanged.headers["etag"] == etag
        assert unchanged.headers["cache-control"] == "no-store"
        assert unchanged.content == b""
    # wait=1 and no newer frame within it: 304 after about a second.
    started = time.monotonic()
    timed_out = await get_frame(live.client, "slow", etag, wait=1)
    elapsed = time.monotonic() - started
    assert timed_out.status_code == 304, timed_out.text
    assert timed_out.headers["etag"] == etag
    assert 0.95 <= elapsed < 1.5, f"wait=1 answered after {elapsed:.2f} s"
    # A stale (well-formed, unknown) ETag gets the current frame at once, wait or not.
    for wait in (None, 10.0):
        started = time.monotonic()
        stale = await get_frame(live.client, "slow", '"1-000000000000"', wait=wait)
        assert stale.status_code == 200
        assert stale.headers["etag"] == etag
        assert stale.content == frame.content
        assert time.monotonic() - started < 0.5
    # A long poll then gets the next frame, about an interval after the last one.
    newer = await get_frame(live.client, "slow", etag, wait=5)
    assert newer.status_code == 200, newer.text
    assert int(newer.headers["x-frame-seq"]) == int(frame.headers["x-frame-seq"]) + 1
    gap = (captured_at(newer) - captured_at(frame)).total_seconds()
    assert abs(gap - 1 / SLOW_FPS) < 0.3, gap


# -- errors -------------------------------------------------------------------------------------


async def test_bad_requests_are_rejected_with_a_reason(live: Live) -> None:
    client = live.client
    unknown = await get_frame(client, "nope")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "camera 'nope' does not exist"
    assert (await get_frame(client, "Not-A-Slug")).status_code == 422

    third = await get_frame(client, "front", profile="third")
    assert third.status_code == 422
    assert third.json()["error"].startswith("invalid request: profile:")

    for wait in ("0", "31", "abc", "-1", "nan", "inf"):
        bad_wait = await client.get(frame_url("front"), params={"wait": wait})
        assert bad_wait.status_code == 422, wait
        assert bad_wait.json()["error"].startswith("invalid request: wait:"), wait

    for header in ("abc", '"a", "b"', '"unterminated', "W/abc", '"a b"', "", "*"):
        malformed = await get_frame(client, "front", header, wait=1)
        assert malformed.status_code == 422, header
        body = malformed.json()
        assert body["error"].startswith("header.if-none-match: must be one entity tag"), body
        assert body["detail"][0]["loc"] == ["header", "if-none-match"]


async def test_cameras_without_a_sampler_say_why(live: Live) -> None:
    client = live.client
    bare = await get_frame(client, "bare")
    assert bare.status_code == 404
    message = bare.json()["error"]
    assert "camera 'bare' has no sampler on profile 'sub'" in message
    assert "add an enabled AI task" in message
    assert "/api/v1/cameras/bare/ai-tasks" in message
    # A well-formed If-None-Match and a wait change nothing: there is nothing to wait for.
    started = time.monotonic()
    waited = await get_frame(client, "bare", '"1-000000000000"', wait=5)
    assert waited.status_code == 404
    assert time.monotonic() - started < PROMPT_S

    main = await get_frame(client, "front", profile="main")  # its task samples "sub"
    assert main.status_code == 404
    assert "no sampler on profile 'main'" in main.json()["error"]

    off = await get_frame(client, "off")
    assert off.status_code == 404
    assert off.json()["error"] == "no frame: camera 'off' is disabled; enable it to sample frames"


# -- restarts and removal ------------------------------------------------------------------------


async def test_etags_are_never_reused_across_restarts_and_removal(live: Live) -> None:
    client, task_url = live.client, f"/api/v1/ai-tasks/{live.task_ids['cycle']}"
    first = await first_frame(client, "cycle")
    seen = {first.headers["etag"]}
    token = ETAG.match(first.headers["etag"]).group(2)  # type: ignore[union-attr]
    pid_before = (await samplers(client))["cycle/sub"]["pid"]

    # A spec change restarts ffmpeg; until the new one delivers, the last frame stays served.
    patched = await client.patch(task_url, json={"fps": SLOW_FPS, "width": 240})
    assert patched.status_code == 200, patched.text
    row = (await samplers(client))["cycle/sub"]
    assert (row["fps"], row["width"], row["state"]) == (SLOW_FPS, 240, "connecting")
    assert row["pid"] != pid_before and not psutil.pid_exists(pid_before)
    kept = await get_frame(client, "cycle")
    assert kept.status_code == 200
    assert kept.headers["x-frame-width"] == str(WIDTH)
    assert kept.headers["x-sampler-state"] == "connecting"
    # The new process's frames continue the sequence: a restart never repeats an ETag.
    restarted = await steady_frame(client, "cycle", SLOW_GAP_S, x_frame_width="240")
    assert jpeg_dimensions(restarted.content) == (240, 136)
    assert restarted.headers["etag"] not in seen
    assert int(restarted.headers["x-frame-seq"]) > int(kept.headers["x-frame-seq"])
    seen |= {kept.headers["etag"], restarted.headers["etag"]}

    # Disabling the task removes the sampler: a long poll in progress is answered 404 at once,
    # the frame and its file are gone (the next frame is ~2 s away, so nothing else answers).
    started = time.monotonic()
    poll = asyncio.create_task(get_frame(client, "cycle", restarted.headers["etag"], wait=10))
    disabled = await client.patch(task_url, json={"enabled": False})
    assert disabled.status_code == 200
    answered = await poll
    assert answered.status_code == 404, answered.text
    assert time.monotonic() - started < PROMPT_S
    assert "cycle/sub" not in await samplers(client)
    assert not live.kernel.frames.path("cycle", "sub").exists()
    gone = await get_frame(client, "cycle", restarted.headers["etag"])
    assert gone.status_code == 404

    # Re-enabled: a new slot counts from 1 again, but under a new token; old ETags don't match.
    enabled = await client.patch(task_url, json={"enabled": True, "fps": FRONT_FPS})
    assert enabled.status_code == 200
    again = await first_frame(client, "cycle")
    assert again.headers["etag"] not in seen
    new_token = ETAG.match(again.headers["etag"]).group(2)  # type: ignore[union-attr]
    assert new_token != token
    for old in seen:
        assert (await get_frame(client, "cycle", old)).status_code == 200
