"""daily rollups of the review and prediction counts, for the stats at scale

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 12:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def _text(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "stats_review_day",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tenant", _text(128), nullable=False),
        sa.Column("merchant_id", _text(128), nullable=False),
        sa.Column("reviews", sa.Integer(), nullable=False),
        sa.Column("positive", sa.Integer(), nullable=False),
        sa.Column("labelled", sa.Integer(), nullable=False),
        sa.Column("corrections", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "tenant", "merchant_id"),
    )
    op.create_table(
        "stats_prediction_day",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tenant", _text(128), nullable=False),
        sa.Column("merchant_id", _text(128), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("backend", _text(32), nullable=False),
        sa.Column("predictions", sa.Integer(), nullable=False),
        sa.Column("positive", sa.Integer(), nullable=False),
        sa.Column("corrections", sa.Integer(), nullable=False),
        sa.Column("fallbacks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "tenant", "merchant_id", "model_version_id", "backend"),
    )
    op.create_table(
        "stats_rollup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("through", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("stats_rollup")
    op.drop_table("stats_prediction_day")
    op.drop_table("stats_review_day")
