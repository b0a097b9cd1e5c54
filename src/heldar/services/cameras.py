"""The camera registry (SPEC §3, §4): validated create/read/patch/delete over the database.

Invariants:
- ids are slugs; an omitted id is derived from the name, with a numeric suffix when taken;
- every stored camera has at least one usable stream URL (explicit or vendor template);
- a password is stored but never returned; a masked URL sent back unchanged keeps the
  stored credentials;
- a rejected request changes nothing stored.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from heldar.clock import Clock
from heldar.db.schema import cameras
from heldar.errors import Conflict, InvalidInput, NotFound
from heldar.ids import SLUG_PATTERN, is_slug, slugify, with_suffix
from heldar.media.urls import (
    Profile,
    StreamUrl,
    UrlError,
    Vendor,
    stream_url,
    validate_address,
    validate_explicit_url,
)
from heldar.redaction import redact
from heldar.services.listeners import ChangeListener, ChangeListeners

DEFAULT_RTSP_PORT = 554
DEFAULT_PRIORITY = 100
MAX_PRIORITY = 1000
MAX_CHANNEL = 999
# Enough suffixes for any realistic name clash; past it the caller should pick an id.
MAX_DERIVED_ID_TRIES = 1000

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
Credential = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Port = Annotated[int, Field(ge=1, le=65535)]
Channel = Annotated[int, Field(ge=1, le=MAX_CHANNEL)]
Priority = Annotated[int, Field(ge=0, le=MAX_PRIORITY)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
Address = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class CameraCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Slug | None = Field(None, description="Slug; derived from `name` when omitted.")
    name: Name
    vendor: Vendor = Vendor.GENERIC
    address: Address | None = Field(None, description="Host name or IP (IPv6 allowed).")
    rtsp_port: Port = DEFAULT_RTSP_PORT
    channel: Channel = 1
    username: Credential | None = None
    password: SecretStr | None = Field(None, description="Write-only.", max_length=255)
    main_stream_url: Url | None = None
    sub_stream_url: Url | None = None
    record_stream: Profile = Profile.MAIN
    enabled: bool = True
    priority: Priority = Field(DEFAULT_PRIORITY, description="Higher is served first.")


class CameraPatch(BaseModel):
    """Partial update: only the fields sent change; ``null`` clears an optional field."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    vendor: Vendor | None = None
    address: Address | None = None
    rtsp_port: Port | None = None
    channel: Channel | None = None
    username: Credential | None = None
    password: SecretStr | None = Field(None, max_length=255)
    main_stream_url: Url | None = None
    sub_stream_url: Url | None = None
    record_stream: Profile | None = None
    enabled: bool | None = None
    priority: Priority | None = None


# Fields a PATCH may set to null; the others must have a value when sent.
_NULLABLE = frozenset({"address", "username", "password", "main_stream_url", "sub_stream_url"})


@dataclass(frozen=True, slots=True)
class Camera:
    """A stored camera. ``password`` never leaves through repr, the API or logs."""

    id: str
    name: str
    vendor: Vendor
    address: str | None
    rtsp_port: int
    channel: int
    username: str | None
    password: str | None = field(repr=False)
    main_stream_url: str | None = field(repr=False)
    sub_stream_url: str | None = field(repr=False)
    record_stream: Profile
    enabled: bool
    priority: int
    created_at: datetime
    updated_at: datetime

    def own_url(self, profile: Profile) -> StreamUrl | None:
        """The profile's own URL (explicit, else template), without fallback."""
        explicit = self.main_stream_url if profile is Profile.MAIN else self.sub_stream_url
        return stream_url(
            explicit,
            self.vendor,
            self.address,
            self.rtsp_port,
            self.channel,
            profile,
            self.username,
            self.password,
        )

    def url_for(self, profile: Profile) -> StreamUrl | None:
        """The URL to decode for ``profile``, falling back to the record stream."""
        return self.own_url(profile) or self.own_url(self.record_stream)

    @property
    def has_password(self) -> bool:
        return bool(self.password)


class CameraRegistry:
    """Stores cameras; notifies listeners (sampler, scheduler) after each committed change."""

    def __init__(self, engine: AsyncEngine, clock: Clock, *, media_dir: Path) -> None:
        self._engine = engine
        self._clock = clock
        self._media_dir = media_dir
        self._listeners = ChangeListeners()
        self._cleanup_dirs: list[Path] = []

    def on_change(self, listener: ChangeListener) -> None:
        self._listeners.add(listener)

    def remove_dirs_on_delete(self, root: Path) -> None:
        """Delete ``root/<camera_id>`` when a camera is deleted (frames, snapshots)."""
        self._cleanup_dirs.append(root)

    async def list(self, *, limit: int, enabled: bool | None = None) -> list[Camera]:
        query = select(cameras).order_by(cameras.c.id).limit(limit)
        if enabled is not None:
            query = query.where(cameras.c.enabled == enabled)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_from_row(row) for row in rows]

    async def get(self, camera_id: str) -> Camera:
        _check_id(camera_id)
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(select(cameras).where(cameras.c.id == camera_id)))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"camera '{camera_id}' does not exist")
        return _from_row(row)

    async def counts(self) -> tuple[int, int]:
        """(all cameras, enabled cameras)."""
        query = select(func.count(), func.count().filter(cameras.c.enabled.is_(True)))
        async with self._engine.connect() as conn:
            total, enabled = (await conn.execute(query)).one()
        return int(total), int(enabled or 0)

    async def create(self, spec: CameraCreate) -> Camera:
        now = self._clock.now()
        values = self._validated(spec.model_dump(exclude={"password", "id"}))
        values["password"] = spec.password.get_secret_value() if spec.password else None
        values.update(created_at=now, updated_at=now)
        if spec.id is not None:
            await self._insert({**values, "id": spec.id}, explicit_id=True)
            camera_id = spec.id
        else:
            camera_id = await self._insert_derived(values, slugify(spec.name))
        await self._listeners.notify(camera_id)
        return await self.get(camera_id)

    async def patch(self, camera_id: str, change: CameraPatch) -> Camera:
        current = await self.get(camera_id)
        sent = change.model_fields_set
        for name in sent - _NULLABLE:
            if getattr(change, name) is None:
                raise InvalidInput.field(("body", name), "must not be null")
        merged = {f.name: getattr(current, f.name) for f in fields(current)}
        for name in sent - {"password"}:
            merged[name] = getattr(change, name)
        if "password" in sent:
            merged["password"] = change.password.get_secret_value() if change.password else None
        for name in ("main_stream_url", "sub_stream_url"):
            stored = getattr(current, name)
            if name in sent and stored and merged[name] == redact(stored):
                merged[name] = stored  # the masked URL came back unchanged: keep secrets
        secret = merged.pop("password")
        for key in ("id", "created_at", "updated_at"):
            merged.pop(key)
        values = self._validated(merged)
        values["password"] = secret
        values["updated_at"] = self._clock.now()
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(cameras).where(cameras.c.id == camera_id).values(**values)
            )
        if result.rowcount == 0:
            raise NotFound(f"camera '{camera_id}' does not exist")
        await self._listeners.notify(camera_id)
        return await self.get(camera_id)

    async def delete(self, camera_id: str) -> None:
        _check_id(camera_id)
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(cameras).where(cameras.c.id == camera_id))
        if result.rowcount == 0:
            raise NotFound(f"camera '{camera_id}' does not exist")
        await self._listeners.notify(camera_id)
        for root in self._cleanup_dirs:
            await asyncio.to_thread(shutil.rmtree, root / camera_id, ignore_errors=True)

    # Internals ---------------------------------------------------------------------

    def _validated(self, values: dict[str, Any]) -> dict[str, Any]:
        """Apply the cross-field and URL rules; raise InvalidInput naming the field."""
        out = dict(values)
        if out.get("address") is not None:
            out["address"] = _field_rule("address", validate_address, out["address"])
        for name in ("main_stream_url", "sub_stream_url"):
            if out.get(name) is not None:
                out[name] = _field_rule(
                    name, lambda url: validate_explicit_url(url, self._media_dir), out[name]
                )
        now = self._clock.now()
        probe = Camera(id="probe", password=None, created_at=now, updated_at=now, **out)
        if probe.own_url(Profile.MAIN) is None and probe.own_url(Profile.SUB) is None:
            if probe.vendor is Vendor.GENERIC:
                raise InvalidInput.field(
                    ("body", "main_stream_url"),
                    "required for vendor 'generic' (it has no URL template); give "
                    "main_stream_url or sub_stream_url",
                    "missing",
                )
            raise InvalidInput.field(
                ("body", "address"),
                f"required for vendor '{probe.vendor.value}' unless main_stream_url is given",
                "missing",
            )
        if probe.own_url(probe.record_stream) is None:
            raise InvalidInput.field(
                ("body", "record_stream"),
                f"the '{probe.record_stream.value}' stream has no URL; set "
                f"{probe.record_stream.value}_stream_url or choose the other stream",
            )
        return out

    async def _insert(self, values: dict[str, Any], *, explicit_id: bool) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(cameras).values(**values))
        except IntegrityError:
            if explicit_id:
                raise Conflict(
                    f"camera '{values['id']}' already exists; choose another id or PATCH it"
                ) from None
            raise

    async def _insert_derived(self, values: dict[str, Any], base: str) -> str:
        for n in range(1, MAX_DERIVED_ID_TRIES + 1):
            candidate = base if n == 1 else with_suffix(base, n)
            try:
                await self._insert({**values, "id": candidate}, explicit_id=False)
            except IntegrityError:
                continue
            return candidate
        raise Conflict(f"no free id derived from '{base}'; give an explicit id")


async def require_camera(engine: AsyncEngine, camera_id: str) -> None:
    """NotFound unless the camera exists: for registries of things that belong to a camera."""
    async with engine.connect() as conn:
        found = (await conn.execute(select(cameras.c.id).where(cameras.c.id == camera_id))).first()
    if found is None:
        raise NotFound(f"camera '{camera_id}' does not exist")


def _check_id(camera_id: str) -> None:
    if not is_slug(camera_id):
        raise InvalidInput.field(
            ("path", "camera_id"), "must match [a-z0-9_]{1,64}", "string_pattern_mismatch"
        )


def _field_rule(name: str, rule: Callable[[str], str], value: str) -> str:
    try:
        return rule(value)
    except UrlError as exc:
        raise InvalidInput.field(("body", name), str(exc)) from None


def _from_row(row: Any) -> Camera:
    return Camera(
        id=row["id"],
        name=row["name"],
        vendor=Vendor(row["vendor"]),
        address=row["address"],
        rtsp_port=row["rtsp_port"],
        channel=row["channel"],
        username=row["username"],
        password=row["password"],
        main_stream_url=row["main_stream_url"],
        sub_stream_url=row["sub_stream_url"],
        record_stream=Profile(row["record_stream"]),
        enabled=bool(row["enabled"]),
        priority=row["priority"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
