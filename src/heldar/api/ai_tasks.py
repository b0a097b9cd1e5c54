"""AI task routes: ``/api/v1/cameras/{id}/ai-tasks`` and ``/api/v1/ai-tasks/{task_id}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from heldar.api.cameras import CameraId
from heldar.api.deps import KernelDep
from heldar.services.ai_tasks import TASK_ID_PATTERN, AiTask, AiTaskCreate, AiTaskPatch

router = APIRouter(tags=["ai tasks"])

TaskId = Annotated[str, Path(pattern=TASK_ID_PATTERN, description="ai_<32 hex>")]


@router.get("/cameras/{camera_id}/ai-tasks", response_model=list[AiTask])
async def list_tasks(kernel: KernelDep, camera_id: CameraId) -> list[AiTask]:
    return await kernel.ai_tasks.list_for_camera(camera_id)


@router.post(
    "/cameras/{camera_id}/ai-tasks",
    response_model=AiTask,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": AiTask, "description": "The task already existed."}},
)
async def create_task(
    kernel: KernelDep, camera_id: CameraId, body: AiTaskCreate, response: Response
) -> AiTask:
    task, created = await kernel.ai_tasks.create(camera_id, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return task


@router.patch("/ai-tasks/{task_id}", response_model=AiTask)
async def patch_task(kernel: KernelDep, task_id: TaskId, body: AiTaskPatch) -> AiTask:
    return await kernel.ai_tasks.patch(task_id, body)


@router.delete("/ai-tasks/{task_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_task(kernel: KernelDep, task_id: TaskId) -> Response:
    await kernel.ai_tasks.delete(task_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
