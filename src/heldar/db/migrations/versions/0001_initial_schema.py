"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-21 20:33:56.334386
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "cameras",
        sa.Column("id", sa.String(length=64), nullable=False, comment="slug [a-z0-9_]{1,64}"),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("vendor", sa.String(length=16), server_default="generic", nullable=False),
        sa.Column(
            "address", sa.String(length=255), nullable=True, comment="host name or IP, no scheme"
        ),
        sa.Column("rtsp_port", sa.Integer(), server_default=sa.text("554"), nullable=False),
        sa.Column("channel", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=True),
        sa.Column(
            "password", sa.String(length=255), nullable=True, comment="write-only over the API"
        ),
        sa.Column(
            "main_stream_url", sa.Text(), nullable=True, comment="explicit URL, wins over template"
        ),
        sa.Column("sub_stream_url", sa.Text(), nullable=True),
        sa.Column("record_stream", sa.String(length=8), server_default="main", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column(
            "priority",
            sa.Integer(),
            server_default=sa.text("100"),
            nullable=False,
            comment="higher first",
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "record_stream IN ('main', 'sub')", name=op.f("ck_cameras_record_stream")
        ),
        sa.CheckConstraint(
            "vendor IN ('generic', 'hikvision', 'dahua')", name=op.f("ck_cameras_vendor")
        ),
        sa.CheckConstraint("rtsp_port BETWEEN 1 AND 65535", name=op.f("ck_cameras_rtsp_port")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cameras")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column(
            "camera_id",
            sa.String(length=64),
            nullable=True,
            comment="no FK: events outlive cameras",
        ),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "severity IN ('info', 'warning', 'critical')", name=op.f("ck_events_severity")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_camera_id_timestamp"), ["camera_id", "timestamp"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_events_timestamp"), ["timestamp"], unique=False)

    op.create_table(
        "ai_tasks",
        sa.Column("id", sa.String(length=40), nullable=False, comment="ai_<32 hex>"),
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("task_type", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("stream_profile", sa.String(length=8), server_default="sub", nullable=False),
        sa.Column(
            "fps", sa.Float(), nullable=False, comment="requested frames per second, 0.1 to 30"
        ),
        sa.Column("width", sa.Integer(), nullable=False, comment="requested frame width in pixels"),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "stream_profile IN ('main', 'sub')", name=op.f("ck_ai_tasks_stream_profile")
        ),
        sa.CheckConstraint("fps >= 0.1 AND fps <= 30", name=op.f("ck_ai_tasks_fps")),
        sa.CheckConstraint("width >= 160 AND width <= 3840", name=op.f("ck_ai_tasks_width")),
        sa.ForeignKeyConstraint(
            ["camera_id"],
            ["cameras.id"],
            name=op.f("fk_ai_tasks_camera_id_cameras"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_tasks")),
        sa.UniqueConstraint(
            "camera_id",
            "task_type",
            "stream_profile",
            name=op.f("uq_ai_tasks_camera_id_task_type_stream_profile"),
        ),
    )
    op.create_table(
        "detections",
        sa.Column("id", sa.String(length=40), nullable=False, comment="det_<32 hex>"),
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=True),
        sa.Column("task_type", sa.String(length=64), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False, comment="0..1"),
        sa.Column("bbox", sa.JSON(), nullable=False, comment="[x, y, w, h] normalised 0..1"),
        sa.Column("track_id", sa.String(length=128), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("frame_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "confidence >= 0 AND confidence <= 1", name=op.f("ck_detections_confidence")
        ),
        sa.ForeignKeyConstraint(
            ["camera_id"],
            ["cameras.id"],
            name=op.f("fk_detections_camera_id_cameras"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detections")),
    )
    with op.batch_alter_table("detections", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_detections_camera_id_frame_id"), ["camera_id", "frame_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_detections_camera_id_timestamp"),
            ["camera_id", "timestamp"],
            unique=False,
        )

    op.create_table(
        "snapshot_schedules",
        sa.Column("id", sa.String(length=40), nullable=False, comment="snsch_<32 hex>"),
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column(
            "last_fired_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="due time of the last fire",
        ),
        sa.Column("last_error", sa.Text(), nullable=True, comment="redacted"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "interval_seconds BETWEEN 5 AND 86400",
            name=op.f("ck_snapshot_schedules_interval_seconds"),
        ),
        sa.ForeignKeyConstraint(
            ["camera_id"],
            ["cameras.id"],
            name=op.f("fk_snapshot_schedules_camera_id_cameras"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshot_schedules")),
    )
    with op.batch_alter_table("snapshot_schedules", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_snapshot_schedules_camera_id"), ["camera_id"], unique=False
        )

    op.create_table(
        "snapshots",
        sa.Column("id", sa.String(length=40), nullable=False, comment="snap_<32 hex>"),
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("schedule_id", sa.String(length=40), nullable=True),
        sa.Column(
            "path", sa.String(length=512), nullable=False, comment="relative to snapshots dir"
        ),
        sa.Column(
            "taken_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="fire time or request time",
        ),
        sa.Column(
            "captured_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="the image's own capture time",
        ),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False, comment="sampler or grab"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("source IN ('sampler', 'grab')", name=op.f("ck_snapshots_source")),
        sa.ForeignKeyConstraint(
            ["camera_id"],
            ["cameras.id"],
            name=op.f("fk_snapshots_camera_id_cameras"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["snapshot_schedules.id"],
            name=op.f("fk_snapshots_schedule_id_snapshot_schedules"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
        sa.UniqueConstraint("path", name=op.f("uq_snapshots_path")),
    )
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_snapshots_camera_id_taken_at"), ["camera_id", "taken_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_snapshots_taken_at"), ["taken_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_snapshots_taken_at"))
        batch_op.drop_index(batch_op.f("ix_snapshots_camera_id_taken_at"))

    op.drop_table("snapshots")
    with op.batch_alter_table("snapshot_schedules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_snapshot_schedules_camera_id"))

    op.drop_table("snapshot_schedules")
    with op.batch_alter_table("detections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_detections_camera_id_timestamp"))
        batch_op.drop_index(batch_op.f("ix_detections_camera_id_frame_id"))

    op.drop_table("detections")
    op.drop_table("ai_tasks")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_timestamp"))
        batch_op.drop_index(batch_op.f("ix_events_camera_id_timestamp"))

    op.drop_table("events")
    op.drop_table("cameras")
