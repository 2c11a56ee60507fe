"""Bounded-memory plumbing of ``ingest()``: files are read chunk by chunk, ledger rows are spilled
to disk per quarter, and persons/households are built and written one part of whole households
at a time (the steps run as tasks: fangpin.ingest.tasks).

Steps (docs/data-model.md gives the rules; fangpin.ingest.tables does the row work):

1. every file, chunk by chunk (``read.CHUNK_ROWS`` rows): ``prepare`` (normalise + validate),
   then for the ledger ``ledger_rows`` (hashes, masks, birth dates, ages), written as one Arrow IPC
   piece per chunk and quarter into a spill directory (:class:`Spill`), the oracle rows (one per
   household-quarter) likewise (``core.build_oracle_table`` streams them into oracle.parquet, the
   household-quarters given twice found per hash bucket); events and 监测线 rows stay in memory
   (one row per event / year);
2. per quarter, in tasks bounded by a piece or a bucket (fangpin.ingest.tasks, step 3): the
   person keys of every piece are hash-partitioned (:func:`buckets_of`) into buckets of about
   ``BUCKET_ROWS`` rows; per bucket the duplicated person rows are found (:func:`_duplicated`: keep
   the first in file and row order, which needs every row of a key, all in its bucket); the pieces
   sample their sorted household_ids (:func:`household_sample`), the samples give household_id
   boundaries cutting the quarter into parts of about ``PART_ROWS`` rows (:func:`part_bounds`),
   and a second pass over the pieces routes each row that is not a duplicate to its part
   (:func:`parts_of`): whole households, parts in household_id order;
3. per part: ``LedgerAgg.add`` builds the sorted persons and the households of the part, which
   are appended, in quarter and part order, to the Parquet files in 131,072-row row groups
   (:class:`RowGroupWriter`: the same files, row for row and row group for row group, as building
   everything at once).

Memory per task: one chunk, one piece, one bucket or one part, whatever the size of the quarter;
the calling process holds per quarter only the household_id samples (one per ``SAMPLE_EVERY``
rows) and the ``_seq`` of the duplicated rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PART_ROWS = 262_144  # person rows per part of whole households (step 3)
BUCKET_ROWS = 524_288  # person rows per hash bucket of person_key (duplicates, step 2)
SAMPLE_EVERY = 256  # a piece reports every n-th of its sorted household_ids (part boundaries, step 2)


class Spill:
    """Ledger pieces on disk, per quarter, in row order over all files."""

    def __init__(self, root: Path):
        self.root = root
        self.pieces: dict[str, list[tuple[Path, int]]] = {}
        self.n = 0

    def discard(self, paths: list[Path]) -> None:
        gone = set(paths)
        for q in list(self.pieces):
            self.pieces[q] = [p for p in self.pieces[q] if p[0] not in gone]
            if not self.pieces[q]:
                del self.pieces[q]
        for p in paths:
            p.unlink(missing_ok=True)


class RowGroupWriter:
    """Parquet writer that cuts row groups of exactly ``rows`` rows across appended tables (as
    ``DataFrame.to_parquet(row_group_size=rows)`` on the whole table does)."""

    def __init__(self, path: Path, rows: int):
        self.path, self.rows = path, rows
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None
        self.pending: list[pa.Table] = []
        self.n_pending = 0

    def append(self, t: pa.Table) -> None:
        if self.schema is None:
            self.schema = t.schema
            self.writer = pq.ParquetWriter(self.path, self.schema)
        elif t.schema != self.schema:
            t = conform(t, self.schema)
        self.pending.append(t)
        self.n_pending += len(t)
        if self.n_pending >= self.rows:
            whole = pa.concat_tables(self.pending)
            k = (len(whole) // self.rows) * self.rows
            self.writer.write_table(whole.slice(0, k), row_group_size=self.rows)
            rest = whole.slice(k)
            self.pending, self.n_pending = ([rest] if len(rest) else []), len(rest)

    def close(self) -> None:
        if self.writer is None:
            return
        if self.n_pending:
            self.writer.write_table(pa.concat_tables(self.pending), row_group_size=self.rows)
        self.writer.close()


def conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """``t`` with the columns of ``schema`` (absent ones all null), in its order and types."""
    cols = [t[f.name] if f.name in t.column_names else pa.nulls(len(t), f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _duplicated(keys: pa.ChunkedArray) -> np.ndarray:
    """Rows whose key occurred before (keep the first). person_key is 32 hexadecimal characters:
    compared as 4 uint64 per row instead of one Python string per row."""
    a = keys.combine_chunks().cast(pa.large_string())
    if a.null_count == 0 and len(a):
        off = np.frombuffer(a.buffers()[1], dtype=np.int64)[a.offset:a.offset + len(a) + 1]
        if (np.diff(off) == 32).all():
            data = np.frombuffer(a.buffers()[2], dtype=np.uint8)[off[0]:off[-1]]
            return pd.DataFrame(data.view("<u8").reshape(-1, 4)).duplicated(keep="first").to_numpy()
    return pd.Series(a.to_pylist()).duplicated(keep="first").to_numpy()


def buckets_of(keys: pa.ChunkedArray | pa.Array, buckets: int) -> np.ndarray:
    """Bucket number (0 … ``buckets`` - 1) of every person_key: a hash partition, so all rows of
    one key land in the same bucket whichever piece holds them (pandas' hash of the string)."""
    a = keys.to_numpy(zero_copy_only=False) if len(keys) else np.array([], dtype=object)
    return (pd.util.hash_array(a.astype(object)) % np.uint64(buckets)).astype(np.int64)


def household_sample(hh: pa.ChunkedArray | pa.Array, every: int) -> list[str]:
    """Every ``every``-th household_id of a piece's rows in sorted order (nulls left out): each
    sample stands for ``every`` rows when the quarter's part boundaries are chosen."""
    s = pc.drop_null(hh)
    s = s.take(pc.sort_indices(s))
    return s.to_pylist()[::every]


def part_bounds(samples: list[str], part_rows: int, every: int) -> list[str]:
    """Household_id boundaries cutting a quarter into parts of about ``part_rows`` rows, from the
    pieces' samples (:func:`household_sample`): part ``v`` holds the household_ids in
    ``[bounds[v-1], bounds[v])``, so a household is never cut and parts follow household_id order."""
    s = sorted(samples)
    step = max(1, part_rows // every)
    out: list[str] = []
    for b in s[step::step]:
        if not out or b > out[-1]:
            out.append(b)
    return out


def parts_of(hh: pa.ChunkedArray | pa.Array, bounds: list[str]) -> np.ndarray:
    """Part number of every row (:func:`part_bounds`); a null household_id goes to the last part
    (where a sort puts it)."""
    a = hh.to_numpy(zero_copy_only=False).astype(object) if len(hh) else np.array([], dtype=object)
    null = pd.isna(a)
    part = np.full(len(a), len(bounds), dtype=np.int64)
    if len(bounds):
        part[~null] = np.searchsorted(np.array(bounds, dtype=object), a[~null], side="right")
    return part
