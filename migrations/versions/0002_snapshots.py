"""snapshots

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 01:42:08.347147
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("content_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("directory", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
        sa.Column("train_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("validation_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("content_hash"),
    )


def downgrade() -> None:
    op.drop_table("snapshot")
