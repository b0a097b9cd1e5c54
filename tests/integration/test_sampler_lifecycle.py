"""SPEC §5 samplers end to end: real ffmpeg, real RTSP servers on loopback, real SQLite.

Every test drives the kernel through its HTTP API (in process, with its lifespan) and watches
``/api/v1/ai/samplers``, ``/api/v1/cameras/{id}/frame`` and ``/api/v1/events``. Nothing is mocked;
the stall watchdog's floor is lowered for the stall tests so they run in seconds. Waiting is
always a poll with a deadline (``eventually``); the deadlines are generous and never reached when
the kernel is right, so a timeout means a broken guarantee, not a slow machine.

Cameras that a test stops, starts or freezes are its own ``RtspTestCamera``; the session camera
(``rtsp_camera``) is only read from. Its start/stop calls block, so they run in a thread and the
in-process kernel keeps sampling meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from heldar.api.app import create_app
from heldar.config import Settings
from heldar.kernel import Kernel
from heldar.services import sampler as sampler_module
from tests.support.polling import eventually, throughout
from tests.support.rtsp_camera import RtspTestCamera
from tests.support.silent_rtsp import SilentRtspServer

Json = dict[str, Any]

# From creating a task to the first frame: ffmpeg start, RTSP handshake, the next IDR (GOP 2 s on
# the session camera), probing. Takes about 1-3 s.
FIRST_FRAME_S = 15.0
# Things the kernel does at once (a stop, a reap, a restart after a spec change).
PROMPT_S = 5.0
# A retry that finds the camera back: spawn, RTSP handshake, probing, first frame (about 2-3 s).
RECONNECT_S = 5.0
RATE_FPS = 2.0
# A start-up burst delivers frames milliseconds apart; polling this often sees frame 1 alone.
BURST_POLL_S = 0.002
BURST_CHECK_FRAMES = 5
RATE_TOLERANCE = 0.2
RATE_FRAMES = 9  # frame intervals measured: about 4.5 s at 2 fps
# The stall tests lower the watchdog floor (10 s in production) to this. The watchdog also bounds
# the wait for the first frame, which takes about 2 s (ffmpeg probes the stream first), so it must
# stay well above that.
TEST_STALL_FLOOR_S = 4.0
PASSWORD = "s3cret-pw"
SECRET_PART = "s3cret"


# -- helpers ----------------------------------------------------------------------------------


async def add_camera(client: httpx.AsyncClient, camera_id: str, **fields: Any) -> None:
    response = await client.post(
        "/api/v1/cameras", json={"id": camera_id, "name": camera_id, **fields}
    )
    assert response.status_code == 201, response.text


async def add_task(
    client: httpx.AsyncClient,
    camera_id: str,
    *,
    fps: float,
    width: int,
    task_type: str = "detect",
    **fields: Any,
) -> Json:
    response = await client.post(
        f"/api/v1/cameras/{camera_id}/ai-tasks",
        json={"task_type": task_type, "fps": fps, "width": width, **fields},
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def samplers(client: httpx.AsyncClient) -> dict[tuple[str, str], Json]:
    response = await client.get("/api/v1/ai/samplers")
    assert response.status_code == 200, response.text
    return {(s["camera_id"], s["profile"]): s for s in response.json()}


async def sampler(client: httpx.AsyncClient, camera_id: str, profile: str = "sub") -> Json | None:
    return (await samplers(client)).get((camera_id, profile))


async def wait_state(
    client: httpx.AsyncClient, camera_id: str, state: str, timeout_s: float, profile: str = "sub"
) -> Json:
    async def reached() -> Json | None:
        found = await sampler(client, camera_id, profile)
        return found if found is not None and found["state"] == state else None

    try:
        return await eventually(reached, timeout_s, f"{camera_id}/{profile} becoming {state}")
    except AssertionError as exc:
        now = await sampler(client, camera_id, profile)
        raise AssertionError(f"{exc}; sampler now: {now}") from None


async def wait_pid(
    client: httpx.AsyncClient, camera_id: str, timeout_s: float, *, not_pid: int | None = None
) -> Json:
    """The sampler once it reports a running ffmpeg (other than ``not_pid``)."""

    async def running() -> Json | None:
        found = await sampler(client, camera_id)
        ok = found is not None and found["pid"] is not None and found["pid"] != not_pid
        return found if ok else None

    return await eventually(running, timeout_s, f"{camera_id} running an ffmpeg")


async def events(client: httpx.AsyncClient, camera_id: str, event_type: str) -> list[Json]:
    response = await client.get(
        "/api/v1/events", params={"camera_id": camera_id, "event_type": event_type}
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def get_frame(client: httpx.AsyncClient, camera_id: str, **headers: str) -> httpx.Response:
    return await client.get(f"/api/v1/cameras/{camera_id}/frame", headers=headers)


def our_process_alive(pid: int) -> bool:
    """True while ``pid`` is a child of this test process (running or an unreaped zombie)."""
    try:
        return psutil.Process(pid).ppid() == os.getpid()
    except psutil.NoSuchProcess:
        return False


async def wait_gone(pid: int) -> None:
    async def gone() -> bool:
        return not our_process_alive(pid)

    await eventually(gone, PROMPT_S, f"ffmpeg {pid} ending")


def our_ffmpegs(exclude: tuple[int, ...] = ()) -> list[psutil.Process]:
    """ffmpeg processes below this test process, zombies included, other than ``exclude``."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.pid not in exclude and child.name() == "ffmpeg":
                found.append(child)
    return found


def frame_file(settings: Settings, camera_id: str, profile: str = "sub") -> Path:
    return settings.resolved_frames_dir / camera_id / f"latest_{profile}.jpg"


def captured_at(response: httpx.Response) -> float:
    stamp = response.headers["x-frame-captured-at"].replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


@pytest.fixture
def own_camera() -> Iterator[RtspTestCamera]:
    """A camera of this test alone (it may stop or freeze it): GOP 1 s, so readers start fast."""
    camera = RtspTestCamera(width=640, height=360, fps=15, gop=15, keeper=True)
    try:
        camera.start()
        yield camera
    finally:
        if camera.server_pid is not None:  # never leave it frozen, whatever happened
            with contextlib.suppress(ProcessLookupError):
                os.kill(camera.server_pid, signal.SIGCONT)
        camera.stop()


@pytest.fixture
def fast_stall(monkeypatch: pytest.MonkeyPatch) -> float:
    """Lower the stall watchdog's floor; the kernel runs in this process, so this reaches it."""
    monkeypatch.setattr(sampler_module, "MIN_STALL_TIMEOUT_S", TEST_STALL_FLOOR_S)
    return TEST_STALL_FLOOR_S


# -- 1. rate and width ---------------------------------------------------------------------


async def test_frames_arrive_at_the_task_rate_and_are_never_upscaled(
    client: httpx.AsyncClient, rtsp_camera: RtspTestCamera
) -> None:
    await add_camera(client, "rate", main_stream_url=rtsp_camera.url)
    await add_task(client, "rate", fps=RATE_FPS, width=320)
    await add_camera(client, "big", main_stream_url=rtsp_camera.url)
    await add_task(client, "big", fps=RATE_FPS, width=1280)
    await wait_state(client, "rate", "sampling", FIRST_FRAME_S)
    await wait_state(client, "big", "sampling", FIRST_FRAME_S)

    big = await get_frame(client, "big")
    assert big.status_code == 200
    assert (big.headers["x-frame-width"], big.headers["x-frame-height"]) == ("640", "360")

    # Long-poll frame by frame: each answer comes when the next frame is published. The first
    # answers are left out of the rate, which is the steady state's (the start-up is the
    # subject of the burst test).
    latest = await get_frame(client, "rate")
    seen: list[tuple[int, float, float]] = []  # (seq, captured_at, arrival on our clock)
    while len(seen) < 3 + RATE_FRAMES:
        response = await client.get(
            "/api/v1/cameras/rate/frame",
            params={"wait": 5},
            headers={"If-None-Match": latest.headers["etag"]},
        )
        assert response.status_code == 200, f"no new frame within 5 s at {RATE_FPS} fps"
        latest = response
        assert response.headers["content-type"] == "image/jpeg"
        assert response.content.startswith(b"\xff\xd8")
        assert (response.headers["x-frame-width"], response.headers["x-frame-height"]) == (
            "320",
            "180",
        )
        seen.append((int(response.headers["x-frame-seq"]), captured_at(response), time.monotonic()))
    (seq0, at0, wall0), (seq1, at1, wall1) = seen[2], seen[-1]
    assert seq1 - seq0 >= RATE_FRAMES  # seq grows by one per frame; none were skipped here
    rate = (seq1 - seq0) / (at1 - at0)
    wall_rate = (seq1 - seq0) / (wall1 - wall0)
    print(f"measured {rate:.3f} fps by captured_at, {wall_rate:.3f} fps by arrival")
    low, high = RATE_FPS * (1 - RATE_TOLERANCE), RATE_FPS * (1 + RATE_TOLERANCE)
    assert low <= rate <= high, f"{rate:.2f} fps, wanted {RATE_FPS} +-20 %"
    assert low <= wall_rate <= high, f"{wall_rate:.2f} fps, wanted {RATE_FPS} +-20 %"

    listed = await samplers(client)
    assert listed["rate", "sub"]["fps"] == RATE_FPS
    assert listed["rate", "sub"]["restarts"] == 0
    assert listed["rate", "sub"]["frames_total"] >= seq1


async def test_a_new_sampler_hands_over_no_burst_of_stale_frames(
    client: httpx.AsyncClient, kernel: Kernel
) -> None:
    """Frames are stamped when they arrive, so they must arrive when they were captured: ffmpeg
    must not decode probed-and-buffered video in one go at start (seen: 4 frames in 10 ms, each
    stamped "now" though up to 1.5 s old).

    The camera sends at the sampling rate, so every frame is the first of its grid cell and
    frames are exactly ``1 / RATE_FPS`` apart in stream time: live delivery spaces them so,
    a burst does not. (From a faster camera, frame 1 may be the last frame of its cell and
    frame 2 one camera frame later, which proves nothing.)"""
    camera = RtspTestCamera(width=320, height=180, fps=int(RATE_FPS), gop=2 * int(RATE_FPS))
    try:
        await asyncio.to_thread(camera.start)
        await add_camera(client, "fresh", main_stream_url=camera.url)
        await add_task(client, "fresh", fps=RATE_FPS, width=320)
        store = kernel.frames
        deadline = time.monotonic() + FIRST_FRAME_S
        while (first := store.latest("fresh", "sub")) is None:
            assert time.monotonic() < deadline, "no first frame"
            await asyncio.sleep(BURST_POLL_S)  # poll interval of a deadline loop
        assert first.seq == 1, f"frame {first.seq} was already there when frame 1 was due"
        min_gap_s = 0.5 / RATE_FPS  # half the frame interval: jitter passes, a burst does not
        latest = first
        while latest.seq < BURST_CHECK_FRAMES:
            newer = await store.wait_newer("fresh", "sub", latest.etag, FIRST_FRAME_S)
            assert newer is not None, "the sampler stopped delivering"
            elapsed_s = newer.captured_monotonic - first.captured_monotonic
            assert elapsed_s >= (newer.seq - 1) * min_gap_s, (
                f"frame {newer.seq} came {elapsed_s:.3f} s after frame 1: a burst of stale frames"
            )
            latest = newer
    finally:
        await asyncio.to_thread(camera.stop)


# -- 2. outage and recovery ----------------------------------------------------------------


async def test_a_camera_outage_is_one_offline_event_and_recovery_one_online_event(
    client: httpx.AsyncClient, own_camera: RtspTestCamera
) -> None:
    await add_camera(
        client, "door", main_stream_url=own_camera.url, username="admin", password=PASSWORD
    )
    await add_task(client, "door", fps=5, width=320)
    before = await wait_state(client, "door", "sampling", FIRST_FRAME_S)
    assert before["restarts"] == 0

    await asyncio.to_thread(own_camera.stop)
    await wait_state(client, "door", "offline", PROMPT_S)

    # Stay down through two retries (backoff about 2 s, then 4 s) that fail with the server gone:
    # the sampler stays offline and announces nothing more.
    states: set[str] = set()

    async def retried_twice() -> bool:
        found = await sampler(client, "door")
        assert found is not None
        states.add(found["state"])
        return bool(found["restarts"] >= 3)  # the run that lost the camera + 2 failed retries

    await eventually(retried_twice, 1.2 * (2 + 4) + PROMPT_S, "two failed retries")
    assert states == {"offline"}, f"a down sampler showed {states}"
    offline = await events(client, "door", "sampler_offline")
    assert len(offline) == 1, offline
    assert offline[0]["severity"] == "warning"
    assert offline[0]["payload"]["state"] == "offline"
    assert offline[0]["payload"]["profile"] == "sub"
    assert "stderr_tail" in offline[0]["payload"]
    # The reason is about the outage, not decoder chatter that crowded the stderr tail.
    assert "deprecated pixel format" not in str(offline[0]["payload"]), offline[0]["payload"]
    assert await events(client, "door", "sampler_online") == []
    down = await sampler(client, "door")
    assert down is not None and down["last_error"], down
    print(f"offline reason {offline[0]['payload']['reason']!r}; now {down['last_error']!r}")

    restarts = down["restarts"]
    # The next retry comes after at most the backoff for this attempt (+20 % jitter).
    backoff_bound_s = 1.2 * min(30.0, 2.0**restarts)
    begun = time.monotonic()
    await asyncio.to_thread(own_camera.start)
    started = time.monotonic()
    await wait_state(client, "door", "sampling", backoff_bound_s + FIRST_FRAME_S)
    print(
        f"camera start took {started - begun:.2f} s; sampling {time.monotonic() - started:.2f} s "
        f"after it was readable (backoff bound {backoff_bound_s:.1f} s at restarts={restarts})"
    )
    assert time.monotonic() - started <= backoff_bound_s + RECONNECT_S

    online = await events(client, "door", "sampler_online")
    assert len(online) == 1, online
    assert online[0]["severity"] == "info"
    assert len(await events(client, "door", "sampler_offline")) == 1
    assert online[0]["id"] > offline[0]["id"]
    for path in ("/api/v1/events", "/api/v1/ai/samplers", "/api/v1/cameras/door"):
        body = (await client.get(path, params={"limit": 1000} if "events" in path else {})).text
        assert SECRET_PART not in body, f"{path} leaks the password"
    assert SECRET_PART not in offline[0]["payload"]["stderr_tail"] + str(down["last_error"])


# -- 3. stalls ------------------------------------------------------------------------------


async def test_a_server_that_sends_no_media_is_stalled_and_ffmpeg_restarted(
    client: httpx.AsyncClient, fast_stall: float
) -> None:
    with SilentRtspServer(mode="no-media") as silent:
        await add_camera(client, "mute", main_stream_url=silent.url)
        await add_task(client, "mute", fps=5, width=320)  # stall after max(floor, 5 / 5 fps)
        first = await wait_pid(client, "mute", PROMPT_S)
        assert first["state"] == "connecting"

        async def stalled() -> Json | None:
            found = await sampler(client, "mute")
            assert found is not None
            noticed = found["state"] == "stalled" or "no frame" in (found["last_error"] or "")
            return found if noticed else None

        seen = await eventually(stalled, fast_stall + PROMPT_S, "the stall")
        assert "no frame" in seen["last_error"], seen
        # Restarted: a new ffmpeg (after a backoff of about 2 s), and the old one reaped.
        second = await wait_pid(client, "mute", 1.2 * 2 + PROMPT_S, not_pid=first["pid"])
        assert second["restarts"] >= 1
        await wait_gone(first["pid"])
        assert "PLAY" in silent.methods_seen  # it really got through the handshake
        # Never sampled, so there was no outage to announce.
        assert await events(client, "mute", "sampler_offline") == []
        assert (await get_frame(client, "mute")).status_code == 404


async def test_a_frozen_camera_is_stalled_once_and_recovers(
    client: httpx.AsyncClient, own_camera: RtspTestCamera, fast_stall: float
) -> None:
    await add_camera(client, "frozen", main_stream_url=own_camera.url)
    await add_task(client, "frozen", fps=5, width=320)
    before = await wait_state(client, "frozen", "sampling", FIRST_FRAME_S)
    assert before["restarts"] == 0
    server_pid = own_camera.server_pid
    assert server_pid is not None

    os.kill(server_pid, signal.SIGSTOP)
    try:
        stalled = await wait_state(client, "frozen", "stalled", fast_stall + PROMPT_S)
        assert "no frame" in stalled["last_error"]

        # One more round while frozen: the retry connects (the OS backlog of the frozen server
        # accepts) but gets nothing and stalls again. The sampler stays `stalled` meanwhile (no
        # flapping to `connecting`) and announces nothing more.
        states: set[str] = set()

        async def stalled_again() -> bool:
            found = await sampler(client, "frozen")
            assert found is not None
            states.add(found["state"])
            return bool(found["restarts"] >= 2)  # the frozen run + one retry that stalled

        await eventually(stalled_again, 1.2 * 2 + fast_stall + PROMPT_S, "a second stall")
        assert states == {"stalled"}, f"a stalled sampler showed {states}"
    finally:
        os.kill(server_pid, signal.SIGCONT)
    offline = await events(client, "frozen", "sampler_offline")
    assert [e["payload"]["state"] for e in offline] == ["stalled"]
    assert "no frame" in offline[0]["payload"]["reason"]

    resumed = time.monotonic()
    await wait_state(client, "frozen", "sampling", 1.2 * 8 + FIRST_FRAME_S)
    print(f"sampling again {time.monotonic() - resumed:.2f} s after SIGCONT")
    assert len(await events(client, "frozen", "sampler_online")) == 1
    assert len(await events(client, "frozen", "sampler_offline")) == 1


# -- 4. disable / delete ----------------------------------------------------------------------


async def test_disabling_the_camera_or_deleting_the_task_stops_ffmpeg_and_the_frame(
    client: httpx.AsyncClient, settings: Settings, rtsp_camera: RtspTestCamera
) -> None:
    await add_camera(client, "off_cam", main_stream_url=rtsp_camera.url)
    await add_task(client, "off_cam", fps=2, width=320)
    await add_camera(client, "del_cam", main_stream_url=rtsp_camera.url)
    task = await add_task(client, "del_cam", fps=2, width=320)
    for camera_id in ("off_cam", "del_cam"):
        await wait_state(client, camera_id, "sampling", FIRST_FRAME_S)
        assert frame_file(settings, camera_id).is_file()
    pids = {
        camera_id: (await sampler(client, camera_id) or {})["pid"]
        for camera_id in ("off_cam", "del_cam")
    }
    assert all(our_process_alive(pid) for pid in pids.values()), pids

    patched = await client.patch("/api/v1/cameras/off_cam", json={"enabled": False})
    assert patched.status_code == 200, patched.text
    deleted = await client.delete(f"/api/v1/ai-tasks/{task['id']}")
    assert deleted.status_code == 204, deleted.text

    # At once, with no waiting: no sampler, no frame, no file.
    listed = await samplers(client)
    for camera_id in ("off_cam", "del_cam"):
        assert (camera_id, "sub") not in listed, listed
        response = await get_frame(client, camera_id)
        assert response.status_code == 404, response.headers
        assert not frame_file(settings, camera_id).exists()
    for pid in pids.values():
        await wait_gone(pid)
    # A stop on request is not an outage.
    for camera_id in ("off_cam", "del_cam"):
        assert await events(client, camera_id, "sampler_offline") == []


# -- 5. diff reconcile ------------------------------------------------------------------------


async def test_only_samplers_whose_spec_changed_are_restarted(
    client: httpx.AsyncClient, rtsp_camera: RtspTestCamera
) -> None:
    await add_camera(client, "cam_a", main_stream_url=rtsp_camera.url)
    task_a = await add_task(client, "cam_a", fps=2, width=320, config={"threshold": 0.5})
    await add_camera(client, "cam_b", main_stream_url=rtsp_camera.url)
    await add_task(client, "cam_b", fps=2, width=320)
    a = await wait_state(client, "cam_a", "sampling", FIRST_FRAME_S)
    b = await wait_state(client, "cam_b", "sampling", FIRST_FRAME_S)
    etag_a = (await get_frame(client, "cam_a")).headers["etag"]
    token_a = etag_a.strip('"').split("-")[1]

    async def unchanged(what: str) -> None:
        listed = await samplers(client)
        for before in (a, b):
            now = listed[before["camera_id"], "sub"]
            assert now["pid"] == before["pid"], f"{what} restarted {before['camera_id']}"
            assert now["restarts"] == 0 and now["state"] == "sampling", (what, now)

    edits = [
        ("a task's config", f"/api/v1/ai-tasks/{task_a['id']}", {"config": {"threshold": 0.9}}),
        ("the camera's name", "/api/v1/cameras/cam_a", {"name": "Camera A renamed"}),
        ("the camera's priority", "/api/v1/cameras/cam_a", {"priority": 500}),
    ]
    for what, path, body in edits:
        response = await client.patch(path, json=body)
        assert response.status_code == 200, response.text
        await unchanged(what)
    # A second task that asks for less changes neither max(fps) nor max(width).
    await add_task(client, "cam_a", fps=1, width=160, task_type="motion")
    await unchanged("a slower task")
    # The frame slot lived on (same token), and frames kept coming.
    newer = await client.get(
        "/api/v1/cameras/cam_a/frame", params={"wait": 5}, headers={"If-None-Match": etag_a}
    )
    assert newer.status_code == 200
    assert newer.headers["etag"].strip('"').split("-")[1] == token_a

    response = await client.patch(f"/api/v1/ai-tasks/{task_a['id']}", json={"fps": 3})
    assert response.status_code == 200, response.text
    restarted = await wait_pid(client, "cam_a", PROMPT_S, not_pid=a["pid"])
    assert restarted["fps"] == 3
    await wait_gone(a["pid"])
    still_b = await sampler(client, "cam_b")
    assert still_b is not None and still_b["pid"] == b["pid"], "changing A restarted B"
    await wait_state(client, "cam_a", "sampling", FIRST_FRAME_S)
    assert (await sampler(client, "cam_b") or {})["pid"] == b["pid"]


# -- 6. shutdown ----------------------------------------------------------------------------


async def test_kernel_shutdown_leaves_no_ffmpeg_behind(
    settings: Settings, rtsp_camera: RtspTestCamera
) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kernel") as client:
            for camera_id in ("shut_a", "shut_b"):
                await add_camera(client, camera_id, main_stream_url=rtsp_camera.url)
                await add_task(client, camera_id, fps=2, width=320)
            pids = []
            for camera_id in ("shut_a", "shut_b"):
                await wait_state(client, camera_id, "sampling", FIRST_FRAME_S)
                pids.append((await sampler(client, camera_id) or {})["pid"])
            assert all(our_process_alive(pid) for pid in pids), pids
    # The lifespan has returned: every sampler ffmpeg is stopped and reaped (no zombie either).
    for pid in pids:
        assert not our_process_alive(pid), f"ffmpeg {pid} outlived the kernel"
    assert our_ffmpegs(exclude=rtsp_camera.keeper_pids) == []
    assert not any(settings.resolved_frames_dir.glob("*/latest_*.jpg"))


# -- 7. unusable URLs -----------------------------------------------------------------------


async def test_an_unusable_source_is_an_error_without_spawning_ffmpeg(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    media = settings.media_dir.resolve()
    await add_camera(client, "ghost", main_stream_url=(media / "missing.mp4").as_uri())
    await add_task(client, "ghost", fps=2, width=320)
    # A generic camera with only a sub URL: its main profile falls back to that (missing) file.
    await add_camera(
        client, "sub_only", sub_stream_url=(media / "gone.mp4").as_uri(), record_stream="sub"
    )
    await add_task(client, "sub_only", fps=2, width=320, stream_profile="main")
    ffmpegs_before = {p.pid for p in our_ffmpegs()}

    for camera_id, profile, name in (
        ("ghost", "sub", "missing.mp4"),
        ("sub_only", "main", "gone.mp4"),
    ):
        found = await wait_state(client, camera_id, "error", PROMPT_S, profile=profile)
        assert name in found["last_error"] and "does not exist" in found["last_error"], found
        assert found["pid"] is None

    async def quiet() -> bool:
        listed = await samplers(client)
        for key in (("ghost", "sub"), ("sub_only", "main")):
            s = listed[key]
            if (s["state"], s["pid"], s["restarts"], s["frames_total"]) != ("error", None, 0, 0):
                return False
        return {p.pid for p in our_ffmpegs()} <= ffmpegs_before

    # A crash loop would spawn again within its first backoff (1 s); watch for longer than that.
    await throughout(quiet, 2.0, "an unusable source spawned ffmpeg")
    response = await client.get("/api/v1/cameras/ghost/frame")
    assert response.status_code == 404
    assert "error" in response.text
