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
# The block format as this revision writes it, on its own (a migration must not follow later code):
# per county and bucket (a person key's first 12 bits), the (person key, household key) pairs of
# 16 bytes each, sorted by both keys.
_BUCKET_BITS = 12
_KEY_BYTES = 16


def _counties(conn, table: str) -> list[str]:
    return list(conn.execute(sa.text(f"SELECT DISTINCT county FROM {table} ORDER BY county")).scalars())


def _blocks(county: str, rows) -> list[dict]:
    """The person blocks of one county's (person key, household key) rows (keyed hashes)."""
    pairs = sorted((bytes.fromhex(p), bytes.fromhex(h)) for p, h in rows)
    if any(len(p) != _KEY_BYTES or len(h) != _KEY_BYTES for p, h in pairs):
        raise ValueError(f"person map of {county}: a key is not a keyed hash of {2 * _KEY_BYTES} hexadecimal characters")
    out: dict[int, bytearray] = {}
    for p, h in pairs:
        out.setdefault(((p[0] << 8) | p[1]) >> (16 - _BUCKET_BITS), bytearray()).extend(p + h)
    return [{"county": county, "bucket": b, "part": _MIGRATED, "payload": bytes(v)} for b, v in sorted(out.items())]


def _pairs(payload: bytes) -> list[tuple[str, str]]:
    w = 2 * _KEY_BYTES
    return [(payload[i:i + _KEY_BYTES].hex(), payload[i + _KEY_BYTES:i + w].hex()) for i in range(0, len(payload), w)]


def upgrade() -> None:
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
        rows = conn.execute(sa.text("SELECT person_key, household_key FROM household_persons WHERE county = :c"),
                            {"c": county}).all()
        blocks = _blocks(county, rows)
        if blocks:
            conn.execute(insert, blocks)
    op.drop_table("household_persons")


def downgrade() -> None:
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
                for b in blocks for p, h in _pairs(b)]
        if rows:
            conn.execute(insert, rows)
    op.drop_table("person_blocks")
