"""fine-tune jobs keep the provider's status word for word

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("finetune_job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "remote_status",
                sqlmodel.sql.sqltypes.AutoString(length=64),
                server_default="",
                nullable=False,
            )
        )
    op.execute("UPDATE finetune_job SET remote_status = status WHERE status != 'uploading'")
    with op.batch_alter_table("finetune_job", schema=None) as batch_op:
        batch_op.alter_column("remote_status", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("finetune_job", schema=None) as batch_op:
        batch_op.drop_column("remote_status")
