"""AI tasks (SPEC §1, §3): "run analysis X on camera C, profile P, at F fps, W pixels wide".

Invariants: one task per (camera, task_type, stream_profile); fps in 0.1..30, width in
160..3840; ``config`` is a JSON object of bounded size; listeners (the sampler manager)
are notified after every committed change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from heldar.clock import Clock
from heldar.db.schema import ai_tasks, cameras
from heldar.errors import Conflict, InvalidInput, NotFound
from heldar.ids import AI_TASK_PREFIX, SLUG_PATTERN, new_id
from heldar.media.urls import Profile
from heldar.services.cameras import require_camera
from heldar.services.listeners import ChangeListener, ChangeListeners

MIN_FPS, MAX_FPS = 0.1, 30.0
MIN_WIDTH, MAX_WIDTH = 160, 3840
# A task's config is worker parameters, not data: keep rows small.
MAX_CONFIG_BYTES = 64 * 1024
TASK_ID_PATTERN = r"^ai_[0-9a-f]{32}$"

TaskType = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
Fps = Annotated[float, Field(ge=MIN_FPS, le=MAX_FPS)]
Width = Annotated[int, Field(ge=MIN_WIDTH, le=MAX_WIDTH)]


class AiTaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_type: TaskType
    enabled: bool = True
    stream_profile: Profile = Profile.SUB
    fps: Fps | None = Field(None, description="Default: HELDAR_DEFAULT_AI_FPS.")
    width: Width | None = Field(None, description="Default: HELDAR_DEFAULT_AI_WIDTH.")
    config: dict[str, Any] = Field(default_factory=dict)


class AiTaskPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    stream_profile: Profile | None = None
    fps: Fps | None = None
    width: Width | None = None
    config: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AiTask:
    id: str
    camera_id: str
    task_type: str
    enabled: bool
    stream_profile: Profile
    fps: float
    width: int
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class AiTaskRegistry:
    def __init__(
        self, engine: AsyncEngine, clock: Clock, *, default_fps: float, default_width: int
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._default_fps = default_fps
        self._default_width = default_width
        self._listeners = ChangeListeners()

    def on_change(self, listener: ChangeListener) -> None:
        self._listeners.add(listener)

    async def list_for_camera(self, camera_id: str) -> list[AiTask]:
        await require_camera(self._engine, camera_id)
        query = (
            select(ai_tasks)
            .where(ai_tasks.c.camera_id == camera_id)
            .order_by(ai_tasks.c.task_type, ai_tasks.c.stream_profile)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_from_row(r) for r in rows]

    async def list_enabled(self) -> list[AiTask]:
        """Enabled tasks of enabled cameras: the sampler manager's input."""
        query = (
            select(ai_tasks)
            .join(cameras, cameras.c.id == ai_tasks.c.camera_id)
            .where(ai_tasks.c.enabled.is_(True), cameras.c.enabled.is_(True))
            .order_by(ai_tasks.c.camera_id, ai_tasks.c.task_type, ai_tasks.c.stream_profile)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_from_row(r) for r in rows]

    async def get(self, task_id: str) -> AiTask:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(select(ai_tasks).where(ai_tasks.c.id == task_id)))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"AI task '{task_id}' does not exist")
        return _from_row(row)

    async def create(self, camera_id: str, spec: AiTaskCreate) -> tuple[AiTask, bool]:
        """Create the task, or return the existing one for (camera, type, profile).

        Returns ``(task, created)``.
        """
        await require_camera(self._engine, camera_id)
        _check_config(spec.config)
        existing = await self._find(camera_id, spec.task_type, spec.stream_profile)
        if existing is not None:
            return existing, False
        now = self._clock.now()
        task_id = new_id(AI_TASK_PREFIX)
        values = {
            "id": task_id,
            "camera_id": camera_id,
            "task_type": spec.task_type,
            "enabled": spec.enabled,
            "stream_profile": spec.stream_profile.value,
            "fps": spec.fps if spec.fps is not None else self._default_fps,
            "width": spec.width if spec.width is not None else self._default_width,
            "config": spec.config,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(ai_tasks).values(**values))
        except IntegrityError:
            # A concurrent create of the same (camera, type, profile) won the race.
            raced = await self._find(camera_id, spec.task_type, spec.stream_profile)
            if raced is None:
                raise
            return raced, False
        await self._listeners.notify(camera_id)
        return await self.get(task_id), True

    async def patch(self, task_id: str, change: AiTaskPatch) -> AiTask:
        current = await self.get(task_id)
        sent = change.model_fields_set
        values: dict[str, Any] = {}
        for name in sent:
            value = getattr(change, name)
            if value is None:
                raise InvalidInput.field(("body", name), "must not be null")
            values[name] = value.value if isinstance(value, Profile) else value
        if "config" in values:
            _check_config(values["config"])
        values["updated_at"] = self._clock.now()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(ai_tasks).where(ai_tasks.c.id == task_id).values(**values)
                )
        except IntegrityError:
            raise Conflict(
                f"camera '{current.camera_id}' already has a '{current.task_type}' task on "
                f"profile '{values.get('stream_profile')}'"
            ) from None
        await self._listeners.notify(current.camera_id)
        return await self.get(task_id)

    async def delete(self, task_id: str) -> None:
        current = await self.get(task_id)
        async with self._engine.begin() as conn:
            await conn.execute(delete(ai_tasks).where(ai_tasks.c.id == task_id))
        await self._listeners.notify(current.camera_id)

    async def _find(self, camera_id: str, task_type: str, profile: Profile) -> AiTask | None:
        query = select(ai_tasks).where(
            ai_tasks.c.camera_id == camera_id,
            ai_tasks.c.task_type == task_type,
            ai_tasks.c.stream_profile == profile.value,
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _from_row(row)


def _check_config(config: dict[str, Any]) -> None:
    size = len(json.dumps(config, separators=(",", ":")).encode("utf-8"))
    if size > MAX_CONFIG_BYTES:
        raise InvalidInput.field(
            ("body", "config"), f"must be at most {MAX_CONFIG_BYTES} bytes as JSON (got {size})"
        )


def _from_row(row: Any) -> AiTask:
    return AiTask(
        id=row["id"],
        camera_id=row["camera_id"],
        task_type=row["task_type"],
        enabled=bool(row["enabled"]),
        stream_profile=Profile(row["stream_profile"]),
        fps=float(row["fps"]),
        width=int(row["width"]),
        config=dict(row["config"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
