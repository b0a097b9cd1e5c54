"""Retention against a real SQLite database and real files; the disk floor uses a fake disk.

Every test checks that rows and files agree afterwards: each remaining row has its file, each
deleted row's file is gone, no other snapshot file is left, and the deleted ones are the oldest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from heldar.config import Settings, load_settings
from heldar.db import migrate
from heldar.db.engine import create_engine
from heldar.kernel import Kernel
from heldar.services import retention as retention_module
from heldar.services.cameras import CameraCreate, CameraRegistry
from heldar.services.events import EventLog, Severity
from heldar.services.retention import (
    DISK_LOW_EVENT,
    DISK_OK_EVENT,
    Retention,
    RetentionPolicy,
    RetentionReason,
    SweepResult,
)
from heldar.services.snapshots import Shot, Snapshot, SnapshotSource, SnapshotStore
from tests.support.images import lavfi_jpeg
from tests.support.polling import eventually

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
HOUR_S = 3600.0
INTERVAL_S = 300.0
CAMERAS = ("cam_a", "cam_b")  # snapshots alternate between them: order is global, not per camera
DEADLINE_S = 10.0  # bound for things that should happen at once; never reached when green
SMALL_BATCH_ROWS = 3  # forces several batches out of a handful of snapshots


@dataclass
class FakeClock:
    wall: datetime = NOW
    mono: float = 1000.0

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> datetime:
        return self.wall


@dataclass
class FakeDisk:
    """A filesystem of ``capacity_bytes`` holding only the snapshot files (or a fixed answer)."""

    capacity_bytes: int = 10**12
    fixed_free_bytes: int | None = None
    calls: list[Path] = field(default_factory=list)

    def __call__(self, path: Path) -> int:
        self.calls.append(path)
        if self.fixed_free_bytes is not None:
            return self.fixed_free_bytes
        used = sum(f.stat().st_size for f in path.rglob("*.jpg") if f.is_file())
        return self.capacity_bytes - used


@dataclass
class Env:
    store: SnapshotStore
    events: EventLog
    clock: FakeClock
    jpeg: bytes = field(repr=False)

    @property
    def size_bytes(self) -> int:
        return len(self.jpeg)

    def retention(
        self,
        *,
        max_age_h: float | None = None,
        max_total_bytes: int | None = None,
        min_free_bytes: int = 0,
        disk: Callable[[Path], int] | None = None,
    ) -> Retention:
        policy = RetentionPolicy(
            max_age_s=max_age_h * HOUR_S if max_age_h is not None else None,
            max_total_bytes=max_total_bytes,
            min_free_bytes=min_free_bytes,
            interval_s=INTERVAL_S,
        )
        return Retention(self.store, self.events, self.clock, policy, free_bytes=disk or FakeDisk())

    async def populate(self, ages_h: list[float]) -> list[Snapshot]:
        """One snapshot per age (hours before NOW), returned oldest first."""
        stored = []
        for i, age_h in enumerate(sorted(ages_h, reverse=True)):
            taken_at = NOW - timedelta(hours=age_h)
            shot = Shot(self.jpeg, 16, 16, taken_at, SnapshotSource.GRAB)
            stored.append(
                await self.store.store(CAMERAS[i % len(CAMERAS)], shot, taken_at=taken_at)
            )
        return stored

    async def assert_kept_exactly(self, all_oldest_first: list[Snapshot], kept: int) -> None:
        """The ``kept`` newest snapshots remain, row and file; the others are gone, both."""
        cut = len(all_oldest_first) - kept
        deleted, remaining = all_oldest_first[:cut], all_oldest_first[cut:]
        rows = await self.store.list(None, oldest_first=True, limit=10_000)
        assert [r.id for r in rows] == [s.id for s in remaining]
        for snapshot in remaining:
            assert self.store.file_path(snapshot).read_bytes() == self.jpeg
        for snapshot in deleted:
            assert not self.store.file_path(snapshot).exists()
        on_disk = {
            p.relative_to(self.store.snapshots_dir).as_posix()
            for p in self.store.snapshots_dir.rglob("*")
            if p.is_file()
        }
        assert on_disk == {s.path for s in remaining}


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    """A small valid JPEG, made once by ffmpeg."""
    return lavfi_jpeg("testsrc=size=16x16:rate=1")


@pytest.fixture
async def env(tmp_path: Path, jpeg: bytes) -> AsyncIterator[Env]:
    clock = FakeClock()
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'heldar.db'}")
    try:
        await migrate.upgrade(engine)
        cameras = CameraRegistry(engine, clock, media_dir=tmp_path / "media")
        for camera_id in CAMERAS:
            await cameras.create(
                CameraCreate(
                    id=camera_id, name=camera_id, main_stream_url="rtsp://127.0.0.1:8554/x"
                )
            )
        store = SnapshotStore(engine, clock, tmp_path / "snapshots")
        yield Env(store, EventLog(engine, clock), clock, jpeg)
    finally:
        await engine.dispose()


def by_reason(age: int = 0, size_cap: int = 0, disk_floor: int = 0) -> dict[RetentionReason, int]:
    return {
        RetentionReason.AGE: age,
        RetentionReason.SIZE_CAP: size_cap,
        RetentionReason.DISK_FLOOR: disk_floor,
    }


async def test_sweep_deletes_snapshots_past_the_age_limit(env: Env) -> None:
    stored = await env.populate([9, 8, 7, 6, 5, 4, 3, 2, 1, 0.5])
    result = await env.retention(max_age_h=4.5).sweep()
    assert result.deleted_by_reason == by_reason(age=5)
    assert result.freed_bytes == 5 * env.size_bytes
    assert (result.error, result.disk_low) == (None, False)
    assert (result.started_at, result.finished_at) == (NOW, NOW)
    await env.assert_kept_exactly(stored, kept=5)


async def test_sweep_evicts_oldest_until_under_the_size_cap(env: Env) -> None:
    stored = await env.populate([float(h) for h in range(12, 0, -1)])
    cap_bytes = 5 * env.size_bytes + env.size_bytes // 2
    result = await env.retention(max_total_bytes=cap_bytes).sweep()
    assert result.deleted_by_reason == by_reason(size_cap=7)
    assert (await env.store.usage())[1] <= cap_bytes
    await env.assert_kept_exactly(stored, kept=5)


async def test_sweep_frees_space_up_to_the_disk_floor(env: Env) -> None:
    stored = await env.populate([float(h) for h in range(10, 0, -1)])
    size = env.size_bytes
    disk = FakeDisk(capacity_bytes=12 * size)  # 10 snapshots stored: 2 sizes free
    result = await env.retention(min_free_bytes=5 * size, disk=disk).sweep()
    assert result.deleted_by_reason == by_reason(disk_floor=3)
    assert disk(env.store.snapshots_dir) == 5 * size
    assert result.disk_low is False
    assert await env.events.query(limit=10) == []
    await env.assert_kept_exactly(stored, kept=7)


async def test_limits_apply_in_order_age_cap_floor_across_batches(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_module, "SWEEP_BATCH_ROWS", SMALL_BATCH_ROWS)
    stored = await env.populate([float(h) for h in range(20, 0, -1)])
    size = env.size_bytes
    retention = env.retention(
        max_age_h=15.5,  # the 5 oldest
        max_total_bytes=10 * size,  # 15 left: 5 more
        min_free_bytes=4 * size,  # 10 left on a disk of 12: 2 more
        disk=FakeDisk(capacity_bytes=12 * size),
    )
    result = await retention.sweep()
    assert result.deleted_by_reason == by_reason(age=5, size_cap=5, disk_floor=2)
    assert result.deleted == 12
    await env.assert_kept_exactly(stored, kept=8)
    again = await retention.sweep()
    assert again.deleted == 0
    await env.assert_kept_exactly(stored, kept=8)


async def test_unreachable_floor_deletes_all_and_warns_once_per_transition(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_module, "SWEEP_BATCH_ROWS", SMALL_BATCH_ROWS)
    stored = await env.populate([5, 4, 3, 2, 1, 0.5, 0.25])
    disk = FakeDisk(fixed_free_bytes=0)  # something else fills the disk
    retention = env.retention(min_free_bytes=1000, disk=disk)

    first = await retention.sweep()
    assert first.deleted_by_reason == by_reason(disk_floor=7)
    assert first.disk_low is True
    await env.assert_kept_exactly(stored, kept=0)
    assert (await retention.sweep()).disk_low is True  # still low: no second event
    events = await env.events.query(limit=10)
    assert [(e.event_type, e.severity) for e in events] == [(DISK_LOW_EVENT, Severity.WARNING)]
    assert events[0].payload["free_bytes"] == 0
    assert events[0].payload["min_free_bytes"] == 1000

    disk.fixed_free_bytes = 10**9
    assert (await retention.sweep()).disk_low is False
    assert (await retention.sweep()).disk_low is False
    events = await env.events.query(limit=10)
    assert [e.event_type for e in events] == [DISK_OK_EVENT, DISK_LOW_EVENT]


async def test_nothing_to_do_deletes_nothing(env: Env) -> None:
    stored = await env.populate([3, 2, 1])
    result = await env.retention(
        max_age_h=4, max_total_bytes=3 * env.size_bytes, min_free_bytes=1
    ).sweep()
    assert result.deleted == 0
    await env.assert_kept_exactly(stored, kept=3)


async def test_status_reports_policy_usage_and_last_sweep(env: Env) -> None:
    await env.populate([3, 2, 1])
    retention = env.retention(max_age_h=2.5, disk=FakeDisk(fixed_free_bytes=123))
    before = await retention.status()
    assert before.last_sweep is None
    assert (before.snapshot_count, before.total_bytes) == (3, 3 * env.size_bytes)
    assert before.disk_free_bytes == 123
    assert before.disk_total_bytes > 0
    await retention.sweep()
    after = await retention.status()
    assert (after.snapshot_count, after.total_bytes) == (2, 2 * env.size_bytes)
    assert after.last_sweep is not None
    assert after.last_sweep.deleted_by_reason == by_reason(age=1)


async def test_failed_sweep_is_recorded_and_run_goes_on(env: Env) -> None:
    stored = await env.populate([3, 2, 1])

    def broken_disk(path: Path) -> int:
        raise OSError(f"statvfs failed on {path}")

    retention = env.retention(max_age_h=0.1, disk=broken_disk)

    async def last_sweep() -> SweepResult | None:
        return retention.last_sweep

    task = asyncio.create_task(retention.run())  # awaited below
    try:
        last = await eventually(last_sweep, DEADLINE_S, "the first sweep of run()")
        assert last.error is not None and "statvfs failed" in last.error
        assert last.disk_low is None
        assert not task.done()
        with pytest.raises(OSError, match="statvfs failed"):
            await retention.sweep()
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await env.assert_kept_exactly(stored, kept=3)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A one-hour age limit and no floor (the test disk's free space is unknown)."""
    return load_settings(
        {}, data_dir=tmp_path / "data", snapshot_retention_hours=1, min_free_disk_gb=0
    )


async def test_api_reports_policy_usage_and_last_sweep(
    kernel_client: tuple[Kernel, httpx.AsyncClient], jpeg: bytes
) -> None:
    kernel, client = kernel_client
    # The kernel sweeps once at start; wait for it so it cannot take part in this test.

    async def last_sweep() -> SweepResult | None:
        return kernel.retention.last_sweep

    await eventually(last_sweep, DEADLINE_S, "the start-up sweep")
    await kernel.cameras.create(
        CameraCreate(id="cam", name="Cam", main_stream_url="rtsp://127.0.0.1:8554/x")
    )
    now = kernel.clock.now()
    for age in (timedelta(hours=3), timedelta(hours=2), timedelta(minutes=10)):
        shot = Shot(jpeg, 16, 16, now - age, SnapshotSource.GRAB)
        await kernel.snapshots.store("cam", shot, taken_at=now - age)

    await kernel.retention.sweep()
    response = await client.get("/api/v1/system/retention")

    assert response.status_code == 200
    body = response.json()
    last = body.pop("last_sweep")
    assert body.pop("disk_free_bytes") > 0
    assert body.pop("disk_total_bytes") > 0
    assert body == {
        "max_age_hours": 1.0,
        "max_total_bytes": None,
        "min_free_bytes": 0,
        "interval_s": kernel.settings.retention_interval_s,
        "snapshot_count": 1,
        "total_bytes": len(jpeg),
    }
    assert last["started_at"].endswith("Z") and last["finished_at"].endswith("Z")
    assert last["started_at"] <= last["finished_at"]
    assert {k: v for k, v in last.items() if not k.endswith("_at")} == {
        "deleted": 2,
        "deleted_by_reason": {"age": 2, "size_cap": 0, "disk_floor": 0},
        "freed_bytes": 2 * len(jpeg),
        "disk_low": False,
        "error": None,
    }
