"""SPEC §3: migrations produce exactly the declared schema; SQLite is configured for service use."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.engine import Connection

from heldar.db import migrate
from heldar.db.engine import SQLITE_BUSY_TIMEOUT_MS, create_engine
from heldar.db.schema import ai_tasks, cameras, metadata, snapshot_schedules

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
HEAD_REVISION = "0003"


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


async def test_fresh_migrate_equals_declared_schema(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'db.sqlite'}")
    try:
        await migrate.upgrade(engine)
        await migrate.upgrade(engine)  # idempotent
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert tables >= {t.name for t in metadata.sorted_tables}
        assert await migrate.current_revision(engine) == HEAD_REVISION
    finally:
        await engine.dispose()


async def test_upgrade_from_0001_keeps_schedules_and_equals_fresh_schema(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    stamp = "2026-11-21 20:00:00.000000"
    try:
        await migrate.upgrade(engine, "0001")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO cameras (id, name, record_stream, created_at, updated_at) "
                    "VALUES ('cam', 'Cam', 'main', :t, :t)"
                ),
                {"t": stamp},
            )
            await conn.execute(
                text(
                    "INSERT INTO snapshot_schedules (id, camera_id, interval_seconds, "
                    "created_at, updated_at) VALUES ('snsch_1', 'cam', 60, :t, :t)"
                ),
                {"t": stamp},
            )
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            rows = (
                await conn.execute(
                    text("SELECT id, interval_seconds, next_due_at FROM snapshot_schedules")
                )
            ).all()
        assert [tuple(r) for r in rows] == [("snsch_1", 60, None)]
        assert await migrate.current_revision(engine) == HEAD_REVISION
    finally:
        await engine.dispose()


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            busy = (await conn.execute(text("PRAGMA busy_timeout"))).scalar()
            assert busy == SQLITE_BUSY_TIMEOUT_MS
    finally:
        await engine.dispose()


async def test_foreign_keys_cascade_and_constraints_hold(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        await migrate.upgrade(engine)
        camera = {"id": "cam1", "name": "Cam", "created_at": NOW, "updated_at": NOW}
        async with engine.begin() as conn:
            await conn.execute(insert(cameras).values(main_stream_url="rtsp://h/x", **camera))
            await conn.execute(
                insert(ai_tasks).values(
                    id="ai_" + "0" * 32, camera_id="cam1", task_type="motion", fps=2,
                    width=640, config={}, created_at=NOW, updated_at=NOW,
                )
            )  # fmt: skip
            await conn.execute(
                insert(snapshot_schedules).values(
                    id="snsch_" + "0" * 32, camera_id="cam1", interval_seconds=60,
                    created_at=NOW, updated_at=NOW,
                )
            )  # fmt: skip
        async with engine.connect() as conn:
            row = (await conn.execute(select(cameras))).mappings().one()
        assert row["created_at"] == NOW  # aware UTC round trip
        assert row["enabled"] is True
        assert (row["rtsp_port"], row["channel"], row["priority"]) == (554, 1, 100)
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM cameras WHERE id = 'cam1'"))
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM ai_tasks"))).scalar() == 0
            assert (
                await conn.execute(text("SELECT count(*) FROM snapshot_schedules"))
            ).scalar() == 0
        with pytest.raises(Exception, match="FOREIGN KEY"):
            async with engine.begin() as conn:
                await conn.execute(
                    insert(snapshot_schedules).values(
                        id="snsch_" + "1" * 32, camera_id="ghost", interval_seconds=60,
                        created_at=NOW, updated_at=NOW,
                    )
                )  # fmt: skip
        with pytest.raises(Exception, match="CHECK constraint"):
            async with engine.begin() as conn:
                await conn.execute(
                    insert(cameras).values(**{**camera, "id": "cam2", "rtsp_port": 0})
                )
    finally:
        await engine.dispose()


async def test_naive_timestamps_are_refused(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        await migrate.upgrade(engine)
        with pytest.raises(Exception, match="aware datetime"):
            async with engine.begin() as conn:
                await conn.execute(
                    insert(cameras).values(
                        id="c", name="c", created_at=datetime(2026, 1, 1), updated_at=NOW
                    )
                )
    finally:
        await engine.dispose()
