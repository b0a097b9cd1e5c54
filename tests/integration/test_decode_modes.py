"""Decode modes against the session RTSP camera (15 fps, a keyframe every 2 s).

``auto`` learns the keyframe interval from the stream, decodes only keyframes while the grant
is at or below the keyframe rate, and every frame above it; ``keyframes`` never decodes more,
and neither mode ever hands out a duplicated frame.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from heldar.api.app import create_app
from heldar.config import load_settings
from heldar.media import ffmpeg
from tests.support.polling import eventually
from tests.support.rtsp_camera import RtspTestCamera

GOP_S = 2.0  # the session camera: GOP 30 at 15 fps
LEARN_S = 30.0  # start, four keyframes (three gaps), re-plan, restart: about 8-12 s
GAP_TOLERANCE_S = 0.6  # kernel receive times jitter by network and decode, not by the grid


@asynccontextmanager
async def kernel(
    tmp_path: Path, camera: RtspTestCamera, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(load_settings({}, data_dir=tmp_path / "data", **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kernel") as client:
            body = {"id": "gate", "name": "Gate", "main_stream_url": camera.url}
            assert (await client.post("/api/v1/cameras", json=body)).status_code == 201
            yield client


async def sampler(client: httpx.AsyncClient) -> dict[str, Any]:
    (row,) = (await client.get("/api/v1/ai/samplers")).json()
    return dict(row)


async def frames(client: httpx.AsyncClient, count: int, wait_s: float) -> list[httpx.Response]:
    """``count`` consecutive new frames, by long poll."""
    out: list[httpx.Response] = []
    etag = None
    while len(out) < count:
        headers = {"If-None-Match": etag} if etag else {}
        response = await client.get(
            "/api/v1/cameras/gate/frame", headers=headers, params={"wait": wait_s}
        )
        if response.status_code == 200:
            if etag is not None:  # the first answer may be an old frame: count from the next
                out.append(response)
            etag = response.headers["etag"]
    return out


def gaps_s(responses: list[httpx.Response]) -> list[float]:
    times = [datetime.fromisoformat(r.headers["x-frame-captured-at"]) for r in responses]
    return [(b - a).total_seconds() for a, b in pairwise(times)]


def cmdline(row: dict[str, Any]) -> str:
    return " ".join(psutil.Process(row["pid"]).cmdline())


def receivers() -> list[str]:
    """Command lines of this process's receivers (the decoders' upstream)."""
    lines = [" ".join(child.cmdline()) for child in psutil.Process().children()]
    return [line for line in lines if "noise=drop=if(key" in line]


async def test_auto_learns_the_gop_and_switches_both_ways(
    rtsp_camera: RtspTestCamera, tmp_path: Path
) -> None:
    async with kernel(tmp_path, rtsp_camera) as client:
        task = (
            await client.post(
                "/api/v1/cameras/gate/ai-tasks",
                json={"task_type": "motion", "fps": 0.25, "width": 320},
            )
        ).json()

        async def on_keyframes() -> dict[str, Any] | None:
            row = await sampler(client)
            ok = row["decode_mode"] == "keyframes" and row["state"] == "sampling"
            return row if ok else None

        row = await eventually(on_keyframes, LEARN_S, "the switch to keyframe-only decoding")
        assert abs(row["keyframe_interval_s"] - GOP_S) < 0.1, row
        # Keyframes only: the kernel's feed receives and pipes only the keyframes to output to
        # one decoder process; no ffmpeg receiver.
        assert row["receiver"] == "kernel", row
        assert "-f h264 -i pipe:0" in cmdline(row)
        assert receivers() == [] and row["pids"] == [row["pid"]]
        slow = await frames(client, 3, wait_s=10)
        assert all(abs(g - 1 / 0.25) < GAP_TOLERANCE_S for g in gaps_s(slow)), gaps_s(slow)
        assert len({r.content for r in slow}) == 3  # the ball moved: no duplicates

        await client.patch(f"/api/v1/ai-tasks/{task['id']}", json={"fps": 2})
        row = await sampler(client)  # the interval is known: the plan is right at once
        assert row["decode_mode"] == "all"
        assert row["gop_prefix"] is True, row
        fast = await frames(client, 6, wait_s=5)
        mean_gap = sum(gaps_s(fast)) / len(gaps_s(fast))
        assert abs(mean_gap - 0.5) < 0.15, gaps_s(fast)
        assert len({r.content for r in fast}) == 6
        # Full decode: a new receiver drops only the needless end of each GOP.
        (receiver,) = receivers()
        assert "noise=drop=if(key\\,if(" in receiver
        row = await sampler(client)
        assert "-i pipe:0" in cmdline(row) and row["receiver"] == "ffmpeg"

        await client.patch(f"/api/v1/ai-tasks/{task['id']}", json={"fps": 0.5})
        row = await sampler(client)
        assert row["decode_mode"] == "keyframes" and row["gop_prefix"] is False  # at the rate


@pytest.mark.parametrize(
    ("packet_drop", "receiver"),
    [(True, "kernel"), (True, "ffmpeg"), (False, "ffmpeg")],
    ids=["kernel-feed", "ffmpeg-receiver", "skip-frame-fallback"],
)
async def test_forced_keyframes_give_the_keyframe_rate_without_duplicates(
    rtsp_camera: RtspTestCamera,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    packet_drop: bool,
    receiver: str,
) -> None:
    """The kernel's feed, an ffmpeg receiver, and an ffmpeg that cannot drop packets (before
    5.1), where one process decodes with -skip_frame (the kernel's feed needs packet drops too,
    so it is not used there)."""

    async def probe(_ffmpeg: str) -> bool:
        return packet_drop

    monkeypatch.setattr(ffmpeg, "probe_packet_drop", probe)
    settings = {"ai_decode_mode": "keyframes", "ai_keyframe_receiver": receiver}
    async with kernel(tmp_path, rtsp_camera, **settings) as client:
        await client.post(
            "/api/v1/cameras/gate/ai-tasks", json={"task_type": "motion", "fps": 2, "width": 320}
        )
        got = await frames(client, 3, wait_s=10)
        assert all(abs(g - GOP_S) < GAP_TOLERANCE_S for g in gaps_s(got)), gaps_s(got)
        assert len({r.content for r in got}) == 3
        row = await sampler(client)
        assert row["decode_mode"] == "keyframes" and row["fps"] == 2.0
        assert abs(row["keyframe_interval_s"] - GOP_S) < 0.1
        assert ("-skip_frame nokey" in cmdline(row)) is not packet_drop
        assert row["receiver"] == receiver
        if receiver == "kernel":
            assert receivers() == [] and row["pids"] == [row["pid"]]
        else:
            # One packet of probing tells the codec parameters to a receiver's probe; a probe
            # that skips non-key frames learns nothing from it, so that sampler had to analyse
            # longer.
            reader = " ".join(psutil.Process(row["pids"][0]).cmdline())
            assert ("-probesize 32 " in reader) is packet_drop
            assert ("-analyzeduration" in reader) is not packet_drop
            assert len(receivers()) == int(packet_drop)
    # Shutdown stopped and reaped every process of the sampler (the feed's decoder included).
    assert not any(psutil.pid_exists(pid) for pid in row["pids"]), row["pids"]
