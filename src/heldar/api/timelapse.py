"""Time-lapse route: ``GET /api/v1/cameras/{id}/timelapse.mp4?from&to&fps`` (SPEC §6).

One video frame per stored snapshot with ``from <= taken_at <= to``, oldest first, as an H.264
MP4 (:mod:`heldar.media.timelapse`). Answers:

* 200 ``video/mp4``, ``Content-Disposition: attachment; filename="<camera>_<from>_<to>.mp4"``;
* 404 for an unknown camera, and for a range without snapshots (there is nothing to encode:
  the time-lapse of that range does not exist; the message says how to find or make some);
* 422 naming the field for ``from >= to`` or ``fps`` outside 1..60, and for a range holding more
  than ``MAX_TIMELAPSE_FRAMES`` snapshots (the message says how many: narrow the range);
* 503 + ``Retry-After`` when every media-job slot is busy, 503 when ffmpeg fails.

The encode runs while the request waits, holding one media-job slot. The MP4 is written to a
temp file under ``<data>/tmp`` that is deleted once the answer is sent, also when sending fails,
and at once when the encode fails; nothing of an export outlives its request (a kernel crash
mid-export can leave a ``timelapse_*`` file there, safe to delete).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from pydantic import AwareDatetime
from starlette.types import Receive, Scope, Send

from heldar.api.cameras import CameraId
from heldar.api.deps import KernelDep
from heldar.clock import rfc3339
from heldar.errors import InvalidInput, NotFound
from heldar.media.timelapse import MAX_FPS, MAX_TIMELAPSE_FRAMES, MIN_FPS, encode_timelapse
from heldar.media.timelapse import output_size as timelapse_size
from heldar.services.snapshots import Snapshot

router = APIRouter(tags=["snapshots"])
log = logging.getLogger(__name__)

# A day: the usual review period ("what happened since yesterday"), when `from` is omitted.
DEFAULT_SPAN = timedelta(hours=24)
# A day of one-minute snapshots (1440) plays in 2.4 minutes.
DEFAULT_FPS = 10
_TEMP_PREFIX = "timelapse_"
MP4_MEDIA_TYPE = "video/mp4"


class _TempFileResponse(FileResponse):
    """A FileResponse whose file is deleted after sending, whether sending succeeded or not.

    (A ``BackgroundTask`` would not run when the client goes away mid-send: the send raises.)
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await asyncio.shield(asyncio.to_thread(_remove, Path(self.path)))


@router.get(
    "/cameras/{camera_id}/timelapse.mp4",
    response_class=FileResponse,
    responses={
        200: {"content": {MP4_MEDIA_TYPE: {}}, "description": "H.264 MP4, one frame a snapshot."},
        404: {"description": "Unknown camera, or no snapshots in the range."},
        422: {"description": "Bad range or fps, or too many snapshots in the range."},
        503: {"description": "Media job slots busy (Retry-After), or ffmpeg failed."},
    },
)
async def get_timelapse(
    kernel: KernelDep,
    camera_id: CameraId,
    from_: Annotated[
        AwareDatetime | None,
        Query(alias="from", description="RFC 3339 with a zone, inclusive. Default: `to` - 24 h."),
    ] = None,
    to: Annotated[
        AwareDatetime | None,
        Query(description="RFC 3339 with a zone, inclusive. Default: now."),
    ] = None,
    fps: Annotated[
        int, Query(ge=MIN_FPS, le=MAX_FPS, description="Snapshots shown per second of video.")
    ] = DEFAULT_FPS,
) -> FileResponse:
    """Encode the camera's snapshots taken in [from, to] into an MP4, one frame each."""
    until = to or kernel.clock.now()
    since = from_ or until - DEFAULT_SPAN
    if since >= until:
        raise InvalidInput.field(
            ("query", "from"), f"must be earlier than to ({rfc3339(until)}; default: now)"
        )
    await kernel.cameras.get(camera_id)  # 404 for an unknown camera
    rows = await kernel.snapshots.list(
        camera_id, since=since, until=until, limit=MAX_TIMELAPSE_FRAMES + 1, oldest_first=True
    )
    if len(rows) > MAX_TIMELAPSE_FRAMES:
        count = await kernel.snapshots.count(camera_id, since=since, until=until)
        raise InvalidInput.field(
            ("query", "from"),
            f"the range holds {count} snapshots and a time-lapse takes at most "
            f"{MAX_TIMELAPSE_FRAMES}: narrow the range (from/to)",
        )
    frames = await asyncio.to_thread(_present, kernel.snapshots.file_path, rows)
    if not frames:
        raise NotFound(
            f"camera '{camera_id}' has no snapshots taken between {rfc3339(since)} and "
            f"{rfc3339(until)}; list them with GET /api/v1/cameras/{camera_id}/snapshots, "
            f"or take them on a schedule (POST /api/v1/cameras/{camera_id}/snapshot-schedules)"
        )
    what = f"time-lapse of camera '{camera_id}'"
    async with kernel.media_jobs.slot_now(what):
        # Under the data dir (Settings.temp_dir), never /tmp: that may be a small tmpfs.
        temp_dir = kernel.settings.temp_dir
        out_path = await asyncio.to_thread(_new_temp_file, temp_dir, camera_id)
        try:
            started_s = kernel.clock.monotonic()
            encoded = await encode_timelapse(
                kernel.binaries.ffmpeg,
                [path for _, path in frames],
                out_path,
                fps=fps,
                frame_size=timelapse_size((s.width, s.height) for s, _ in frames),
                label=what,
            )
        except BaseException:
            # Also on cancellation: an export leaves nothing behind.
            await asyncio.shield(asyncio.to_thread(_remove, out_path))
            raise
    log.info(
        "%s: %d frames %dx%d at %d fps in %.1f s",
        what,
        encoded.frames,
        encoded.width,
        encoded.height,
        fps,
        kernel.clock.monotonic() - started_s,
    )
    return _TempFileResponse(
        out_path,
        media_type=MP4_MEDIA_TYPE,
        filename=f"{camera_id}_{_compact(since)}_{_compact(until)}.mp4",
    )


def _present(
    file_path: Callable[[Snapshot], Path], rows: Sequence[Snapshot]
) -> list[tuple[Snapshot, Path]]:
    """The rows whose file exists, with its path (retention may have deleted some meanwhile)."""
    pairs = ((row, file_path(row)) for row in rows)
    return [(row, path) for row, path in pairs if path.is_file()]


def _compact(value: datetime) -> str:
    """``YYYYmmddTHHMMSSZ`` in UTC: sortable and safe in a file name."""
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _new_temp_file(temp_dir: Path, camera_id: str) -> Path:
    temp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{camera_id}_", suffix=".mp4", dir=temp_dir)
    os.close(fd)
    return Path(name)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
