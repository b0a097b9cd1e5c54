"""The latest-frame store: per (camera, profile) the newest sampled JPEG, in memory and on disk.

A *slot* is one (camera_id, profile). It is created by its first :meth:`FrameStore.publish` and
ends with :meth:`FrameStore.remove`; a later publish creates a new slot.

Invariants:

* **Sequence.** ``seq`` starts at 1 in a new slot and grows by one per publish, in call order.
  Each slot has a random ``token`` of its own, and the ETag is ``"<seq>-<token>"``, so an ETag of a
  removed slot (or of an earlier kernel run) never matches a frame of a later one, although both
  count from 1.
* **Atomic file.** ``<frames_dir>/<camera_id>/latest_<profile>.jpg`` is only ever replaced by a
  rename of a complete temp file in the same directory: a reader opens either the old or the new
  frame, never a torn one.
* **Ordered.** The file operations of one (camera_id, profile) run one at a time, in call order,
  each to its end even when its caller is cancelled, so an older frame never replaces a newer one.
  The file holds the frame :meth:`~FrameStore.latest` returns, or a newer one being published.
* **Removal is final.** After :meth:`~FrameStore.remove` returns, the slot is gone from memory, its
  file is deleted, and its waiters have been answered ``None``. A publish that was in flight when
  ``remove()`` began does not bring the slot or its file back; only a publish called after that
  creates a new slot. (Stop the producer before removing, or it will do exactly that.)
* **No polling.** Waiters sleep on an event that the next publish or the removal sets.

File I/O runs in worker threads (``asyncio.to_thread``); the event loop is never blocked by disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from heldar.clock import Clock
from heldar.ids import SLUG_RULE, is_slug
from heldar.media.files import create_temp, remove_empty_dir

__all__ = ["Frame", "FrameStore", "frame_path"]

# 12 hex digits (48 random bits) per slot: short enough for a header, and two slots of one
# (camera, profile) drawing the same token is out of reach in practice.
SLOT_TOKEN_BYTES = 6

_Key = tuple[str, str]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Frame:
    """One published JPEG and what is known about it."""

    data: bytes = field(repr=False)
    seq: int  # 1, 2, 3, ... within the slot
    captured_at: datetime  # UTC, when the kernel received the frame
    captured_monotonic: float  # the same instant on the monotonic clock, for ages and stalls
    width: int
    height: int
    token: str  # the slot's random token; differs for every slot ever created

    @property
    def frame_id(self) -> str:
        """``<seq>-<token>``: names this frame among all frames ever published (workers post it)."""
        return f"{self.seq}-{self.token}"

    @property
    def etag(self) -> str:
        """A strong HTTP entity tag, unique across slots: ``"<seq>-<token>"``."""
        return f'"{self.frame_id}"'


def frame_path(frames_dir: Path, camera_id: str, profile: str) -> Path:
    """``<frames_dir>/<camera_id>/latest_<profile>.jpg``; both names must be slugs."""
    for what, value in (("camera_id", camera_id), ("profile", profile)):
        if not is_slug(value):
            raise ValueError(f"{what} {value!r} cannot name a frame file: it {SLUG_RULE}")
    return frames_dir / camera_id / f"latest_{profile}.jpg"


@dataclass(eq=False, slots=True)
class _Slot:
    token: str
    seq: int = 0  # the last seq handed out
    latest: Frame | None = None
    file_seq: int = 0  # seq of the frame in the file; 0: this slot has written none
    removed: bool = False
    # Replaced on every change: waiters hold the old one, which is set to wake them all.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


@dataclass(eq=False, slots=True)
class _PathLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class FrameStore:
    """The latest frame per (camera_id, profile); see the module docstring for the invariants.

    Use it from one event loop.
    """

    def __init__(self, frames_dir: Path, clock: Clock) -> None:
        self._frames_dir = frames_dir
        self._clock = clock
        self._slots: dict[_Key, _Slot] = {}
        # Per (camera_id, profile), not per slot: a new slot's first write must queue behind the
        # removal of its predecessor's file. Entries live only while someone uses them.
        self._path_locks: dict[_Key, _PathLock] = {}
        # Set (and dropped) when a slot gets its first frame: for waiters that came before it.
        self._arrivals: dict[_Key, asyncio.Event] = {}

    @property
    def frames_dir(self) -> Path:
        return self._frames_dir

    def path(self, camera_id: str, profile: str) -> Path:
        """Where the slot's latest frame is (or would be) on disk."""
        return frame_path(self._frames_dir, camera_id, profile)

    def latest(self, camera_id: str, profile: str) -> Frame | None:
        """The newest published frame of the slot, or None when it has none or does not exist."""
        slot = self._slots.get((camera_id, profile))
        return slot.latest if slot is not None else None

    async def publish(
        self, camera_id: str, profile: str, data: bytes, width: int, height: int
    ) -> Frame:
        """Store ``data`` as the slot's newest frame: write the file, then keep it and wake waiters.

        Returns the frame. If the slot is removed while this call waits or writes, the frame is
        returned but neither kept nor left on disk.
        """
        path = self.path(camera_id, profile)
        key = (camera_id, profile)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(token=secrets.token_hex(SLOT_TOKEN_BYTES))
        slot.seq += 1
        frame = Frame(
            data=data,
            seq=slot.seq,
            captured_at=self._clock.now(),
            captured_monotonic=self._clock.monotonic(),
            width=width,
            height=height,
            token=slot.token,
        )
        async with self._path_lock(key):
            if slot.removed or slot.file_seq > frame.seq:
                return frame  # removed meanwhile; or (never with a FIFO lock) overtaken
            await _run_to_end(asyncio.to_thread(_write_atomically, path, data))
            slot.file_seq = frame.seq
            if slot.removed:  # while we wrote: remove() deletes the file once we let go
                return frame
            slot.latest = frame
            slot.wake()
            arrival = self._arrivals.pop(key, None)
            if arrival is not None:
                arrival.set()
        return frame

    async def wait_newer(
        self, camera_id: str, profile: str, etag: str | None, timeout_s: float
    ) -> Frame | None:
        """The latest frame if its ETag is not ``etag``; else wait for the next one.

        When the slot has no frame yet, wait for its first one. Returns None when ``timeout_s``
        passes first, or when the slot is removed meanwhile. ``etag=None`` matches no frame.
        """
        key = (camera_id, profile)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.0)
        slot = self._slots.get(key)
        while slot is None or slot.latest is None:
            arrival = self._arrivals.get(key)
            if arrival is None:
                arrival = self._arrivals[key] = asyncio.Event()
            try:
                async with asyncio.timeout_at(deadline):
                    await arrival.wait()
            except TimeoutError:
                if self._arrivals.get(key) is arrival and not arrival.is_set():
                    del self._arrivals[key]  # other waiters of it re-create it
                return None
            slot = self._slots.get(key)
        while True:
            frame = slot.latest
            if slot.removed or frame is None:
                return None
            if frame.etag != etag:
                return frame
            changed = slot.changed
            try:
                async with asyncio.timeout_at(deadline):
                    await changed.wait()
            except TimeoutError:
                return None

    async def remove(self, camera_id: str, profile: str) -> None:
        """End the slot: forget its frame, answer its waiters None, delete its file.

        Deletes the file (and the camera's directory, once empty) even when no slot exists, so it
        also clears a frame left by an earlier run. Idempotent.
        """
        path = self.path(camera_id, profile)
        key = (camera_id, profile)
        slot = self._slots.pop(key, None)
        if slot is not None:
            slot.removed = True
            slot.latest = None
            slot.wake()
        async with self._path_lock(key):
            # A publish called after the pop above made a new slot; if it already wrote its
            # file (it held the lock before us), that file is its own and stays.
            successor = self._slots.get(key)
            if successor is None or successor.file_seq == 0:
                await _run_to_end(asyncio.to_thread(_delete_frame_file, path))

    @contextlib.asynccontextmanager
    async def _path_lock(self, key: _Key) -> AsyncIterator[None]:
        entry = self._path_locks.get(key)
        if entry is None:
            entry = self._path_locks[key] = _PathLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._path_locks[key]


async def _run_to_end(operation: Coroutine[Any, Any, _T]) -> _T:
    """Await ``operation`` to its end even when the caller is cancelled meanwhile, then re-raise.

    A thread started by ``asyncio.to_thread`` cannot be stopped: were its caller to leave early,
    the path lock would be released while the write still runs, and the next write could land
    first.
    """
    task = asyncio.ensure_future(operation)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.cancelled():  # the operation itself was cancelled (loop teardown)
                raise
            cancelled = exc
    if cancelled is not None:
        task.exception()  # retrieved, so asyncio does not log it; the cancellation wins
        raise cancelled
    return task.result()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it over ``path``.

    No fsync: this is a cache of the newest frame, rewritten every frame interval. The rename alone
    makes the switch atomic for every reader (the kernel's own and other processes), which is the
    guarantee that matters; fsync only adds durability across a power loss, at the price of a disk
    flush per frame. After such a crash the file may be stale or empty, which is harmless: the
    next frame replaces it and consumers check what they read.
    """
    fd, temp = create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        temp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def _delete_frame_file(path: Path) -> None:
    """Delete the frame file, temp files a crash left beside it, and the directory once empty."""

    def remove_files() -> None:
        path.unlink(missing_ok=True)
        if path.parent.is_dir():
            for leftover in path.parent.glob(f".{path.name}.*.tmp"):
                leftover.unlink(missing_ok=True)

    # Kept while the camera's other profile has a frame there.
    remove_empty_dir(path.parent, before=remove_files)
