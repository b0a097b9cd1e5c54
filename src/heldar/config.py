"""Process configuration: one typed settings object read from ``HELDAR_*`` variables.

Invariants:
- unset or blank variables mean the default;
- a malformed or out-of-range value stops startup with a :class:`ConfigError` naming the
  variable and the rule (never a silent fallback);
- unknown ``HELDAR_*`` names are reported once by :func:`unknown_variables`.

Cameras, tasks and schedules are data, not configuration: they live in the database.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from heldar.errors import ConfigError

ENV_PREFIX = "HELDAR_"

# A sampler below this rate is not worth a decoder slot; it also sets the default
# decoder cap (budget / 0.5), so that the budget alone bounds the decoder count.
MIN_GRANTED_FPS = 0.5


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class DecodeMode(StrEnum):
    """How samplers decode (performance issue): every frame, or keyframes only."""

    AUTO = "auto"  # keyframes at or below the stream's keyframe rate, GOP prefixes above it
    KEYFRAMES = "keyframes"  # keyframes only, always (a grant above the keyframe rate gets less)
    ALL = "all"  # every frame


class KeyframeReceiver(StrEnum):
    """Who receives RTSP for keyframe samplers (performance issue)."""

    KERNEL = "kernel"  # the kernel itself, every camera in one batched loop (media/feed.py)
    FFMPEG = "ffmpeg"  # an ffmpeg receiver process per sampler


class IngestProvenance(StrEnum):
    """Whether worker posts must carry a frame ticket (SPEC §7, worker protocol)."""

    OFF = "off"  # ticketless posts are accepted silently
    WARN = "warn"  # accepted, answered "ticketed": false, logged once per camera and task type
    ENFORCE = "enforce"  # refused with 401


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Settings(BaseSettings):
    """Every process setting of the kernel. Field descriptions feed docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
        frozen=True,
    )

    data_dir: Path = Field(
        Path("./data"), description="Root for the database and media directories."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL. Default: SQLite file `<data>/heldar.db` (aiosqlite driver).",
    )
    host: str = Field("127.0.0.1", description="HTTP listen address.")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        8000, description="HTTP listen port (`0` picks a free port and logs it)."
    )
    frames_dir: Path | None = Field(
        None,
        description="Latest sampled frames, `<camera_id>/latest_<profile>.jpg`. "
        "Default: `<data>/frames`.",
    )
    snapshots_dir: Path | None = Field(
        None,
        description="Stored snapshots, `<camera_id>/<taken_at>.jpg`. Default: `<data>/snapshots`.",
    )
    ffmpeg_bin: str | None = Field(
        None, description="ffmpeg binary. Default: `ffmpeg` on PATH, else the imageio-ffmpeg one."
    )
    ffprobe_bin: str | None = Field(
        None, description="ffprobe binary. Default: `ffprobe` on PATH (optional)."
    )
    demo: bool = Field(
        False,
        description="Register a demo camera (a generated test-pattern clip under `<data>/media`).",
    )
    ai_enabled: bool = Field(True, description="Master switch for the AI frame samplers.")
    ai_max_total_fps: Annotated[float, Field(ge=1, le=10_000)] = Field(
        40.0, description="Global frame budget shared by all samplers (at least 1)."
    )
    ai_max_samplers: Annotated[int, Field(ge=1, le=10_000)] | None = Field(
        None, description="Cap on concurrently running decoders. Default: budget / 0.5."
    )
    ai_decode_mode: DecodeMode = Field(
        DecodeMode.AUTO,
        description="`auto` decodes only keyframes while a sampler's grant is at or below the "
        "stream's keyframe rate (learned from the stream); above it, on RTSP, each GOP up to the "
        "last frame an output needs, elsewhere every frame. `keyframes` forces keyframes only, "
        "`all` every frame.",
    )
    ai_keyframe_receiver: KeyframeReceiver = Field(
        KeyframeReceiver.KERNEL,
        description="Who receives RTSP (H.264, H.265) for samplers that decode only keyframes: "
        "`kernel` reads every camera in one loop and passes only the keyframes to output to "
        "each sampler's ffmpeg decoder (about a quarter of the CPU of an ffmpeg receiver); "
        "`ffmpeg` runs an ffmpeg receiver per sampler. Other streams always use ffmpeg.",
    )
    default_ai_fps: Annotated[float, Field(ge=0.1, le=30)] = Field(
        5.0, description="Task frame rate when a task omits it (0.1 to 30)."
    )
    default_ai_width: Annotated[int, Field(ge=160, le=3840)] = Field(
        1280, description="Task frame width when a task omits it (160 to 3840)."
    )
    snapshot_scheduler_enabled: bool = Field(True, description="Run the snapshot scheduler.")
    snapshot_scheduler_interval_s: Annotated[float, Field(ge=5, le=86_400)] = Field(
        60.0,
        description="Longest time before the scheduler re-reads schedules changed outside "
        "the API (at least 5). API changes apply at once.",
    )
    snapshot_retention_hours: Annotated[float, Field(ge=0)] = Field(
        168.0, description="Delete snapshots older than this; `0` keeps them regardless of age."
    )
    snapshot_max_gb: Annotated[float, Field(ge=0)] = Field(
        0.0, description="Size cap for all snapshots, oldest evicted first; `0` means no cap."
    )
    min_free_disk_gb: Annotated[float, Field(ge=0)] = Field(
        1.0, description="Free-space floor on the snapshots filesystem, oldest evicted first."
    )
    retention_interval_s: Annotated[float, Field(ge=30, le=86_400)] = Field(
        300.0, description="Retention sweep period (at least 30)."
    )
    media_job_concurrency: Annotated[int, Field(ge=1, le=256)] = Field(
        3,
        description="Concurrent one-shot ffmpeg jobs (live grabs, exports); past it the API "
        "answers 503 with `Retry-After`.",
    )
    ingest_provenance: IngestProvenance = Field(
        IngestProvenance.WARN,
        description="Worker posts without a frame ticket: `off` accepts them, `warn` accepts "
        "and logs, `enforce` refuses them (401). A ticket that is sent is always verified.",
    )
    log_level: LogLevel = Field(LogLevel.INFO, description="`debug`, `info`, `warning`, `error`.")
    log_format: LogFormat = Field(
        LogFormat.TEXT, description="`text`, or `json` for one JSON object per line."
    )

    # Derived paths ------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'heldar.db'}"

    @property
    def resolved_frames_dir(self) -> Path:
        return self.frames_dir or self.data_dir / "frames"

    @property
    def resolved_snapshots_dir(self) -> Path:
        return self.snapshots_dir or self.data_dir / "snapshots"

    @property
    def temp_dir(self) -> Path:
        """Transient work files (exports being encoded); emptied at startup."""
        return self.data_dir / "tmp"

    @property
    def media_dir(self) -> Path:
        """Where `file://` camera sources must live (demo and test clips)."""
        return self.data_dir / "media"

    @property
    def max_samplers(self) -> int:
        """Decoder cap: the explicit setting, else what the budget allows at the minimum rate."""
        budget_cap = max(1, int(self.ai_max_total_fps / MIN_GRANTED_FPS))
        if self.ai_max_samplers is None:
            return budget_cap
        return min(self.ai_max_samplers, budget_cap)


def env_name(field_name: str) -> str:
    return f"{ENV_PREFIX}{field_name.upper()}"


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``); raise ConfigError on bad values.

    ``overrides`` are explicit values (CLI flags) that win over the environment.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        raw = env.get(env_name(name))
        if raw is not None and raw.strip() != "":
            values[name] = raw.strip()
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        # _env_file etc. are off: only the mapping we pass counts, so tests are hermetic.
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            field = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"{env_name(field)}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``HELDAR_*`` names in the environment that no setting reads (typos, stale names)."""
    env = os.environ if environ is None else environ
    known = {env_name(name) for name in Settings.model_fields}
    return sorted(k for k in env if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)


def render_reference() -> str:
    """The configuration reference (docs/configuration.md), generated from the model."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `heldar config-docs` from `heldar.config.Settings`; a test keeps it "
        "in sync. -->",
        "",
        "Process settings come from the environment, prefix `HELDAR_`. Unset or blank means the "
        "default. A malformed or out-of-range value stops startup with an error naming the "
        "variable; an unknown `HELDAR_*` name is warned about once at startup. Cameras, AI "
        "tasks and snapshot schedules live in the database, not here.",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "derived" if default is None else f"`{_render_default(default)}`"
        lines.append(f"| `{env_name(name)}` | {shown} | {field.description or ''} |")
    lines.append("")
    return "\n".join(lines)


def _render_default(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value.as_posix()}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
