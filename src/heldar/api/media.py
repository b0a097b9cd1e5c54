"""Stored snapshot files: ``GET /media/snapshots/{camera_id}/{file}`` (outside ``/api/v1``).

Both names are checked against their patterns before a path is built
(:meth:`~heldar.services.snapshots.SnapshotStore.media_file`), so no request can reach a file
outside the snapshots directory. Snapshot files never change once written: clients may cache them.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import FileResponse

from heldar.api.deps import KernelDep
from heldar.errors import NotFound

router = APIRouter(tags=["snapshots"])

# A snapshot file is immutable under its name (a new snapshot gets a new name).
CACHE_CONTROL = "private, max-age=86400, immutable"


@router.get(
    "/media/snapshots/{camera_id}/{file_name}",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "No such file."}},
)
async def snapshot_file(kernel: KernelDep, camera_id: str, file_name: str) -> FileResponse:
    path = kernel.snapshots.media_file(camera_id, file_name)
    if not await asyncio.to_thread(path.is_file):
        raise NotFound(f"no snapshot file '{camera_id}/{file_name}'")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": CACHE_CONTROL})
