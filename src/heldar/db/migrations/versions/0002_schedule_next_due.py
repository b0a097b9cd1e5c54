"""snapshot schedules remember their next due time

The scheduler keeps each schedule on a fixed grid (SPEC §6). Storing the next grid point
lets the grid survive restarts and lets a re-enabled schedule start a new grid at once.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("snapshot_schedules", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "next_due_at",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="next point of the fire grid; null: due at once (created or re-enabled)",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("snapshot_schedules", schema=None) as batch_op:
        batch_op.drop_column("next_due_at")
