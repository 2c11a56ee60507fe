"""The person → household map in blocks (``person_blocks``): one row per county, batch chunk and
bucket of person keys instead of one per person, whose inserts were the largest part of the
batch's serial store writes (docs/decisions.md, "The person map in blocks"). Rows are carried
over county by county, both ways.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_MIGRATED = "0"  # the part of carried-over blocks (a county's blocks are read in part order)


def _counties(conn, table: str) -> list[str]:
    return list(conn.execute(sa.text(f"SELECT DISTINCT county FROM {table} ORDER BY county")).scalars())


def upgrade() -> None:
    from fangpin.store.history import encode_person_blocks

    op.create_table(
        "person_blocks",
        sa.Column("county", sa.String(64), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("part", sa.String(32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("county", "bucket", "part", name="pk_person_blocks"),
        sqlite_with_rowid=False,
    )
    conn = op.get_bind()
    insert = sa.text("INSERT INTO person_blocks (county, bucket, part, payload) "
                     "VALUES (:county, :bucket, :part, :payload)")
    for county in _counties(conn, "household_persons"):
        rows = conn.execute(sa.text("SELECT county, person_key, household_key FROM household_persons "
                                    "WHERE county = :c"), {"c": county}).mappings().all()
        blocks = encode_person_blocks([dict(r) for r in rows], _MIGRATED).to_pylist()
        if blocks:
            conn.execute(insert, blocks)
    op.drop_table("household_persons")


def downgrade() -> None:
    from fangpin.store.history import decode_person_block

    op.create_table(
        "household_persons",
        sa.Column("county", sa.String(64), nullable=False),
        sa.Column("person_key", sa.String(32), nullable=False),
        sa.Column("household_key", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("county", "person_key", name="pk_household_persons"),
        sqlite_with_rowid=False,
    )
    conn = op.get_bind()
    insert = sa.text("INSERT INTO household_persons (county, person_key, household_key) "
                     "VALUES (:county, :person_key, :household_key) ON CONFLICT DO NOTHING")
    for county in _counties(conn, "person_blocks"):
        blocks = conn.execute(sa.text("SELECT payload FROM person_blocks WHERE county = :c ORDER BY part, bucket"),
                              {"c": county}).scalars().all()
        rows = [{"county": county, "person_key": p, "household_key": h}
                for b in blocks for p, h in decode_person_block(b)]
        if rows:
            conn.execute(insert, rows)
    op.drop_table("person_blocks")
