"""The kernel's keyframe feeds against real RTSP: the test camera (H.264, H.265) and, for what it
cannot do (authentication, a stream without H.264/H.265), a small RTSP server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import httpx
import pytest

from heldar.api.app import create_app
from heldar.config import load_settings
from heldar.media.feed import FeedHub, KeyframeFeed
from heldar.media.keyframes import FrameSize
from heldar.media.rtsp import RtspError, RtspSession, UnsupportedStream
from tests.support.binaries import ffmpeg_bin
from tests.support.polling import eventually
from tests.support.rtsp_camera import RtspTestCamera

TIMEOUT_S = 5.0
GOP_S = 2.0  # the session camera's
KEYFRAMES_WAIT_S = 20.0  # connect, then five keyframes two seconds apart
SMALL_PIPE_BYTES = 4096  # the smallest pipe Linux makes


@dataclass
class Received:
    """What a feed told and wrote, read from the other end of its pipe."""

    feed: KeyframeFeed
    times_s: list[float] = field(default_factory=list)
    sizes: list[FrameSize] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)


@contextlib.asynccontextmanager
async def feeding(
    url: str, fps: float, *, pipe_bytes: int | None = None
) -> AsyncIterator[Received]:
    """A running hub with one feed on ``url``, its pipe (of ``pipe_bytes``, else the default
    size) drained into ``Received.data``."""
    hub = FeedHub(TIMEOUT_S)
    pump = asyncio.create_task(hub.run())
    times: list[float] = []
    sizes: list[FrameSize] = []
    try:
        feed = await hub.connect(url, fps, on_keyframe=times.append, on_size=sizes.append)
        received = Received(feed, times, sizes)
        read_fd, write_fd = os.pipe()
        if pipe_bytes is not None:
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, pipe_bytes)
        hub.start(feed, write_fd)
        loop = asyncio.get_running_loop()
        os.set_blocking(read_fd, False)

        def drain() -> None:
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(read_fd, 1 << 16):
                    received.data += chunk

        loop.add_reader(read_fd, drain)
        try:
            yield received
        finally:
            loop.remove_reader(read_fd)
            os.close(read_fd)
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)


def decoded_frames(data: bytes, raw_format: str, tmp_path: Path) -> list[str]:
    """Picture types of every frame ffmpeg decodes from ``data`` (Annex B)."""
    path = tmp_path / "feed.es"
    path.write_bytes(data)
    out = subprocess.run(
        [ffmpeg_bin(), "-hide_banner", "-f", raw_format, "-i", str(path),
         "-vf", "showinfo", "-f", "null", "-"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return [line.split(" type:")[1][0] for line in out.stderr.splitlines() if " type:" in line]


async def test_a_feed_writes_only_the_keyframes_to_output_and_each_decodes(
    rtsp_camera: RtspTestCamera, tmp_path: Path
) -> None:
    """At 0.25 fps on a 2 s GOP every other keyframe is written; the log sees every one."""
    async with feeding(rtsp_camera.url, fps=0.25) as got:

        async def five_keyframes() -> bool:
            return got.feed.keyframes_total >= 5

        await eventually(five_keyframes, KEYFRAMES_WAIT_S, "five keyframes")
        assert got.sizes == [FrameSize(640, 360)]
        assert all(abs(b - a - GOP_S) < 0.05 for a, b in pairwise(got.times_s)), got.times_s
        written = got.feed.keyframes_written
        assert written == (got.feed.keyframes_total + 1) // 2, vars(got.feed)
        assert got.feed.keyframes_dropped == 0
    types = decoded_frames(bytes(got.data), "h264", tmp_path)
    assert types == ["I"] * written


@contextlib.contextmanager
def small_camera(codec: str = "h264") -> Iterator[RtspTestCamera]:
    """A camera of the test's own (a keyframe a second), stopped at the end."""
    camera = RtspTestCamera(width=320, height=240, fps=10, gop=10, codec=codec)
    camera.start()
    try:
        yield camera
    finally:
        camera.stop()


async def wait_written(got: Received, count: int) -> None:
    async def enough() -> bool:
        return got.feed.keyframes_written >= count

    await eventually(enough, KEYFRAMES_WAIT_S, f"{count} keyframes written")


async def test_h265_keyframes_come_through_whole(tmp_path: Path) -> None:
    with small_camera("h265") as camera:
        async with feeding(camera.url, fps=1.0) as got:
            await wait_written(got, 3)
            assert got.sizes == [FrameSize(320, 240)]
    assert decoded_frames(bytes(got.data), "hevc", tmp_path)[:3] == ["I", "I", "I"]


async def test_a_keyframe_larger_than_the_pipe_reaches_the_decoder_whole(
    rtsp_camera: RtspTestCamera, tmp_path: Path
) -> None:
    """A one-page pipe: each keyframe is written in pieces as the reader drains it (a 1080p
    keyframe is often larger than the 64 kB of a default pipe)."""
    async with feeding(rtsp_camera.url, fps=0.5, pipe_bytes=SMALL_PIPE_BYTES) as got:
        await wait_written(got, 3)
    written = got.feed.keyframes_written
    assert len(got.data) / written > SMALL_PIPE_BYTES, len(got.data)
    assert decoded_frames(bytes(got.data), "h264", tmp_path) == ["I"] * written


async def test_a_camera_that_goes_away_ends_the_feed_with_the_reason() -> None:
    with small_camera() as camera:
        async with feeding(camera.url, fps=1.0) as got:
            await wait_written(got, 1)
            camera.stop()

            async def ended() -> bool:
                return got.feed.failure is not None

            await eventually(ended, TIMEOUT_S + 5, "the feed's end")
            assert "closed the connection" in got.feed.failure or "no data" in got.feed.failure


async def test_a_wrong_path_and_a_closed_port_are_named_errors() -> None:
    """On a camera of its own: the session camera's log must stay free of errors."""
    hub = FeedHub(TIMEOUT_S)
    with small_camera() as camera, pytest.raises(RtspError, match="DESCRIBE answered 404"):
        await hub.connect(camera.url + "-nope", 1.0, on_keyframe=print, on_size=print)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(RtspError, match=r"cannot connect to rtsp://127\.0\.0\.1"):
        await hub.connect(f"rtsp://127.0.0.1:{port}/cam", 1.0, on_keyframe=print, on_size=print)


# --- a small RTSP server for authentication: it answers only once the Digest answer is right ---

USER, PASSWORD, REALM, NONCE = "viewer", "pa55:word!", "cam", "5e1f0c0a"
JPEG_SDP = "v=0\r\ns=cam\r\nt=0 0\r\nm=video 0 RTP/AVP 26\r\na=rtpmap:26 JPEG/90000\r\n"
H264_SDP = "v=0\r\ns=cam\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"


def _expected_digest(method: str, uri: str, header: str) -> bool:
    if not header.startswith("Digest "):
        return False
    fields = dict(part.strip().split("=", 1) for part in header.removeprefix("Digest ").split(","))
    fields = {k: v.strip('"') for k, v in fields.items()}
    ha1 = hashlib.md5(f"{USER}:{REALM}:{PASSWORD}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    nc, cnonce = fields.get("nc", ""), fields.get("cnonce", "")
    want = hashlib.md5(f"{ha1}:{NONCE}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return fields.get("username") == USER and fields.get("response") == want


def _serve(listener: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            conn, _ = listener.accept()
            with conn:
                buffer = b""
                while chunk := conn.recv(4096):
                    buffer += chunk
                    while b"\r\n\r\n" in buffer:
                        head, buffer = buffer.split(b"\r\n\r\n", 1)
                        lines = head.decode().split("\r\n")
                        method, uri, _ = lines[0].split(" ")
                        headers = dict(line.split(": ", 1) for line in lines[1:])
                        reply = [f"CSeq: {headers['CSeq']}"]
                        auth = headers.get("Authorization", "")
                        if not _expected_digest(method, uri, auth):
                            status = "401 Unauthorized"
                            reply += [
                                f'WWW-Authenticate: Basic realm="{REALM}"',
                                f'WWW-Authenticate: Digest realm="{REALM}", nonce="{NONCE}", '
                                'qop="auth"',
                            ]
                            body = ""
                        else:
                            status, body = "200 OK", ""
                            if method == "DESCRIBE":
                                body = H264_SDP if uri.endswith("/h264") else JPEG_SDP
                            elif method == "SETUP":  # TCP-interleaved RTP is all we ask for
                                status = "461 Unsupported Transport"
                            reply.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY")
                        reply.append(f"Content-Length: {len(body)}")
                        head_text = "\r\n".join([f"RTSP/1.0 {status}", *reply])
                        conn.sendall(f"{head_text}\r\n\r\n{body}".encode())


@pytest.fixture
def auth_server() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    thread = threading.Thread(target=_serve, args=(listener,), daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=5)


def test_digest_credentials_open_the_camera_and_wrong_ones_are_refused_unshown(
    auth_server: int,
) -> None:
    """Past authentication the server describes an MJPEG stream: unsupported, said as such."""
    url = f"rtsp://{USER}:pa55%3Aword%21@127.0.0.1:{auth_server}/cam"
    session = RtspSession(url, TIMEOUT_S)
    with pytest.raises(UnsupportedStream, match="video: JPEG"):
        session.open()
    session.close()
    wrong = RtspSession(f"rtsp://{USER}:hunter2@127.0.0.1:{auth_server}/cam", TIMEOUT_S)
    with pytest.raises(RtspError, match="the credentials were refused") as refused:
        wrong.open()
    wrong.close()
    assert "hunter2" not in str(refused.value) and "127.0.0.1" in str(refused.value)
    assert not isinstance(refused.value, UnsupportedStream)  # ffmpeg would be refused too


def test_a_refused_transport_is_a_dialect_ffmpeg_may_speak(auth_server: int) -> None:
    session = RtspSession(f"rtsp://{USER}:pa55%3Aword%21@127.0.0.1:{auth_server}/h264", TIMEOUT_S)
    with pytest.raises(UnsupportedStream, match="SETUP answered 461 Unsupported Transport"):
        session.open()
    session.close()


async def test_a_stream_the_feed_cannot_take_falls_back_to_an_ffmpeg_receiver(
    auth_server: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MJPEG over RTSP: the sampler says so once and retries at once with an ffmpeg receiver."""
    caplog.set_level(logging.INFO, logger="heldar.services.sampler")
    settings = load_settings({}, data_dir=tmp_path / "data", ai_decode_mode="keyframes")
    app = create_app(settings)
    url = f"rtsp://{USER}:pa55%3Aword%21@127.0.0.1:{auth_server}/cam"
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kernel") as client:
            body = {"id": "mjpeg", "name": "MJPEG", "main_stream_url": url}
            assert (await client.post("/api/v1/cameras", json=body)).status_code == 201
            task = {"task_type": "motion", "fps": 1}
            created = await client.post("/api/v1/cameras/mjpeg/ai-tasks", json=task)
            assert created.status_code == 201, created.text
            fallback = "no H.264 or H.265 video in the stream description (video: JPEG); " + (
                "receiving with ffmpeg from now on"
            )

            async def fell_back() -> bool:
                return fallback in caplog.text

            await eventually(fell_back, TIMEOUT_S * 2, "the fallback to an ffmpeg receiver")

            async def ffmpeg_tried() -> dict[str, object] | None:
                (row,) = (await client.get("/api/v1/ai/samplers")).json()
                return row if row["restarts"] >= 2 and row["last_error"] else None

            row = await eventually(ffmpeg_tried, TIMEOUT_S * 4, "an ffmpeg receiver run")
    assert caplog.text.count(fallback) == 1
    assert "pa55" not in caplog.text and "pa55" not in str(row)
