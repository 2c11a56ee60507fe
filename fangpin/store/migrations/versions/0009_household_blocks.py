"""The online history's households in blocks (``household_blocks``): one row per county, batch
chunk and bucket of household keys instead of one per household, whose inserts were the largest
part of the batch's serial store writes (docs/decisions.md, "Households in blocks"); the level
that department events and clues raise after the batch in ``household_levels``.

Upgrade: rows of ``household_history`` stay where they are and are still read (a county's next
run replaces them). Downgrade: the blocks' households go back to ``household_history`` a row
each, and every household keeps its raised level.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
_RANK = {"红": 0, "黄": 1, "蓝": 2}  # fangpin.warnings.LEVEL_RANK as of this revision


def upgrade() -> None:
    op.create_table(
        "household_blocks",
        sa.Column("county", sa.String(64), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("part", sa.String(32), nullable=False),
        sa.Column("quarter", sa.String(6), nullable=False),
        sa.Column("households", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("county", "bucket", "part", name="pk_household_blocks"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "household_levels",
        sa.Column("household_key", sa.String(32), nullable=False),
        sa.Column("county", sa.String(64), nullable=False),
        sa.Column("level", sa.String(2), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("household_key", name="pk_household_levels"),
    )
    op.create_index("ix_household_levels_county", "household_levels", ["county"])


def _households(payload: bytes) -> list[dict]:
    """A block's households (the payload: a zstd frame of an Arrow IPC stream)."""
    import pyarrow as pa

    stream = pa.CompressedInputStream(pa.BufferReader(payload), "zstd")
    return pa.ipc.open_stream(stream).read_all().to_pylist()


def downgrade() -> None:
    conn = op.get_bind()
    raised = dict(conn.execute(sa.text("SELECT household_key, level FROM household_levels")).all())
    insert = sa.text(
        "INSERT INTO household_history (household_key, household_id, county, township, village, quarter, level, "
        "head_name, id_masked, data, block_key, block_row, updated_at) VALUES (:household_key, :household_id, "
        ":county, :township, :village, :quarter, :level, :head_name, :id_masked, :data, :block_key, :block_row, "
        ":updated_at) ON CONFLICT (household_key) DO NOTHING")
    now = datetime.now(UTC)
    counties = conn.execute(sa.text("SELECT DISTINCT county FROM household_blocks ORDER BY county")).scalars().all()
    for county in counties:
        rows = []
        for quarter, payload in conn.execute(sa.text(
                "SELECT quarter, payload FROM household_blocks WHERE county = :c ORDER BY part, bucket"), {"c": county}):
            for h in _households(payload):
                levels = [x for x in (h["level"], raised.get(h["household_key"])) if x in _RANK]
                rows.append({**h, "county": county, "quarter": quarter, "updated_at": now,
                             "level": min(levels, key=_RANK.__getitem__) if levels else None})
        if rows:
            conn.execute(insert, rows)
    # households that were rows already keep their raised level too
    for key, level in raised.items():
        stored = conn.execute(sa.text("SELECT level FROM household_history WHERE household_key = :k"),
                              {"k": key}).first()
        if stored is not None and level in _RANK and (stored[0] not in _RANK or _RANK[level] < _RANK[stored[0]]):
            conn.execute(sa.text("UPDATE household_history SET level = :v WHERE household_key = :k"),
                         {"v": level, "k": key})
    op.drop_index("ix_household_levels_county", table_name="household_levels")
    op.drop_table("household_levels")
    op.drop_table("household_blocks")
