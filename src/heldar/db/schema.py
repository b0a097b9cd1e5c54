"""The database schema (SPEC §3), declared once with SQLAlchemy Core.

Conventions: timestamps are UTC (:class:`UtcDateTime`); durations and sizes carry
their unit in the column name (``interval_seconds``, ``size_bytes``); ids are text
with a type prefix (``ai_``, ``snsch_``, ``snap_``, ``det_``) except camera slugs.
Every change goes through an Alembic migration; ``tests/integration/test_migrations``
proves a fresh migrate equals this declaration.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
    true,
)

from heldar.db.types import UtcDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

SLUG_LEN = 64
ID_LEN = 40  # "snsch_" + 32 hex is the longest prefixed id

cameras = Table(
    "cameras",
    metadata,
    Column("id", String(SLUG_LEN), primary_key=True, comment="slug [a-z0-9_]{1,64}"),
    Column("name", String(200), nullable=False),
    Column("vendor", String(16), nullable=False, server_default="generic"),
    Column("address", String(255), nullable=True, comment="host name or IP, no scheme"),
    Column("rtsp_port", Integer, nullable=False, server_default=text("554")),
    Column("channel", Integer, nullable=False, server_default=text("1")),
    Column("username", String(255), nullable=True),
    Column("password", String(255), nullable=True, comment="write-only over the API"),
    Column("main_stream_url", Text, nullable=True, comment="explicit URL, wins over template"),
    Column("sub_stream_url", Text, nullable=True),
    Column("record_stream", String(8), nullable=False, server_default="main"),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("priority", Integer, nullable=False, server_default=text("100"), comment="higher first"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("vendor IN ('generic', 'hikvision', 'dahua')", name="vendor"),
    CheckConstraint("record_stream IN ('main', 'sub')", name="record_stream"),
    CheckConstraint("rtsp_port BETWEEN 1 AND 65535", name="rtsp_port"),
)

ai_tasks = Table(
    "ai_tasks",
    metadata,
    Column("id", String(ID_LEN), primary_key=True, comment="ai_<32 hex>"),
    Column(
        "camera_id",
        String(SLUG_LEN),
        ForeignKey("cameras.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("task_type", String(SLUG_LEN), nullable=False),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("stream_profile", String(8), nullable=False, server_default="sub"),
    Column("fps", Float, nullable=False, comment="requested frames per second, 0.1 to 30"),
    Column("width", Integer, nullable=False, comment="requested frame width in pixels"),
    Column("config", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("camera_id", "task_type", "stream_profile"),
    CheckConstraint("stream_profile IN ('main', 'sub')", name="stream_profile"),
    CheckConstraint("fps >= 0.1 AND fps <= 30", name="fps"),
    CheckConstraint("width >= 160 AND width <= 3840", name="width"),
)

snapshot_schedules = Table(
    "snapshot_schedules",
    metadata,
    Column("id", String(ID_LEN), primary_key=True, comment="snsch_<32 hex>"),
    Column(
        "camera_id",
        String(SLUG_LEN),
        ForeignKey("cameras.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("interval_seconds", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("last_fired_at", UtcDateTime, nullable=True, comment="due time of the last fire"),
    Column("last_error", Text, nullable=True, comment="redacted"),
    Column(
        "next_due_at",
        UtcDateTime,
        nullable=True,
        comment="next point of the fire grid; null: due at once (created or re-enabled)",
    ),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("interval_seconds BETWEEN 5 AND 86400", name="interval_seconds"),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("id", String(ID_LEN), primary_key=True, comment="snap_<32 hex>"),
    Column(
        "camera_id",
        String(SLUG_LEN),
        ForeignKey("cameras.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column(
        "schedule_id",
        String(ID_LEN),
        ForeignKey("snapshot_schedules.id", ondelete="SET NULL"),
        nullable=True,
    ),
    Column("path", String(512), nullable=False, unique=True, comment="relative to snapshots dir"),
    Column("taken_at", UtcDateTime, nullable=False, comment="fire time or request time"),
    Column("captured_at", UtcDateTime, nullable=False, comment="the image's own capture time"),
    Column("size_bytes", BigInteger, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("source", String(16), nullable=False, comment="sampler or grab"),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("source IN ('sampler', 'grab')", name="source"),
    Index(None, "camera_id", "taken_at"),
    Index(None, "taken_at"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("camera_id", String(SLUG_LEN), nullable=True, comment="no FK: events outlive cameras"),
    Column("event_type", String(SLUG_LEN), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("timestamp", UtcDateTime, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("severity IN ('info', 'warning', 'critical')", name="severity"),
    Index(None, "timestamp"),
    Index(None, "camera_id", "timestamp"),
)

detections = Table(
    "detections",
    metadata,
    Column("id", String(ID_LEN), primary_key=True, comment="det_<32 hex>"),
    Column(
        "camera_id",
        String(SLUG_LEN),
        ForeignKey("cameras.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("task_id", String(ID_LEN), nullable=True),
    Column("task_type", String(SLUG_LEN), nullable=False),
    Column("timestamp", UtcDateTime, nullable=False),
    Column("label", String(128), nullable=False),
    Column("confidence", Float, nullable=False, comment="0..1"),
    Column("bbox", JSON, nullable=False, comment="[x, y, w, h] normalised 0..1"),
    Column("track_id", String(128), nullable=True),
    Column("attributes", JSON, nullable=False),
    Column("frame_id", String(128), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence"),
    Index(None, "camera_id", "timestamp"),
    Index(None, "camera_id", "frame_id"),
)

ingested_frames = Table(
    "ingested_frames",
    metadata,
    Column("camera_id", String(SLUG_LEN), primary_key=True, comment="no FK: like events"),
    Column("task_type", String(SLUG_LEN), primary_key=True),
    Column("frame_id", String(128), primary_key=True),
    Column("detections", Integer, nullable=False, comment="rows stored for this post"),
    Column("ticketed", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    comment="one row per accepted worker post with a frame_id: repeats are duplicates",
)
