"""initial tables

Revision ID: 0001
Revises:
Create Date: 2026-11-28 01:31:35.723859
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("backend", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("model_ref", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
        sa.Column("snapshot", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_version_status"), ["status"], unique=False)

    op.create_table(
        "review",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("tenant", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("merchant_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_review_merchant_id"), ["merchant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_review_tenant"), ["tenant"], unique=False)
        batch_op.create_index(batch_op.f("ix_review_text_hash"), ["text_hash"], unique=False)
        batch_op.create_index(
            "uq_review_external",
            ["source", "tenant", "external_id"],
            unique=True,
            sqlite_where=sa.text("external_id IS NOT NULL"),
            postgresql_where=sa.text("external_id IS NOT NULL"),
        )

    op.create_table(
        "prediction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("backend", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("model_id", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("fallback", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
        ),
        sa.ForeignKeyConstraint(
            ["review_id"],
            ["review.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("prediction", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prediction_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_prediction_model_version_id"), ["model_version_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_prediction_review_id"), ["review_id"], unique=False)

    op.create_table(
        "label_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("prediction_id", sa.Integer(), nullable=True),
        sa.Column("split", sa.String(length=8), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["prediction_id"],
            ["prediction.id"],
        ),
        sa.ForeignKeyConstraint(
            ["review_id"],
            ["review.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("label_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_label_event_actor"), ["actor"], unique=False)
        batch_op.create_index(batch_op.f("ix_label_event_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_label_event_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_label_event_review_id"), ["review_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_label_event_split"), ["split"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("label_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_label_event_split"))
        batch_op.drop_index(batch_op.f("ix_label_event_review_id"))
        batch_op.drop_index(batch_op.f("ix_label_event_kind"))
        batch_op.drop_index(batch_op.f("ix_label_event_created_at"))
        batch_op.drop_index(batch_op.f("ix_label_event_actor"))

    op.drop_table("label_event")
    with op.batch_alter_table("prediction", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prediction_review_id"))
        batch_op.drop_index(batch_op.f("ix_prediction_model_version_id"))
        batch_op.drop_index(batch_op.f("ix_prediction_created_at"))

    op.drop_table("prediction")
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_review_external",
            sqlite_where=sa.text("external_id IS NOT NULL"),
            postgresql_where=sa.text("external_id IS NOT NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_review_text_hash"))
        batch_op.drop_index(batch_op.f("ix_review_tenant"))
        batch_op.drop_index(batch_op.f("ix_review_merchant_id"))
        batch_op.drop_index(batch_op.f("ix_review_created_at"))

    op.drop_table("review")
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_version_status"))

    op.drop_table("model_version")
