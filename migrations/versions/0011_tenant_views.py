"""labels find their text, labellers' trust per tenant (no longer per actor), and tenants' own
views of the CPU model

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_str = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "labeller",
        sa.Column("tenant", _str(length=128), nullable=False),
        sa.Column("labels", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.Column("held_back", sa.Integer(), nullable=False),
        sa.Column("checked", sa.Integer(), nullable=False),
        sa.Column("agreed", sa.Integer(), nullable=False),
        sa.Column("trust", sa.Float(), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )
    op.create_table(
        "tenant_view",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", _str(length=128), nullable=False),
        sa.Column("model_ref", _str(length=512), nullable=False),
        sa.Column("snapshot", _str(length=64), nullable=False),
        sa.Column("base_version_id", sa.Integer(), nullable=True),
        sa.Column("examples", sa.Integer(), nullable=False),
        sa.Column("own_examples", sa.Integer(), nullable=False),
        sa.Column("last_label_event_id", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["base_version_id"], ["model_version.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("tenant_view", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tenant_view_tenant"), ["tenant"], unique=False)
        batch_op.create_index(batch_op.f("ix_tenant_view_status"), ["status"], unique=False)

    with op.batch_alter_table("prediction", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenant_view_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_prediction_tenant_view_id", "tenant_view", ["tenant_view_id"], ["id"]
        )

    with op.batch_alter_table("label_event", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("text_hash", _str(length=64), server_default="", nullable=False)
        )
    op.execute(
        "UPDATE label_event SET text_hash = "
        "(SELECT review.text_hash FROM review WHERE review.id = label_event.review_id)"
    )
    with op.batch_alter_table("label_event", schema=None) as batch_op:
        batch_op.alter_column("text_hash", server_default=None)
        batch_op.create_index(batch_op.f("ix_label_event_text_hash"), ["text_hash"], unique=False)


    with op.batch_alter_table("actor", schema=None) as batch_op:
        batch_op.drop_column("trust")
        batch_op.drop_column("labels")
        batch_op.drop_column("agreements")


def downgrade() -> None:
    with op.batch_alter_table("actor", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("agreements", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("labels", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("trust", sa.Float(), server_default="0.5", nullable=False))
    with op.batch_alter_table("label_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_label_event_text_hash"))
        batch_op.drop_column("text_hash")
    with op.batch_alter_table("prediction", schema=None) as batch_op:
        batch_op.drop_constraint("fk_prediction_tenant_view_id", type_="foreignkey")
        batch_op.drop_column("tenant_view_id")
    with op.batch_alter_table("tenant_view", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tenant_view_status"))
        batch_op.drop_index(batch_op.f("ix_tenant_view_tenant"))
    op.drop_table("tenant_view")
    op.drop_table("labeller")
