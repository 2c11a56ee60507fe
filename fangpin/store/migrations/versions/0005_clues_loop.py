"""Clues from every channel, the loop after a warning (steps, read-back from the next export,
conflicts) and each household's monitoring state from the newest export.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "clues",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("county", sa.String(64), nullable=False),
        sa.Column("township", sa.String(64), nullable=False),
        sa.Column("village", sa.String(64), nullable=True),
        sa.Column("household_id", sa.String(64), nullable=True),
        sa.Column("person_key", sa.String(32), nullable=True),
        sa.Column("id_masked", sa.String(32), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("received_by", sa.String(64), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("last_received_at", TS, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("warning_id", sa.String(32), nullable=True),
        sa.Column("level", sa.String(2), nullable=True),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=True),
        sa.Column("deadline", sa.Date(), nullable=True),
        sa.Column("return_risk", sa.Boolean(), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.Column("reports", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["warning_id"], ["warnings.id"], name="fk_clues_warning_id_warnings",
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_clues"),
    )
    op.create_index("ix_clues_channel", "clues", ["channel"])
    op.create_index("ix_clues_person_key", "clues", ["person_key"])
    op.create_index("ix_clues_warning_id", "clues", ["warning_id"])
    op.create_index("ix_clues_place", "clues", ["county", "township", "village"])
    op.create_index("ix_clues_household", "clues", ["county", "household_id"])

    op.create_table(
        "warning_loop",
        sa.Column("warning_id", sa.String(32), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("clues", sa.Integer(), nullable=False),
        sa.Column("floor_level", sa.String(2), nullable=True),
        sa.Column("return_risk", sa.Boolean(), nullable=False),
        sa.Column("verified_at", sa.Date(), nullable=True),
        sa.Column("decision_due", sa.Date(), nullable=True),
        sa.Column("identified_at", sa.Date(), nullable=True),
        sa.Column("identified_quarter", sa.String(6), nullable=True),
        sa.Column("identified_month", sa.Integer(), nullable=True),
        sa.Column("support_due", sa.Date(), nullable=True),
        sa.Column("support_at", sa.Date(), nullable=True),
        sa.Column("support_source", sa.String(8), nullable=True),
        sa.Column("eliminated_quarter", sa.String(6), nullable=True),
        sa.Column("eliminated_month", sa.Integer(), nullable=True),
        sa.Column("ledger_outcome", sa.String(8), nullable=True),
        sa.Column("readback_quarter", sa.String(6), nullable=True),
        sa.Column("conflict", sa.Text(), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["warning_id"], ["warnings.id"], name="fk_warning_loop_warning_id_warnings",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("warning_id", name="pk_warning_loop"),
    )

    op.create_table(
        "household_ledger",
        sa.Column("county", sa.String(64), nullable=False),
        sa.Column("household_id", sa.String(64), nullable=False),
        sa.Column("township", sa.String(64), nullable=False),
        sa.Column("village", sa.String(64), nullable=False),
        sa.Column("quarter", sa.String(6), nullable=False),
        sa.Column("monitor_category", sa.String(16), nullable=True),
        sa.Column("monitor_since", sa.Integer(), nullable=True),
        sa.Column("risk_eliminated", sa.Boolean(), nullable=True),
        sa.Column("eliminated_at", sa.Integer(), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("county", "household_id", name="pk_household_ledger"),
    )
    op.create_index("ix_household_ledger_place", "household_ledger", ["county", "township", "village"])


def downgrade() -> None:
    op.drop_table("household_ledger")
    op.drop_table("warning_loop")
    op.drop_table("clues")
