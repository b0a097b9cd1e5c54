"""Camera routes: ``/api/v1/cameras``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, Field

from heldar.api.deps import KernelDep
from heldar.ids import SLUG_PATTERN
from heldar.media.urls import Profile, Vendor
from heldar.redaction import redact
from heldar.services.cameras import Camera, CameraCreate, CameraPatch

router = APIRouter(tags=["cameras"])

DEFAULT_LIST_LIMIT = 500
MAX_LIST_LIMIT = 5000

CameraId = Annotated[str, Path(pattern=SLUG_PATTERN, description="Camera slug.")]


class StreamUrls(BaseModel):
    """The URLs the kernel decodes for each profile (after fallback), masked."""

    main: str | None
    sub: str | None


class CameraOut(BaseModel):
    id: str
    name: str
    vendor: Vendor
    address: str | None
    rtsp_port: int
    channel: int
    username: str | None
    has_password: bool = Field(description="The password itself is write-only.")
    main_stream_url: str | None = Field(description="Explicit URL as stored, masked.")
    sub_stream_url: str | None
    record_stream: Profile
    enabled: bool
    priority: int
    stream_urls: StreamUrls
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, camera: Camera) -> CameraOut:
        def masked(url: str | None) -> str | None:
            return redact(url) if url else None

        main, sub = camera.url_for(Profile.MAIN), camera.url_for(Profile.SUB)
        return cls(
            id=camera.id,
            name=camera.name,
            vendor=camera.vendor,
            address=camera.address,
            rtsp_port=camera.rtsp_port,
            channel=camera.channel,
            username=camera.username,
            has_password=camera.has_password,
            main_stream_url=masked(camera.main_stream_url),
            sub_stream_url=masked(camera.sub_stream_url),
            record_stream=camera.record_stream,
            enabled=camera.enabled,
            priority=camera.priority,
            stream_urls=StreamUrls(
                main=main.masked if main else None, sub=sub.masked if sub else None
            ),
            created_at=camera.created_at,
            updated_at=camera.updated_at,
        )


@router.get("/cameras", response_model=list[CameraOut])
async def list_cameras(
    kernel: KernelDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
    enabled: bool | None = None,
) -> list[CameraOut]:
    return [CameraOut.of(c) for c in await kernel.cameras.list(limit=limit, enabled=enabled)]


@router.post("/cameras", response_model=CameraOut, status_code=status.HTTP_201_CREATED)
async def create_camera(kernel: KernelDep, body: CameraCreate) -> CameraOut:
    return CameraOut.of(await kernel.cameras.create(body))


@router.get("/cameras/{camera_id}", response_model=CameraOut)
async def get_camera(kernel: KernelDep, camera_id: CameraId) -> CameraOut:
    return CameraOut.of(await kernel.cameras.get(camera_id))


@router.patch("/cameras/{camera_id}", response_model=CameraOut)
async def patch_camera(kernel: KernelDep, camera_id: CameraId, body: CameraPatch) -> CameraOut:
    return CameraOut.of(await kernel.cameras.patch(camera_id, body))


@router.delete("/cameras/{camera_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_camera(kernel: KernelDep, camera_id: CameraId) -> Response:
    await kernel.cameras.delete(camera_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
