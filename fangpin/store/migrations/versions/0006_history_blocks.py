"""Online history in blocks: the histories and snapshots of neighbouring households as one Arrow
record batch (``history_blocks``, schemas in ``history_schemas``); ``household_history`` keeps
each household's key, place and level and points at its block row. ``data`` stays (nullable) for
rows written before: they are read as they are until the next ``fangpin score`` replaces them.
The person → household map loses its index on ``household_key``: no query uses it, and it was a
third of the cost of writing a province's map.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "history_blocks",
        sa.Column("block_key", sa.String(32), nullable=False),
        sa.Column("county", sa.String(64), nullable=False),
        sa.Column("quarter", sa.String(6), nullable=False),
        sa.Column("schema_key", sa.String(32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("block_key", name="pk_history_blocks"),
    )
    op.create_index("ix_history_blocks_county", "history_blocks", ["county"])
    op.create_table(
        "history_schemas",
        sa.Column("schema_key", sa.String(32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("schema_key", name="pk_history_schemas"),
    )
    with op.batch_alter_table("household_history") as b:
        b.add_column(sa.Column("block_key", sa.String(32), nullable=True))
        b.add_column(sa.Column("block_row", sa.Integer(), nullable=True))
        b.alter_column("data", existing_type=sa.JSON(), nullable=True)
    op.drop_index("ix_household_persons_household_key", table_name="household_persons")


def downgrade() -> None:
    op.create_index("ix_household_persons_household_key", "household_persons", ["household_key"])
    # rows in blocks have no JSON: they are dropped (the next `fangpin score` writes them again)
    op.execute("DELETE FROM household_history WHERE data IS NULL")
    with op.batch_alter_table("household_history") as b:
        b.alter_column("data", existing_type=sa.JSON(), nullable=False)
        b.drop_column("block_row")
        b.drop_column("block_key")
    op.drop_table("history_schemas")
    op.drop_index("ix_history_blocks_county", table_name="history_blocks")
    op.drop_table("history_blocks")
