"""finetune jobs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 01:47:53.551540
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "finetune_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("backend", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("snapshot", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("base_model", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("estimated_cost", sa.Float(), nullable=True),
        sa.Column("training_file_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column(
            "validation_file_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True
        ),
        sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("fine_tuned_model", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("trained_tokens", sa.Integer(), nullable=True),
        sa.Column("last_event", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("finetune_job", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_finetune_job_external_id"), ["external_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_finetune_job_finished_at"), ["finished_at"], unique=False
        )
        batch_op.create_index("uq_finetune_job_snapshot", ["backend", "snapshot"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("finetune_job", schema=None) as batch_op:
        batch_op.drop_index("uq_finetune_job_snapshot")
        batch_op.drop_index(batch_op.f("ix_finetune_job_finished_at"))
        batch_op.drop_index(batch_op.f("ix_finetune_job_external_id"))

    op.drop_table("finetune_job")
