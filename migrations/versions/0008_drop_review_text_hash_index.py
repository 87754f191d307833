"""drop the review text_hash index: nothing looks reviews up by it, and on every insert its
random keys cost more than the rest of the row

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 04:50:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_text_hash"))


def downgrade() -> None:
    with op.batch_alter_table("review", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_text_hash"), ["text_hash"], unique=False)
