"""The test camera itself: real GStreamer server, real ffmpeg readers, no mocks."""

from __future__ import annotations

import socket
import subprocess
import time

import psutil
import pytest

from tests.support import processes
from tests.support.binaries import ffmpeg_bin, ffmpeg_cmd, ffprobe_bin
from tests.support.rtsp_camera import CAMERA_SCRIPT, SYSTEM_PYTHON, RtspTestCamera
from tests.support.silent_rtsp import SilenceMode, SilentRtspServer

JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
GRAB_TIMEOUT_S = 15.0
# The ball moves every frame, so grabs this far apart must show different pictures.
MOTION_INTERVAL_S = 1.0
# Share of pixels that must change between the two grabs (the ball plus the clock overlays).
MIN_CHANGED_PIXEL_SHARE = 0.001
# Signs of a broken stream in ffmpeg's decoder log (e.g. sliced threads splitting an IDR).
DECODE_ERROR_MARKERS = ("conceal", "error while decoding", "corrupt", "missing picture")


def grab_jpeg(url: str, *, fast_probe: bool = True) -> subprocess.CompletedProcess[bytes]:
    """One frame from ``url`` as JPEG on stdout (the fast-probe flags are from SPEC §8)."""
    probe = ["-probesize", "32", "-analyzeduration", "0"] if fast_probe else []
    argv = [
        *ffmpeg_cmd(),
        "-rtsp_transport",
        "tcp",
        *probe,
        "-i",
        url,
        "-frames:v",
        "1",
        "-f",
        "image2",
        "-c:v",
        "mjpeg",
        "pipe:1",
    ]
    return subprocess.run(argv, capture_output=True, timeout=GRAB_TIMEOUT_S, check=False)


def assert_clean_jpeg(result: subprocess.CompletedProcess[bytes]) -> bytes:
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, stderr
    jpeg = result.stdout
    assert jpeg.startswith(JPEG_SOI), f"no JPEG start marker in {len(jpeg)} bytes"
    assert jpeg.endswith(JPEG_EOI), f"no JPEG end marker in {len(jpeg)} bytes"
    assert not [m for m in DECODE_ERROR_MARKERS if m in stderr.lower()], stderr
    return jpeg


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    argv = [
        ffprobe_bin(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-show_entries",
        "stream=codec_name,width,height",
        "-of",
        "csv=p=0",
        "-i",
        "pipe:0",
    ]
    result = subprocess.run(argv, input=jpeg, capture_output=True, timeout=10, check=True)
    codec, width, height = result.stdout.decode().strip().split(",")
    assert codec == "mjpeg"
    return int(width), int(height)


def decode_gray(jpeg: bytes) -> bytes:
    """Decode a JPEG to 8-bit gray pixels; fails on any decoder error."""
    argv = [
        *ffmpeg_cmd(),
        "-xerror",
        "-f",
        "image2pipe",
        "-c:v",
        "mjpeg",
        "-i",
        "pipe:0",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "gray",
        "pipe:1",
    ]
    result = subprocess.run(argv, input=jpeg, capture_output=True, timeout=10, check=False)
    assert result.returncode == 0 and not result.stderr, result.stderr.decode("utf-8", "replace")
    return result.stdout


def assert_quiet_server(camera: RtspTestCamera) -> None:
    stderr = camera.server_stderr()
    assert "CRITICAL" not in stderr and " ERROR " not in stderr, stderr


def test_ffmpeg_grabs_a_decodable_640x360_frame(rtsp_camera: RtspTestCamera) -> None:
    jpeg = assert_clean_jpeg(grab_jpeg(rtsp_camera.url, fast_probe=False))

    assert jpeg_size(jpeg) == (640, 360)
    assert len(decode_gray(jpeg)) == 640 * 360
    assert_quiet_server(rtsp_camera)


def test_readers_joining_at_different_times_get_moving_frames(
    rtsp_camera: RtspTestCamera,
) -> None:
    first_started_at = time.monotonic()
    first = assert_clean_jpeg(grab_jpeg(rtsp_camera.url))
    # Not synchronisation: the second reader must join a measurable time later, mid-GOP.
    time.sleep(max(0.0, first_started_at + MOTION_INTERVAL_S - time.monotonic()))
    second = assert_clean_jpeg(grab_jpeg(rtsp_camera.url))

    assert first != second
    first_pixels, second_pixels = decode_gray(first), decode_gray(second)
    assert len(first_pixels) == len(second_pixels) == 640 * 360
    changed = sum(1 for a, b in zip(first_pixels, second_pixels, strict=True) if abs(a - b) > 16)
    assert changed / len(first_pixels) >= MIN_CHANGED_PIXEL_SHARE
    assert_quiet_server(rtsp_camera)


def gone(pid: int) -> bool:
    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return True
    return status == psutil.STATUS_ZOMBIE


def test_stop_ends_every_process_and_start_comes_back_on_the_same_port() -> None:
    with RtspTestCamera(paths=("/a", "/b"), width=320, height=180, fps=15, gop=15) as camera:
        port, url_b = camera.port, camera.url_for("/b")
        assert camera.server_pid is not None
        pids = [camera.server_pid, *camera.keeper_pids]
        assert len(pids) == 3
        # A reader connected through the outage, like the kernel: the server closes its
        # connection, leaving TIME_WAIT on the camera's port, and the restart must still bind.
        reader_argv = [ffmpeg_bin(), "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp"]
        reader = processes.spawn(
            [*reader_argv, "-i", url_b, "-c", "copy", "-f", "null", "-"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert_clean_jpeg(grab_jpeg(url_b))  # the reader has had time to connect
            camera.stop()
            assert reader.wait(timeout=GRAB_TIMEOUT_S) is not None
        finally:
            processes.stop(reader)

        assert all(gone(pid) for pid in pids)
        assert not camera.running
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()

        camera.start()

        assert camera.port == port
        assert camera.url_for("/b") == url_b
        assert camera.server_pid not in pids
        for path in camera.paths:
            jpeg = assert_clean_jpeg(grab_jpeg(camera.url_for(path)))
            assert jpeg_size(jpeg) == (320, 180)
        assert camera.server_pid is not None
        restarted_pids = [camera.server_pid, *camera.keeper_pids]

    assert all(gone(pid) for pid in restarted_pids)


@pytest.mark.parametrize("mode", ["mute", "no-media"])
def test_silent_server_accepts_but_sends_no_video(mode: SilenceMode) -> None:
    with SilentRtspServer(mode=mode) as server:
        argv = [
            *ffmpeg_cmd(),
            "-rtsp_transport",
            "tcp",
            "-timeout",
            "1000000",
            "-i",
            server.url,
            "-frames:v",
            "1",
            "-f",
            "image2",
            "-c:v",
            "mjpeg",
            "pipe:1",
        ]
        result = subprocess.run(argv, capture_output=True, timeout=GRAB_TIMEOUT_S, check=False)

        assert result.returncode != 0
        assert result.stdout == b""
        assert server.connections_accepted >= 1
        if mode == "no-media":
            assert "PLAY" in server.methods_seen


def test_camera_script_refuses_a_non_loopback_host() -> None:
    result = subprocess.run(
        [SYSTEM_PYTHON, str(CAMERA_SCRIPT), "--host", "0.0.0.0"],
        capture_output=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert b"not a loopback address" in result.stderr
    assert result.stdout == b""
