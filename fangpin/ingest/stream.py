"""Bounded-memory plumbing of ``ingest()``: files are read chunk by chunk, ledger rows are spilled
to disk per quarter, and persons/households are built and written one part of whole households
at a time.

Steps (docs/data-model.md gives the rules; fangpin.ingest.tables does the row work):

1. every file, chunk by chunk (``read.CHUNK_ROWS`` rows): ``prepare`` (normalise + validate),
   then for the ledger ``ledger_rows`` (hashes, masks, birth dates, ages), written as one Arrow IPC
   piece per chunk and quarter into a spill directory; events, 监测线 and oracle rows stay in memory
   (they are small: one row per event / year / household-quarter, a few columns);
2. per quarter, in quarter order: the join keys of the quarter (person_key, household_id) decide
   the duplicated person rows (keep the first in file and row order) and cut the households,
   in household_id order, into parts of about ``PART_ROWS`` person rows; a second pass over the
   pieces routes each row to its part;
3. per part: ``LedgerAgg.add`` builds the sorted persons and the households of the part, which
   are appended to the Parquet files in 131,072-row row groups (the same files, row for row and
   row group for row group, as building everything at once).

Memory: one chunk, one part, and per quarter the keys of its person rows (two short strings and
a few integers per row).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq

from fangpin.ingest import tables as tb

PART_ROWS = 262_144  # person rows per part of whole households (step 3)


class Spill:
    """Ledger pieces on disk, per quarter, in row order over all files."""

    def __init__(self, root: Path):
        self.root = root
        self.pieces: dict[str, list[tuple[Path, int]]] = {}
        self.n = 0

    def add(self, rows: pd.DataFrame) -> list[Path]:
        """Write one chunk's ledger rows (``tables.ledger_rows``), split by quarter."""
        written = []
        for q, part in rows.groupby("quarter", sort=False):
            d = self.root / "ledger" / str(q)
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"{self.n:07d}.arrow"
            self.n += 1
            feather.write_feather(part.reset_index(drop=True), path, compression="lz4")
            self.pieces.setdefault(str(q), []).append((path, len(part)))
            written.append(path)
        return written

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


def build_quarter(pieces: list[tuple[Path, int]], work: Path, agg: tb.LedgerAgg, persons: RowGroupWriter,
                  households: RowGroupWriter, lookup_keys: pa.Array | None, lookup: list[pd.DataFrame],
                  part_rows: int | None = None) -> None:
    """Steps 2 and 3 for one quarter's pieces."""
    part_rows = part_rows or PART_ROWS
    keys = [feather.read_table(p, columns=["person_key", "household_id"]) for p, _ in pieces]
    pk = pa.chunked_array([t["person_key"] for t in keys])
    hh = pa.chunked_array([t["household_id"] for t in keys])
    del keys
    dup = _duplicated(pk)
    part = _parts(hh, ~dup, part_rows)
    dup_keys = pk.filter(pa.array(dup)).unique() if dup.any() else None
    del pk, hh

    work.mkdir(parents=True, exist_ok=True)
    routed: dict[int, list[Path]] = {}
    d_rows, kept_rows = [], []
    o = 0
    for i, (path, n) in enumerate(pieces):
        t = feather.read_table(path)
        b = part[o:o + n]
        if dup_keys is not None:
            dmask = dup[o:o + n]
            if dmask.any():
                d_rows.append(t.filter(pa.array(dmask)).to_pandas())
            km = ~dmask & pc.is_in(t["person_key"], value_set=dup_keys).to_numpy(zero_copy_only=False)
            if km.any():
                kept_rows.append(t.filter(pa.array(km)).to_pandas())
        o += n
        for v in np.unique(b[b >= 0]):
            dest = work / f"{v:07d}_{i:07d}.arrow"
            feather.write_feather(t.take(pa.array(np.flatnonzero(b == v))), dest, compression="lz4")
            routed.setdefault(int(v), []).append(dest)
        path.unlink()
    if d_rows:
        agg.add_duplicates(tb.duplicate_quarantine(pd.concat(d_rows, ignore_index=True),
                                                   pd.concat(kept_rows, ignore_index=True)))
    del part, dup

    for v in sorted(routed):
        df = pa.concat_tables([feather.read_table(p) for p in routed[v]], promote_options="default").to_pandas()
        for p in routed[v]:
            p.unlink()
        p_out, h_out = agg.add(df)
        del df
        persons.append(pa.Table.from_pandas(p_out, preserve_index=False))
        households.append(pa.Table.from_pandas(h_out, preserve_index=False))
        if lookup_keys is not None and len(lookup_keys):
            hit = pc.is_in(pa.array(p_out["person_key"]), value_set=lookup_keys).to_numpy(zero_copy_only=False)
            if hit.any():
                lookup.append(p_out.loc[hit, ["person_key", "quarter_idx", "household_id"]])
    shutil.rmtree(work, ignore_errors=True)
