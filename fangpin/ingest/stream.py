"""Bounded-memory plumbing of ``ingest()``: files are read chunk by chunk, ledger rows are spilled
to disk per quarter, and persons/households are built and written one part of whole households
at a time (the steps run as tasks: fangpin.ingest.tasks).

Steps (docs/data-model.md gives the rules; fangpin.ingest.tables does the row work):

1. every file, chunk by chunk (``read.CHUNK_ROWS`` rows): ``prepare`` (normalise + validate),
   then for the ledger ``ledger_rows`` (hashes, masks, birth dates, ages), written as one Arrow IPC
   piece per chunk and quarter into a spill directory (:class:`Spill`); events, 监测线 and oracle
   rows stay in memory (they are small: one row per event / year / household-quarter, a few columns);
2. per quarter: the join keys of the quarter (person_key, household_id) decide the duplicated
   person rows (:func:`_duplicated`: keep the first in file and row order) and cut the households,
   in household_id order, into parts of about ``PART_ROWS`` person rows (:func:`_parts`); a second
   pass over the pieces routes each row to its part;
3. per part: ``LedgerAgg.add`` builds the sorted persons and the households of the part, which
   are appended, in quarter and part order, to the Parquet files in 131,072-row row groups
   (:class:`RowGroupWriter`: the same files, row for row and row group for row group, as building
   everything at once).

Memory per task: one chunk, one part, or one quarter's keys of its person rows (two short
strings and a few integers per row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PART_ROWS = 262_144  # person rows per part of whole households (step 3)


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


def _parts(hh: pa.ChunkedArray, keep: np.ndarray, part_rows: int) -> np.ndarray:
    """Part number of every row (-1 where not ``keep``): households in household_id order, cut
    into parts of about ``part_rows`` rows, never inside a household."""
    idx = np.flatnonzero(keep)
    part = np.full(len(keep), -1, dtype=np.int64)
    if not len(idx):
        return part
    h = hh.take(pa.array(idx))
    order = pc.sort_indices(h).to_numpy()
    s = h.take(pa.array(order))
    new = np.ones(len(s), dtype=bool)
    if len(s) > 1:
        new[1:] = pc.not_equal(s.slice(1), s.slice(0, len(s) - 1)).to_numpy(zero_copy_only=False)
    start = np.maximum.accumulate(np.where(new, np.arange(len(s)), 0))
    part[idx[order]] = start // part_rows
    return part
