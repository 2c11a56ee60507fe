"""The person → household map keyed by (county, person_key), on SQLite WITHOUT ROWID: a batch
chunk's persons go into their county's range of one B-tree instead of into a rowid table, its
person_key index and its county index, whose pages a province's random keys spread everywhere
(docs/decisions.md, "The person map keyed by county"). Rows are copied over.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _recreate(key: list[str], with_rowid: bool) -> None:
    op.create_table(
        "household_persons_new",
        sa.Column("county", sa.String(64), nullable=False),
        sa.Column("person_key", sa.String(32), nullable=False),
        sa.Column("household_key", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint(*key, name="pk_household_persons_new"),
        sqlite_with_rowid=with_rowid,
    )
    op.execute("INSERT INTO household_persons_new (county, person_key, household_key) "
               "SELECT county, person_key, household_key FROM household_persons WHERE true "
               "ON CONFLICT DO NOTHING")  # downgrade: a person mapped in two counties keeps one
    op.drop_table("household_persons")
    op.rename_table("household_persons_new", "household_persons")
    if op.get_bind().dialect.name == "postgresql":  # SQLite has no named primary keys to rename
        op.execute("ALTER TABLE household_persons RENAME CONSTRAINT pk_household_persons_new "
                   "TO pk_household_persons")


def upgrade() -> None:
    _recreate(["county", "person_key"], with_rowid=False)


def downgrade() -> None:
    _recreate(["person_key"], with_rowid=True)
    op.create_index("ix_household_persons_county", "household_persons", ["county"])
