"""worker posts remember their (camera, task type, frame) so repeats store nothing

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ingested_frames",
        sa.Column("camera_id", sa.String(length=64), nullable=False, comment="no FK: like events"),
        sa.Column("task_type", sa.String(length=64), nullable=False),
        sa.Column("frame_id", sa.String(length=128), nullable=False),
        sa.Column("detections", sa.Integer(), nullable=False, comment="rows stored for this post"),
        sa.Column("ticketed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "camera_id", "task_type", "frame_id", name=op.f("pk_ingested_frames")
        ),
        comment="one row per accepted worker post with a frame_id: repeats are duplicates",
    )


def downgrade() -> None:
    op.drop_table("ingested_frames")
