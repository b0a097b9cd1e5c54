"""Stored snapshots (SPEC §6 "Storage"): one JPEG file plus one ``snapshots`` row each.

Layout: ``<snapshots_dir>/<camera_id>/<YYYYmmddTHHMMSSmmmZ>[_<n>].jpg``, the name taken from
``taken_at``; ``_<n>`` is added when two snapshots of a camera share a millisecond.

Invariants:

* **File first, then row.** A snapshot is written to a temp file in the camera's directory,
  flushed to disk, and linked to its final name (``link`` refuses an existing name, so two
  writers can never clobber each other); only then is the row inserted. When the insert fails
  the file is removed. Deleting goes the other way: file first, then row.
* **No row without a file, no temp file left** once :meth:`SnapshotStore.reconcile` has run
  (at startup): it removes temp files a crash left behind and drops rows whose file is gone.
  Files without a row (a crash between link and insert) are reported, not deleted: they may be
  an operator's.
* **Names are checked** before any path is built: camera ids are slugs and file names match
  the pattern above, so a request can never reach outside the snapshots directory.

File I/O runs in worker threads; the event loop is never blocked by disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from heldar.clock import Clock
from heldar.db.schema import snapshots
from heldar.errors import NotFound, Unavailable
from heldar.ids import SNAPSHOT_PREFIX, is_slug, new_id
from heldar.media.files import create_temp, remove_empty_dir

log = logging.getLogger(__name__)

MEDIA_URL_PREFIX = "/media/snapshots"
FILE_NAME_PATTERN = r"^[0-9]{8}T[0-9]{9}Z(_[0-9]{1,6})?\.jpg$"
SNAPSHOT_ID_PATTERN = r"^snap_[0-9a-f]{32}$"
_FILE_NAME = re.compile(FILE_NAME_PATTERN)
_TEMP_GLOB = ".*.tmp"
# More snapshots of one camera in one millisecond than this means something is badly wrong.
MAX_NAME_SUFFIX = 999
# Rows per statement when deleting or scanning: bounded memory and short write locks.
BATCH_ROWS = 500


class SnapshotSource(StrEnum):
    SAMPLER = "sampler"  # a running sampler's fresh frame: no extra decode
    GRAB = "grab"  # a one-shot ffmpeg grab


@dataclass(frozen=True, slots=True)
class Shot:
    """An image to store: JPEG bytes and what is known about them."""

    data: bytes
    width: int
    height: int
    captured_at: datetime  # when the image itself was captured (received by the kernel)
    source: SnapshotSource


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: str
    camera_id: str
    schedule_id: str | None
    path: str  # relative to the snapshots dir: "<camera_id>/<file>"
    taken_at: datetime
    captured_at: datetime
    size_bytes: int
    width: int
    height: int
    source: SnapshotSource
    created_at: datetime

    @property
    def url(self) -> str:
        return f"{MEDIA_URL_PREFIX}/{self.path}"


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    rows_dropped: int  # rows whose file was missing
    temp_files_removed: int
    stray_files: int  # files without a row, left in place


def file_stem(taken_at: datetime) -> str:
    """``YYYYmmddTHHMMSSmmmZ`` of ``taken_at`` in UTC."""
    utc = taken_at.astimezone(UTC)
    return utc.strftime("%Y%m%dT%H%M%S") + f"{utc.microsecond // 1000:03d}Z"


def is_snapshot_file_name(name: str) -> bool:
    return bool(_FILE_NAME.match(name))


class SnapshotStore:
    def __init__(self, engine: AsyncEngine, clock: Clock, snapshots_dir: Path) -> None:
        self._engine = engine
        self._clock = clock
        self._dir = snapshots_dir

    @property
    def snapshots_dir(self) -> Path:
        return self._dir

    def file_path(self, snapshot: Snapshot) -> Path:
        return self._dir / snapshot.path

    def media_file(self, camera_id: str, file_name: str) -> Path:
        """The path of a served file; NotFound for any name that is not a snapshot's."""
        if not is_slug(camera_id) or not is_snapshot_file_name(file_name):
            raise NotFound(f"no snapshot file '{camera_id}/{file_name}'")
        return self._dir / camera_id / file_name

    async def store(
        self, camera_id: str, shot: Shot, *, taken_at: datetime, schedule_id: str | None = None
    ) -> Snapshot:
        """Write the file, then insert the row; remove the file when the insert fails."""
        if not is_slug(camera_id):
            raise ValueError(f"camera id {camera_id!r} cannot name a directory")
        try:
            relative = await asyncio.to_thread(
                _write_new_file, self._dir, camera_id, file_stem(taken_at), shot.data
            )
        except OSError as exc:
            raise Unavailable(
                f"cannot write a snapshot of camera '{camera_id}' under {self._dir}: "
                f"{exc.strerror or exc}"
            ) from None
        values = {
            "id": new_id(SNAPSHOT_PREFIX),
            "camera_id": camera_id,
            "schedule_id": schedule_id,
            "path": relative,
            "taken_at": taken_at,
            "captured_at": shot.captured_at,
            "size_bytes": len(shot.data),
            "width": shot.width,
            "height": shot.height,
            "source": shot.source.value,
            "created_at": self._clock.now(),
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(snapshots).values(**values))
        except BaseException as exc:
            # Also on cancellation: a file without its row must not stay behind.
            await asyncio.shield(asyncio.to_thread(_remove_file, self._dir / relative))
            if isinstance(exc, IntegrityError):  # deleted while the picture was being taken
                owner = f" or schedule '{schedule_id}'" if schedule_id else ""
                raise NotFound(
                    f"snapshot not stored: camera '{camera_id}'{owner} no longer exists"
                ) from None
            raise
        return _from_row(values)

    async def get(self, snapshot_id: str) -> Snapshot:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(select(snapshots).where(snapshots.c.id == snapshot_id)))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"snapshot '{snapshot_id}' does not exist")
        return _from_row(row)

    async def list(
        self,
        camera_id: str | None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int,
        oldest_first: bool = False,
    ) -> list[Snapshot]:
        """Snapshots with ``since <= taken_at <= until``, newest first unless ``oldest_first``."""
        query = select(snapshots)
        if camera_id is not None:
            query = query.where(snapshots.c.camera_id == camera_id)
        if since is not None:
            query = query.where(snapshots.c.taken_at >= since)
        if until is not None:
            query = query.where(snapshots.c.taken_at <= until)
        if oldest_first:
            query = query.order_by(snapshots.c.taken_at, snapshots.c.id)
        else:
            query = query.order_by(snapshots.c.taken_at.desc(), snapshots.c.id.desc())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).mappings().all()
        return [_from_row(r) for r in rows]

    async def count(
        self, camera_id: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> int:
        query = select(func.count()).where(snapshots.c.camera_id == camera_id)
        if since is not None:
            query = query.where(snapshots.c.taken_at >= since)
        if until is not None:
            query = query.where(snapshots.c.taken_at <= until)
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def usage(self) -> tuple[int, int]:
        """(number of snapshots, their total size in bytes), from the rows."""
        query = select(func.count(), func.coalesce(func.sum(snapshots.c.size_bytes), 0))
        async with self._engine.connect() as conn:
            count, total = (await conn.execute(query)).one()
        return int(count), int(total)

    async def delete(self, snapshot_id: str) -> None:
        await self.delete_many([await self.get(snapshot_id)])

    async def delete_many(self, victims: Sequence[Snapshot]) -> int:
        """Delete files first, then rows, ``BATCH_ROWS`` at a time; returns rows deleted."""
        deleted = 0
        for start in range(0, len(victims), BATCH_ROWS):
            batch = victims[start : start + BATCH_ROWS]
            paths = [self.file_path(s) for s in batch]
            await asyncio.to_thread(_remove_files, paths)
            ids = [s.id for s in batch]
            async with self._engine.begin() as conn:
                result = await conn.execute(delete(snapshots).where(snapshots.c.id.in_(ids)))
            deleted += result.rowcount
        return deleted

    async def reconcile(self) -> ReconcileReport:
        """Startup repair: remove temp files, drop rows without files, report stray files."""
        files, temps_removed = await asyncio.to_thread(_scan_directory, self._dir)
        orphan_ids: list[str] = []
        known: set[str] = set()
        last_id = ""
        while True:
            query = (
                select(snapshots.c.id, snapshots.c.path)
                .where(snapshots.c.id > last_id)
                .order_by(snapshots.c.id)
                .limit(BATCH_ROWS)
            )
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            if not rows:
                break
            for snapshot_id, path in rows:
                known.add(path)
                if path not in files:
                    orphan_ids.append(snapshot_id)
            last_id = rows[-1][0]
        for start in range(0, len(orphan_ids), BATCH_ROWS):
            async with self._engine.begin() as conn:
                await conn.execute(
                    delete(snapshots).where(
                        snapshots.c.id.in_(orphan_ids[start : start + BATCH_ROWS])
                    )
                )
        stray = sorted(files - known)
        report = ReconcileReport(len(orphan_ids), temps_removed, len(stray))
        if orphan_ids:
            log.warning("dropped %d snapshot rows whose file was missing", len(orphan_ids))
        if temps_removed:
            log.info("removed %d unfinished snapshot temp files", temps_removed)
        if stray:
            log.warning(
                "%d files under %s have no snapshot row (left in place), e.g. %s",
                len(stray),
                self._dir,
                ", ".join(stray[:3]),
            )
        return report


def _write_new_file(root: Path, camera_id: str, stem: str, data: bytes) -> str:
    """Write ``data`` under a fresh name in ``root/camera_id``; return the relative path."""
    directory = root / camera_id
    fd, temp = create_temp(directory, stem)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())  # a snapshot is a record: durable before it has a row
        for n in range(MAX_NAME_SUFFIX + 1):
            name = f"{stem}.jpg" if n == 0 else f"{stem}_{n}.jpg"
            try:
                os.link(temp, directory / name)  # atomic, and never replaces an existing file
            except FileExistsError:
                continue
            return f"{camera_id}/{name}"
        raise FileExistsError(f"no free file name for {stem} after {MAX_NAME_SUFFIX} suffixes")
    finally:
        temp.unlink(missing_ok=True)


def _remove_file(path: Path) -> None:
    """Remove a snapshot file, and its camera's directory once empty (a deleted camera's)."""
    remove_empty_dir(path.parent, before=lambda: path.unlink(missing_ok=True))


def _remove_files(paths: Sequence[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _scan_directory(root: Path) -> tuple[set[str], int]:
    """(relative paths of snapshot files, number of temp files removed)."""
    files: set[str] = set()
    removed = 0
    if not root.is_dir():
        return files, removed
    for camera_dir in root.iterdir():
        if not camera_dir.is_dir() or not is_slug(camera_dir.name):
            continue
        for temp in camera_dir.glob(_TEMP_GLOB):
            with contextlib.suppress(OSError):
                temp.unlink()
                removed += 1
        for entry in camera_dir.iterdir():
            if entry.is_file() and is_snapshot_file_name(entry.name):
                files.add(f"{camera_dir.name}/{entry.name}")
    return files, removed


def _from_row(row: Any) -> Snapshot:
    return Snapshot(
        id=row["id"],
        camera_id=row["camera_id"],
        schedule_id=row["schedule_id"],
        path=row["path"],
        taken_at=row["taken_at"],
        captured_at=row["captured_at"],
        size_bytes=int(row["size_bytes"]),
        width=int(row["width"]),
        height=int(row["height"]),
        source=SnapshotSource(row["source"]),
        created_at=row["created_at"],
    )
