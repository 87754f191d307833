"""fine-tune jobs: attempts of one snapshot, pauses, loss curves

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("finetune_job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("attempt", sa.Integer(), server_default=sa.text("1"), nullable=False)
        )
        batch_op.add_column(sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("curves", sa.JSON(), server_default=sa.text("'{}'"), nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "newest_event_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True
            )
        )
        batch_op.drop_index("uq_finetune_job_snapshot")
        batch_op.create_index(
            "uq_finetune_job_attempt", ["backend", "snapshot", "attempt"], unique=True
        )
    with op.batch_alter_table("finetune_job", schema=None) as batch_op:
        batch_op.alter_column("curves", server_default=None)


def downgrade() -> None:
    op.execute("DELETE FROM finetune_job WHERE attempt > 1")
    with op.batch_alter_table("finetune_job", schema=None) as batch_op:
        batch_op.drop_index("uq_finetune_job_attempt")
        batch_op.create_index("uq_finetune_job_snapshot", ["backend", "snapshot"], unique=True)
        batch_op.drop_column("newest_event_id")
        batch_op.drop_column("curves")
        batch_op.drop_column("paused_until")
        batch_op.drop_column("attempt")
