"""Online scoring history: per-household history and snapshot, person → household map, place
context, department events received by the API.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "household_history",
        sa.Column("household_key", sa.String(32), nullable=False),
        sa.Column("household_id", sa.String(64), nullable=False),
        sa.Column("county", sa.String(64), nullable=False),
        sa.Column("township", sa.String(64), nullable=False),
        sa.Column("village", sa.String(64), nullable=False),
        sa.Column("quarter", sa.String(6), nullable=False),
        sa.Column("level", sa.String(2), nullable=True),
        sa.Column("head_name", sa.String(64), nullable=True),
        sa.Column("id_masked", sa.String(32), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("household_key", name="pk_household_history"),
    )
    op.create_index("ix_household_history_county", "household_history", ["county"])

    op.create_table(
        "household_persons",
        sa.Column("person_key", sa.String(32), nullable=False),
        sa.Column("household_key", sa.String(32), nullable=False),
        sa.Column("county", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("person_key", name="pk_household_persons"),
    )
    op.create_index("ix_household_persons_household_key", "household_persons", ["household_key"])
    op.create_index("ix_household_persons_county", "household_persons", ["county"])

    op.create_table(
        "place_context",
        sa.Column("county", sa.String(64), nullable=False),
        sa.Column("township", sa.String(64), nullable=False),
        sa.Column("village", sa.String(64), nullable=False),
        sa.Column("quarter", sa.String(6), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("county", "township", "village", name="pk_place_context"),
    )

    op.create_table(
        "department_events",
        sa.Column("event_key", sa.String(32), nullable=False),
        sa.Column("person_key", sa.String(32), nullable=False),
        sa.Column("household_key", sa.String(32), nullable=True),
        sa.Column("county", sa.String(64), nullable=False),
        sa.Column("event_date", sa.Date(), nullable=False),
        sa.Column("department", sa.String(16), nullable=False),
        sa.Column("event_type", sa.String(16), nullable=False),
        sa.Column("amount", sa.Float(), nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("event_key", name="pk_department_events"),
    )
    op.create_index("ix_department_events_person_key", "department_events", ["person_key"])
    op.create_index("ix_department_events_household_key", "department_events", ["household_key"])


def downgrade() -> None:
    op.drop_table("department_events")
    op.drop_table("place_context")
    op.drop_table("household_persons")
    op.drop_table("household_history")
