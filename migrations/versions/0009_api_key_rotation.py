"""api key rotation: the replaced key stays valid for a grace period

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 05:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_client", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "previous_key_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column("previous_key_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_unique_constraint(
            "uq_api_client_previous_key_sha256", ["previous_key_sha256"]
        )


def downgrade() -> None:
    with op.batch_alter_table("api_client", schema=None) as batch_op:
        batch_op.drop_constraint("uq_api_client_previous_key_sha256", type_="unique")
        batch_op.drop_column("previous_key_expires_at")
        batch_op.drop_column("previous_key_sha256")
