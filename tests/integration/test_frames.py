"""FrameStore on a real disk: atomic files under a reader thread, long polls, removal races.

The torn-file test runs real ffmpeg at full speed through read_frames into the store while a thread
reads the file as fast as it can. The race tests hold a file write inside its worker thread (a
patched writer waits on a threading.Event), so the interleavings they check are forced, not hoped
for.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from heldar.media.jpeg import jpeg_dimensions, read_frames
from heldar.media.process import FfmpegProcess
from heldar.services import frames as frames_module
from heldar.services.frames import Frame, FrameStore
from tests.support.binaries import ffmpeg_bin, ffmpeg_cmd

CAMERA = "cam_1"
PROFILE = "sub"
PUBLISH_FOR_S = 3.0  # long enough for thousands of reads and hundreds of publishes
MIN_READS = 2000  # a reader thread manages far more in PUBLISH_FOR_S; fewer means it was starved
DECODE_SAMPLES = 40  # reads also decoded by ffmpeg, spread over the run
DEADLINE_S = 10.0  # bound for things that should happen at once; never reached when green
SHORT_WAIT_S = 0.05
STOP_GRACE_S = 0.2  # a long poll that is meant to time out
JPEG = b"\xff\xd8" + b"\xff\xfe\x00\x04hi" + b"\xff\xd9"  # publish() does not look inside


@dataclass
class FakeClock:
    wall: datetime = field(default_factory=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    mono: float = 1000.0

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> FrameStore:
    return FrameStore(tmp_path / "frames", clock)


class HeldWrites:
    """Replaces the store's file writer: each write waits in its thread until released."""

    def __init__(self) -> None:
        self._real = frames_module._write_atomically
        self.entered = threading.Semaphore(0)
        self._release = threading.Semaphore(0)
        self.started = 0

    def __call__(self, path: Path, data: bytes) -> None:
        self.started += 1
        self.entered.release()
        assert self._release.acquire(timeout=DEADLINE_S), "a held write was never released"
        self._real(path, data)

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.acquire, timeout=DEADLINE_S)

    def release(self, count: int = 1) -> None:
        self._release.release(count)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldWrites]:
    writes = HeldWrites()
    monkeypatch.setattr(frames_module, "_write_atomically", writes)
    yield writes
    writes.release(100)  # never leave a worker thread blocked behind a failed test


class Hammer(threading.Thread):
    """Reads a file in a loop and checks that every read is a whole 320x180 JPEG."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="frame-reader", daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.reads = 0
        self.missing = 0
        self.bad_reads = 0
        self.bad: list[str] = []  # the first few, for the failure message
        self.samples: list[bytes] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:  # before the first publish
                self.missing += 1
                continue
            self.reads += 1
            try:
                assert data.startswith(b"\xff\xd8"), "no SOI"
                assert data.endswith(b"\xff\xd9"), "no EOI"
                assert jpeg_dimensions(data) == (320, 180)
            except (AssertionError, ValueError) as exc:
                self.bad_reads += 1
                if len(self.bad) < 5:
                    self.bad.append(f"read {self.reads} ({len(data)} bytes): {exc}")
            if self.reads % 100 == 1 and len(self.samples) < DECODE_SAMPLES:
                self.samples.append(data)


async def decoded_frame_count(path: Path) -> int:
    """How many frames ffmpeg decodes from a file of concatenated JPEGs; fails on any error."""
    argv = [ffmpeg_bin(), "-nostdin", "-v", "error", "-xerror", "-f", "image2pipe"]
    argv += ["-c:v", "mjpeg", "-i", str(path), "-f", "framecrc", "pipe:1"]
    async with await FfmpegProcess.start(argv, label="decode samples") as proc:
        async with asyncio.timeout(DEADLINE_S):
            out = await proc.stdout.read()
            assert await proc.wait() == 0, proc.stderr_tail()
        assert proc.stderr_tail() == ""
    return sum(1 for line in out.decode().splitlines() if line and not line.startswith("#"))


async def test_readers_never_see_a_torn_file_while_ffmpeg_frames_pour_in(
    tmp_path: Path, store: FrameStore, clock: FakeClock
) -> None:
    argv = ffmpeg_cmd()
    argv += ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"]
    argv += ["-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "5", "pipe:1"]
    hammer = Hammer(store.path(CAMERA, PROFILE))
    hammer.start()
    published: list[Frame] = []
    try:
        async with await FfmpegProcess.start(argv, label="torn-file test") as proc:
            end = time.monotonic() + PUBLISH_FOR_S
            async with contextlib.aclosing(read_frames(proc.stdout)) as frames:
                async for data in frames:
                    clock.advance(0.04)
                    published.append(await store.publish(CAMERA, PROFILE, data, 320, 180))
                    if time.monotonic() >= end:
                        break
            # ffmpeg sits in a write to the full pipe and does not see SIGTERM; no need to wait.
            await proc.stop(grace_s=STOP_GRACE_S)
    finally:
        hammer.stop.set()
        await asyncio.to_thread(hammer.join, DEADLINE_S)

    assert hammer.bad_reads == 0, hammer.bad
    assert hammer.reads >= MIN_READS, f"only {hammer.reads} reads ({hammer.missing} missing)"
    assert len(published) > 100
    assert [frame.seq for frame in published] == list(range(1, len(published) + 1))
    latest = store.latest(CAMERA, PROFILE)
    assert latest is published[-1]
    assert store.path(CAMERA, PROFILE).read_bytes() == latest.data
    assert sorted(p.name for p in store.path(CAMERA, PROFILE).parent.iterdir()) == [
        "latest_sub.jpg"  # no temp file left behind
    ]
    # The structural checks above passed for every read; a sample also decodes cleanly.
    sample_file = tmp_path / "samples.mjpeg"
    sample_file.write_bytes(b"".join(hammer.samples))
    assert await decoded_frame_count(sample_file) == len(hammer.samples) > 10


async def test_publish_numbers_frames_stamps_them_and_writes_the_file(
    store: FrameStore, clock: FakeClock
) -> None:
    assert store.latest(CAMERA, PROFILE) is None
    first = await store.publish(CAMERA, PROFILE, JPEG, 320, 180)
    clock.advance(0.5)
    second = await store.publish(CAMERA, PROFILE, JPEG + b"2", 320, 180)

    assert (first.seq, second.seq) == (1, 2)
    assert first.captured_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert second.captured_at == first.captured_at + timedelta(seconds=0.5)
    assert second.captured_monotonic - first.captured_monotonic == 0.5
    assert (second.width, second.height) == (320, 180)
    assert first.etag == f'"1-{first.token}"'
    assert second.etag != first.etag
    assert store.latest(CAMERA, PROFILE) is second
    assert store.path(CAMERA, PROFILE) == store.frames_dir / CAMERA / "latest_sub.jpg"
    assert store.path(CAMERA, PROFILE).read_bytes() == JPEG + b"2"
    assert "data" not in repr(second)  # a repr must not dump the JPEG


async def test_slots_are_independent(store: FrameStore) -> None:
    sub = await store.publish(CAMERA, "sub", JPEG, 320, 180)
    main = await store.publish(CAMERA, "main", JPEG, 1280, 720)
    other = await store.publish("cam_2", "sub", JPEG, 320, 180)
    assert sub.seq == main.seq == other.seq == 1
    assert len({sub.token, main.token, other.token}) == 3
    await store.remove(CAMERA, "sub")
    assert store.latest(CAMERA, "main") is main
    assert store.path(CAMERA, "main").exists()


async def test_an_etag_never_matches_across_a_recreated_slot(store: FrameStore) -> None:
    before = await store.publish(CAMERA, PROFILE, JPEG, 320, 180)
    await store.remove(CAMERA, PROFILE)
    after = await store.publish(CAMERA, PROFILE, JPEG, 320, 180)
    assert after.seq == before.seq == 1
    assert after.etag != before.etag
    assert await store.wait_newer(CAMERA, PROFILE, before.etag, SHORT_WAIT_S) is after


async def test_wait_newer_with_the_current_etag_times_out_with_none(store: FrameStore) -> None:
    frame = await store.publish(CAMERA, PROFILE, JPEG, 320, 180)
    started = time.monotonic()
    assert await store.wait_newer(CAMERA, PROFILE, frame.etag, SHORT_WAIT_S) is None
    assert time.monotonic() - started >= SHORT_WAIT_S * 0.9
    assert await store.wait_newer(CAMERA, PROFILE, frame.etag, 0) is None


async def test_wait_newer_returns_at_once_for_a_stale_or_no_etag(store: FrameStore) -> None:
    first = await store.publish(CAMERA, PROFILE, JPEG, 320, 180)
    second = await store.publish(CAMERA, PROFILE, JPEG, 320, 180)
    async with asyncio.timeout(DEADLINE_S / 2):  # far less than the wait asked for
        assert await store.wait_newer(CAMERA, PROFILE, first.etag, DEADLINE_S) is second
        assert await store.wait_newer(CAMERA, PROFILE, None, DEADLINE_S) is second
        assert await store.wait_newer(CAMERA, PROFILE, '"1-other"', DEADLINE_S) is second


async def test_wait_newer_without_a_frame_waits_for_the_first_one(store: FrameStore) -> None:
    started = time.monotonic()
    assert await store.wait_newer(CAMERA, PROFILE, None, SHORT_WAIT_S) is None  # timed out
    assert time.monotonic() - started >= SHORT_WAIT_S * 0.9
    waiters = [
        asyncio.create_task(store.wait_newer(CAMERA, PROFILE, None, DEADLINE_S)) for _ in range(3)
    ]
    await asyncio.sleep(0)  # let them start waiting
    first = await store.publish(CAMERA, PROFILE, JPEG, 320, 180)
    async with asyncio.timeout(DEADLINE_S / 2):  # woken by the publish, not by the deadline
        assert await asyncio.gather(*waiters) == [first] * 3
    assert store._arrivals == {}  # nothing left behind for keys that got their frame


async def test_wait_newer_wakes_every_waiter_on_publish(store: FrameStore) -> None:
    frame = await store.publish(CAMERA, PROFILE, JPEG, 320, 180)
    waiters = [
        asyncio.create_task(store.wait_newer(CAMERA, PROFILE, frame.etag, DEADLINE_S))
        for _ in range(3)
    ]
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in waiters)
    newer = await store.publish(CAMERA, PROFILE, JPEG, 320, 180)
    async with asyncio.timeout(DEADLINE_S / 2):
        assert await asyncio.gather(*waiters) == [newer] * 3


async def test_remove_deletes_the_file_and_answers_waiters_none(store: FrameStore) -> None:
    frame = await store.publish(CAMERA, PROFILE, JPEG, 320, 180)
    path = store.path(CAMERA, PROFILE)
    waiter = asyncio.create_task(store.wait_newer(CAMERA, PROFILE, frame.etag, DEADLINE_S))
    await asyncio.sleep(0.01)
    await store.remove(CAMERA, PROFILE)
    async with asyncio.timeout(DEADLINE_S / 2):
        assert await waiter is None
    assert store.latest(CAMERA, PROFILE) is None
    assert not path.exists()
    assert not path.parent.exists()  # the camera directory went with its last frame
    await store.remove(CAMERA, PROFILE)  # idempotent


async def test_remove_keeps_the_directory_of_another_profile(store: FrameStore) -> None:
    await store.publish(CAMERA, "sub", JPEG, 320, 180)
    await store.publish(CAMERA, "main", JPEG, 1280, 720)
    await store.remove(CAMERA, "sub")
    assert sorted(p.name for p in store.path(CAMERA, "main").parent.iterdir()) == [
        "latest_main.jpg"
    ]


async def test_remove_deletes_a_file_left_by_an_earlier_run(store: FrameStore) -> None:
    path = store.path(CAMERA, PROFILE)
    path.parent.mkdir(parents=True)
    path.write_bytes(JPEG)
    (path.parent / ".latest_sub.jpg.0123abcd.tmp").write_bytes(b"half")  # a crash mid-write
    await store.remove(CAMERA, PROFILE)
    assert not path.parent.exists()


async def test_a_publish_in_flight_during_remove_leaves_no_file(
    store: FrameStore, held: HeldWrites
) -> None:
    writing = asyncio.create_task(store.publish(CAMERA, PROFILE, JPEG, 320, 180))
    await held.wait_entered()  # its file write is inside the worker thread
    queued = asyncio.create_task(store.publish(CAMERA, PROFILE, JPEG, 320, 180))
    await asyncio.sleep(0.01)  # queued behind the write, before remove() is called
    removing = asyncio.create_task(store.remove(CAMERA, PROFILE))
    await asyncio.sleep(0.01)
    assert store.latest(CAMERA, PROFILE) is None  # gone from memory at once
    assert not removing.done()  # the file is deleted only after the write in flight
    held.release(2)
    async with asyncio.timeout(DEADLINE_S):
        await asyncio.gather(writing, queued, removing)
    assert held.started == 1  # the queued publish saw the removal and wrote nothing
    assert store.latest(CAMERA, PROFILE) is None
    assert not store.path(CAMERA, PROFILE).exists()
    assert not store.path(CAMERA, PROFILE).parent.exists()


async def test_a_publish_after_remove_began_creates_a_new_slot_that_keeps_its_file(
    store: FrameStore, held: HeldWrites
) -> None:
    old = asyncio.create_task(store.publish(CAMERA, PROFILE, JPEG, 320, 180))
    await held.wait_entered()
    removing = asyncio.create_task(store.remove(CAMERA, PROFILE))
    await asyncio.sleep(0.01)
    new = asyncio.create_task(store.publish(CAMERA, PROFILE, JPEG + b"new", 320, 180))
    held.release(2)
    async with asyncio.timeout(DEADLINE_S):
        old_frame, _, new_frame = await asyncio.gather(old, removing, new)
    assert new_frame.seq == 1
    assert new_frame.token != old_frame.token
    assert store.latest(CAMERA, PROFILE) is new_frame
    assert store.path(CAMERA, PROFILE).read_bytes() == JPEG + b"new"


async def test_a_slow_write_of_an_older_frame_never_lands_after_a_newer_one(
    store: FrameStore, held: HeldWrites
) -> None:
    older = asyncio.create_task(store.publish(CAMERA, PROFILE, JPEG + b"1", 320, 180))
    await held.wait_entered()
    newer = asyncio.create_task(store.publish(CAMERA, PROFILE, JPEG + b"2", 320, 180))
    await asyncio.sleep(0.01)
    assert held.started == 1  # the newer write waits for the older one
    held.release(2)
    async with asyncio.timeout(DEADLINE_S):
        frames = await asyncio.gather(older, newer)
    assert [frame.seq for frame in frames] == [1, 2]
    assert store.latest(CAMERA, PROFILE) is frames[1]
    assert store.path(CAMERA, PROFILE).read_bytes() == JPEG + b"2"


async def test_a_cancelled_publish_still_finishes_its_write_before_the_next(
    store: FrameStore, held: HeldWrites
) -> None:
    cancelled = asyncio.create_task(store.publish(CAMERA, PROFILE, JPEG + b"1", 320, 180))
    await held.wait_entered()
    cancelled.cancel()
    newer = asyncio.create_task(store.publish(CAMERA, PROFILE, JPEG + b"2", 320, 180))
    await asyncio.sleep(0.01)
    assert not cancelled.done()  # it waits for its thread, holding the slot's file
    assert held.started == 1
    held.release(2)
    async with asyncio.timeout(DEADLINE_S):
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        frame = await newer
    assert store.latest(CAMERA, PROFILE) is frame
    assert store.path(CAMERA, PROFILE).read_bytes() == JPEG + b"2"


async def test_publish_and_remove_of_sibling_profiles_do_not_trip_over_the_directory(
    store: FrameStore,
) -> None:
    async def churn(profile: str) -> None:
        for _ in range(100):
            await store.publish(CAMERA, profile, JPEG, 320, 180)
            await store.remove(CAMERA, profile)

    async with asyncio.timeout(DEADLINE_S):
        await asyncio.gather(churn("sub"), churn("main"))
    assert not store.path(CAMERA, "sub").parent.exists()


@pytest.mark.parametrize(("camera_id", "profile"), [("../etc", "sub"), (CAMERA, "a/b"), ("", "x")])
async def test_names_that_are_not_slugs_are_refused(
    store: FrameStore, camera_id: str, profile: str
) -> None:
    with pytest.raises(ValueError, match="cannot name a frame file"):
        await store.publish(camera_id, profile, JPEG, 320, 180)
