"""FfmpegProcess with real children: exit, stop, group kill, cancellation, stderr, spawn errors.

Every check of "nothing left" uses psutil: the child is not among our (recursive) children, and its
pid is gone or belongs to someone else; a grandchild is gone or a zombie of init's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from heldar.errors import Unavailable
from heldar.media.process import FfmpegProcess

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")

DEADLINE_S = 10.0  # upper bound for anything that should happen at once; never reached when green
POLL_S = 0.01
MARK = "heldar-process-test"  # in every child's argv, so `ps` shows leftovers of this module
PASSWORD = "s3cret"
URL = f"rtsp://admin:{PASSWORD}@127.0.0.1:554/x"

SLEEPER = "import time\nwhile True: time.sleep(1000)"
# Ignores SIGTERM but says so on stdout, so a test knows stop() is inside its grace period.
TERM_IGNORER = """
import os, signal, time
signal.signal(signal.SIGTERM, lambda signum, frame: os.write(1, b"term\\n"))
os.write(1, b"ready\\n")
while True: time.sleep(1000)
"""


def python(script: str, *args: str) -> list[str]:
    return [sys.executable, "-c", script, MARK, *args]


def lavfi_argv(*output: str, rate: int = 5, realtime: bool = False) -> list[str]:
    """ffmpeg reading an endless test pattern (``-re``: at its frame rate)."""
    assert FFMPEG is not None
    return [
        FFMPEG,
        "-nostdin",
        "-hide_banner",
        *(["-re"] if realtime else []),
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size=64x64:rate={rate}",
        *output,
    ]


@pytest.fixture(autouse=True)
def no_asyncio_complaints(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No "Task was destroyed", "Unknown child process" or similar from asyncio."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    yield
    complaints = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert complaints == []


@pytest.fixture(autouse=True)
async def no_task_left() -> AsyncIterator[None]:
    """stop() owns its cleanup task and awaits it: nothing may still be pending after a test."""
    yield
    left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    assert left == []


def assert_reaped(pid: int) -> None:
    assert pid not in {child.pid for child in psutil.Process().children(recursive=True)}
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(pid)  # the pid was reused: it must not be our zombie
        assert process.ppid() != os.getpid() or process.status() != psutil.STATUS_ZOMBIE


def live_members(pgid: int) -> list[int]:
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
    return members


async def assert_group_dies(pgid: int) -> None:
    """SIGKILL is asynchronous for grandchildren we do not wait for: poll, with a deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while members := live_members(pgid):
        assert time.monotonic() < deadline, f"still alive in group {pgid}: {members}"
        await asyncio.sleep(POLL_S)


async def read_line(proc: FfmpegProcess) -> bytes:
    async with asyncio.timeout(DEADLINE_S):
        return await proc.stdout.readline()


@needs_ffmpeg
async def test_a_child_that_exits_by_itself_is_read_to_eof_and_reaped() -> None:
    argv = lavfi_argv("-frames:v", "3", "-f", "image2pipe", "-c:v", "mjpeg", "pipe:1")
    async with await FfmpegProcess.start(argv, label="testsrc") as proc:
        async with asyncio.timeout(DEADLINE_S):
            data = await proc.stdout.read()
            assert await proc.wait() == 0
    assert data.startswith(b"\xff\xd8")
    assert data.count(b"\xff\xd8") == 3  # one start-of-image marker per frame
    assert proc.returncode == 0
    assert await proc.stop() == 0
    assert_reaped(proc.pid)
    await assert_group_dies(proc.pid)


@needs_ffmpeg
async def test_stop_terminates_a_hanging_ffmpeg_within_the_grace() -> None:
    argv = lavfi_argv("-f", "image2pipe", "-c:v", "mjpeg", "pipe:1", rate=25, realtime=True)
    proc = await FfmpegProcess.start(argv, label="endless")
    try:
        assert await proc.stdout.readexactly(2) == b"\xff\xd8"  # running: a frame came out
    finally:
        started_s = time.monotonic()
        returncode = await proc.stop(grace_s=5.0)
    assert time.monotonic() - started_s < 5.0
    assert returncode == 255  # ffmpeg's exit code after SIGTERM: it finished on its own terms
    assert_reaped(proc.pid)
    await assert_group_dies(proc.pid)


async def test_stop_is_not_blocked_by_stdout_nobody_reads() -> None:
    # The child fills the pipe; the reader pauses it at 2 x 1 KiB. asyncio's Process.wait() would
    # hang here after the kill, because a paused pipe never reports EOF.
    writer = "import os, time\nos.write(1, b'x' * 1_000_000)\ntime.sleep(1000)"
    proc = await FfmpegProcess.start(python(writer), label="flood", stdout_limit_bytes=1024)
    assert await proc.stdout.readexactly(1) == b"x"
    async with asyncio.timeout(DEADLINE_S):
        assert await proc.stop(grace_s=5.0) == -signal.SIGTERM
        rest = await proc.stdout.read()  # what was buffered, then EOF
    assert 0 < len(rest) < 1_000_000
    assert_reaped(proc.pid)


async def test_stop_kills_a_child_that_ignores_sigterm_and_its_grandchild() -> None:
    # The background sleep inherits the ignored SIGTERM; only SIGKILL to the group ends both.
    script = 'trap "" TERM; sleep 1000 & echo $!; wait'
    proc = await FfmpegProcess.start(["sh", "-c", script, MARK], label="stubborn")
    grandchild = int(await read_line(proc))
    assert os.getpgid(grandchild) == proc.pid
    started_s = time.monotonic()
    assert await proc.stop(grace_s=0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started_s < DEADLINE_S
    assert_reaped(proc.pid)
    await assert_group_dies(proc.pid)


async def test_stop_after_a_clean_exit_still_kills_leftover_grandchildren() -> None:
    # sh exits at once; its sleep stays in the group and holds stdout and stderr open.
    proc = await FfmpegProcess.start(["sh", "-c", "sleep 1000 & echo $!", MARK], label="leaver")
    grandchild = int(await read_line(proc))
    async with asyncio.timeout(DEADLINE_S):
        assert await proc.wait() == 0  # exit is reported although the pipes are still open
        assert psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE
        assert await proc.stop() == 0
    assert_reaped(proc.pid)
    await assert_group_dies(proc.pid)


async def test_a_cancelled_waiter_leaves_no_child() -> None:
    started = asyncio.Event()
    procs: list[FfmpegProcess] = []

    async def run() -> None:
        async with await FfmpegProcess.start(python(SLEEPER), label="waiter") as proc:
            procs.append(proc)
            started.set()
            await proc.wait()

    task = asyncio.create_task(run())
    async with asyncio.timeout(DEADLINE_S):
        await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (proc,) = procs
    assert proc.returncode == -signal.SIGTERM
    assert_reaped(proc.pid)
    await assert_group_dies(proc.pid)


async def test_cancelling_the_task_inside_stop_still_reaps_the_child() -> None:
    proc = await FfmpegProcess.start(python(TERM_IGNORER), label="ignorer")
    assert await read_line(proc) == b"ready\n"
    stopper = asyncio.create_task(proc.stop(grace_s=0.5))
    assert await read_line(proc) == b"term\n"  # stop() sent SIGTERM and is waiting out the grace
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    # The cancellation surfaced only after the cleanup: SIGKILL, reaped, pipes closed.
    assert proc.returncode == -signal.SIGKILL
    assert_reaped(proc.pid)
    await assert_group_dies(proc.pid)
    assert await proc.stop() == -signal.SIGKILL  # idempotent
    assert await proc.stdout.read() == b""


async def test_concurrent_stops_share_one_cleanup() -> None:
    proc = await FfmpegProcess.start(python(SLEEPER), label="twice", capture_stdout=False)
    async with asyncio.timeout(DEADLINE_S):
        codes = await asyncio.gather(proc.stop(), proc.stop(grace_s=0.0), proc.stop())
    assert codes == [-signal.SIGTERM] * 3
    assert_reaped(proc.pid)
    with pytest.raises(RuntimeError, match="not captured"):
        _ = proc.stdout


async def test_stderr_tail_is_bounded_redacted_and_ends_with_the_latest_line() -> None:
    writer = f"""
import sys
err = sys.stderr
for i in range(300):
    err.write(f"[rtsp @ 0x1] {URL} failed {{i}}\\n")
err.write("x" * 5000 + " {URL}\\n")  # longer than the limit
err.write("{URL}" * 300 + "\\n")  # one token longer than the limit
for i in range(300):
    err.write(f"[rtsp @ 0x1] {URL} retry {{i}}\\n")
err.write("last line {URL}\\n")
"""
    async with await FfmpegProcess.start(
        python(writer), label="chatty", capture_stdout=False, stderr_limit_bytes=1024
    ) as proc:
        async with asyncio.timeout(DEADLINE_S):
            assert await proc.wait() == 0
    tail = proc.stderr_tail()
    assert len(tail.encode()) <= 1024
    assert tail.endswith("last line rtsp://***@127.0.0.1:554/x")
    assert "retry 299" in tail
    assert "failed" not in tail  # the oldest lines went first
    assert PASSWORD not in tail
    assert "cret" not in tail


async def test_progress_lines_overwrite_each_other_and_keep_the_error() -> None:
    writer = f"""
import sys
sys.stderr.write("[rtsp @ 0x1] {URL}: 401 Unauthorized\\n")
for i in range(1000):  # ~40 KiB of progress, far over the limit
    sys.stderr.write(f"frame={{i:5d}} fps=25 q=2.0 size=N/A time=00:00:00.00 speed=1x\\r")
"""
    async with await FfmpegProcess.start(
        python(writer), label="progress", capture_stdout=False, stderr_limit_bytes=1024
    ) as proc:
        async with asyncio.timeout(DEADLINE_S):
            await proc.wait()
    assert proc.stderr_tail() == (
        "[rtsp @ 0x1] rtsp://***@127.0.0.1:554/x: 401 Unauthorized\n"
        "frame=  999 fps=25 q=2.0 size=N/A time=00:00:00.00 speed=1x"
    )


@needs_ffmpeg
async def test_ffmpegs_own_error_about_a_url_is_redacted() -> None:
    assert FFMPEG is not None
    refused = f"rtsp://admin:{PASSWORD}@127.0.0.1:1/x"  # nothing listens on port 1
    argv = [FFMPEG, "-nostdin", "-rtsp_transport", "tcp", "-i", refused, "-f", "null", "-"]
    async with await FfmpegProcess.start(argv, label="refused", capture_stdout=False) as proc:
        async with asyncio.timeout(DEADLINE_S):
            assert await proc.wait() != 0
    assert "rtsp://***@127.0.0.1:1/x: Connection refused" in proc.stderr_tail()
    assert PASSWORD not in proc.stderr_tail()


async def test_a_missing_binary_is_unavailable_and_named(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="heldar-no-such-binary") as missing:
        await FfmpegProcess.start(["heldar-no-such-binary", "-i", URL], label="missing")
    assert "No such file" in missing.value.message
    not_executable = tmp_path / "ffmpeg"
    not_executable.write_text("")
    with pytest.raises(Unavailable, match="Permission denied"):
        await FfmpegProcess.start([str(not_executable)], label="not executable")
    with pytest.raises(Unavailable) as odd:  # even a credential in the binary's path is masked
        await FfmpegProcess.start([f"/nonexistent/{URL}"], label="odd")
    assert PASSWORD not in str(odd.value)


async def test_repr_masks_the_password_in_argv() -> None:
    proc = await FfmpegProcess.start(python(SLEEPER, "-i", URL), label="cam 1 sub")
    try:
        running = repr(proc)
    finally:
        await proc.stop()
    assert PASSWORD not in running
    assert "rtsp://***@127.0.0.1:554/x" in running
    assert f"'cam 1 sub' pid={proc.pid} running" in running
    stopped = repr(proc)
    assert PASSWORD not in stopped
    assert "stopped returncode=-15" in stopped
