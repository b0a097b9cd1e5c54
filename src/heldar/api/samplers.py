"""Sampler and frame routes: ``GET /api/v1/ai/samplers``, ``GET /api/v1/cameras/{id}/frame``."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field

from heldar.api.cameras import CameraId
from heldar.api.deps import KernelDep
from heldar.clock import rfc3339
from heldar.config import DecodeMode, KeyframeReceiver
from heldar.errors import Conflict, InvalidInput, NotFound
from heldar.kernel import Kernel
from heldar.media.urls import Profile
from heldar.services.ai_tasks import TASK_ID_PATTERN, AiTask
from heldar.services.budget import SamplerKey
from heldar.services.cameras import Camera
from heldar.services.sampler import SamplerState
from heldar.services.sampler_manager import SamplerStatus

router = APIRouter(tags=["samplers"])

MAX_WAIT_S = 30.0
_ETAG = re.compile(r'^(W/)?"[!#-~]*"$')  # one entity tag (RFC 9110 §8.8.3)
_MS_PER_S = 1000


class SamplerOut(BaseModel):
    camera_id: str
    profile: Profile
    state: SamplerState
    fps: float | None  # granted; null when budget_exhausted
    width: int
    requested_fps: float
    requested_width: int
    frame_age_ms: int | None
    frames_total: int
    restarts: int
    last_error: str | None
    pid: int | None = Field(description="The decoder process that delivers the frames.")
    pids: list[int] = Field(
        description="Every process of the sampler: with a receiver, the receiver, then the decoder."
    )
    decode_mode: DecodeMode | None = Field(
        description="keyframes or all: how the running decoder decodes; null when not running."
    )
    keyframe_interval_s: float | None = Field(
        description="The stream's keyframe interval, learned from the stream; null until known."
    )
    gop_prefix: bool = Field(
        description=(
            "Full decode in auto: a receiver drops the end of each GOP that no output frame "
            "needs, so the decoder gets only a prefix of each GOP; false when it gets every frame."
        )
    )
    receiver: KeyframeReceiver | None = Field(
        description=(
            "Who receives the stream in the current run: `kernel` (the kernel's keyframe feed, "
            "one batched loop for all cameras, then only the keyframes to output reach the "
            "decoder) or `ffmpeg`; null when not running."
        )
    )


@router.get("/ai/samplers", response_model=list[SamplerOut])
async def list_samplers(kernel: KernelDep) -> list[SamplerOut]:
    """Every planned (camera, profile), in budget rank order."""
    out = []
    now = kernel.clock.monotonic()
    for status in kernel.samplers.status():
        planned, sampler = status.planned, status.sampler
        frame = kernel.frames.latest(planned.key.camera_id, planned.key.profile)
        out.append(
            SamplerOut(
                camera_id=planned.key.camera_id,
                profile=Profile(planned.key.profile),
                state=status.state,
                fps=planned.grant.fps,
                width=planned.grant.width,
                requested_fps=planned.requested_fps,
                requested_width=planned.requested_width,
                frame_age_ms=_age_ms(now, frame.captured_monotonic) if frame else None,
                frames_total=sampler.frames_total if sampler else 0,
                restarts=sampler.restarts if sampler else 0,
                last_error=sampler.last_error if sampler else None,
                pid=sampler.pid if sampler else None,
                pids=list(sampler.pids) if sampler else [],
                decode_mode=planned.spec.mode if planned.spec else None,
                keyframe_interval_s=kernel.samplers.keyframe_interval_s(planned.key),
                gop_prefix=planned.spec.gop_prefix if planned.spec else False,
                receiver=sampler.receiver if sampler else None,
            )
        )
    return out


@router.get(
    "/cameras/{camera_id}/frame",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The latest sampled frame."},
        304: {"description": "No newer frame than If-None-Match (within `wait`)."},
        404: {"description": "Unknown camera, or no frame for this profile."},
    },
)
async def get_frame(
    kernel: KernelDep,
    camera_id: CameraId,
    profile: Profile = Profile.SUB,
    wait: Annotated[
        float | None, Query(gt=0, le=MAX_WAIT_S, description="Long-poll seconds.")
    ] = None,
    task: Annotated[
        str | None,
        Query(
            pattern=TASK_ID_PATTERN,
            description="The AI task the frame is for: leased tasks get an x-frame-ticket.",
        ),
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The latest frame. ``wait`` long-polls: for a newer frame than ``If-None-Match`` (304 on
    timeout), or for the first frame of a sampler that has none yet (404 on timeout)."""
    camera = await kernel.cameras.get(camera_id)  # 404 for an unknown camera
    known = _parse_if_none_match(if_none_match)
    leased_task = await _frame_task(kernel, task, camera_id, profile) if task else None
    frames = kernel.frames
    key = SamplerKey(camera_id, profile.value)
    frame = frames.latest(camera_id, profile.value)
    starting = frame is None and _may_deliver(kernel.samplers.status_of(key))
    if wait is not None and (starting or (frame is not None and frame.etag == known)):
        # Long poll. The slot may be removed (sampler gone) or even replaced meanwhile, so
        # whatever happened, answer from what the store holds now.
        newer = await frames.wait_newer(camera_id, profile.value, known, wait)
        frame = newer or frames.latest(camera_id, profile.value)
    status = kernel.samplers.status_of(key)
    state = status.state if status else None
    if frame is None:
        raise NotFound(_no_frame_reason(kernel, state, camera, profile))
    if known is not None and frame.etag == known:
        # RFC 9110 §15.4.5: a 304 carries the ETag the 200 would have carried.
        return Response(status_code=304, headers={"Cache-Control": "no-store", "ETag": frame.etag})
    headers = {
        "Cache-Control": "no-store",
        "ETag": frame.etag,
        "x-frame-seq": str(frame.seq),
        "x-frame-captured-at": rfc3339(frame.captured_at),
        "x-frame-age-ms": str(_age_ms(kernel.clock.monotonic(), frame.captured_monotonic)),
        "x-frame-width": str(frame.width),
        "x-frame-height": str(frame.height),
        "x-sampler-state": state.value if state else SamplerState.STOPPED.value,
    }
    if leased_task is not None and kernel.leases.holder(leased_task.id) is not None:
        headers["x-frame-ticket"] = kernel.tickets.issue(
            task_id=leased_task.id,
            task_type=leased_task.task_type,
            camera_id=camera_id,
            frame_id=frame.frame_id,
            captured_at=frame.captured_at,
            now=kernel.clock.now(),
        )
    return Response(content=frame.data, media_type="image/jpeg", headers=headers)


async def _frame_task(kernel: Kernel, task_id: str, camera_id: str, profile: Profile) -> AiTask:
    """The task a frame is fetched for; it must sample this camera and profile."""
    task = await kernel.ai_tasks.get(task_id)  # 404 for an unknown task
    if task.camera_id != camera_id or task.stream_profile is not profile:
        raise Conflict(
            f"task '{task_id}' samples camera '{task.camera_id}' profile "
            f"'{task.stream_profile.value}', not '{camera_id}' profile '{profile.value}'; "
            "use the task's frame_url"
        )
    return task


def _may_deliver(status: SamplerStatus | None) -> bool:
    """Whether waiting can bring a first frame: a sampler runs (it may be connecting)."""
    return status is not None and status.state is not SamplerState.BUDGET_EXHAUSTED


def _parse_if_none_match(value: str | None) -> str | None:
    """The one strong-compared entity tag of ``If-None-Match`` (a ``W/`` prefix is dropped)."""
    if value is None:
        return None
    tag = value.strip()
    if not _ETAG.match(tag):
        raise InvalidInput.field(
            ("header", "if-none-match"),
            'must be one entity tag as sent in the ETag header, e.g. "12-ab3f09c1d2e4"',
        )
    return tag.removeprefix("W/")


def _age_ms(now_monotonic: float, captured_monotonic: float) -> int:
    return max(0, round((now_monotonic - captured_monotonic) * _MS_PER_S))


def _no_frame_reason(
    kernel: Kernel, state: SamplerState | None, camera: Camera, profile: Profile
) -> str:
    where = f"'{camera.id}/{profile.value}'"
    if state is None:
        if not kernel.settings.ai_enabled:
            return "no frame: AI sampling is switched off (HELDAR_AI_ENABLED=false)"
        if not camera.enabled:
            return f"no frame: camera '{camera.id}' is disabled; enable it to sample frames"
        return (
            f"no frame: camera '{camera.id}' has no sampler on profile '{profile.value}'; "
            f"add an enabled AI task for it (POST /api/v1/cameras/{camera.id}/ai-tasks "
            f'with "stream_profile": "{profile.value}")'
        )
    if state is SamplerState.BUDGET_EXHAUSTED:
        return (
            f"no frame: the sampler {where} is not running (budget_exhausted); "
            "raise HELDAR_AI_MAX_TOTAL_FPS / HELDAR_AI_MAX_SAMPLERS or the camera priority"
        )
    return f"no frame yet: the sampler {where} is {state.value}"
