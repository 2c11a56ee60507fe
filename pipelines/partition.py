"""Partitions of whole households: the canonical tables cut into chunks that tasks process alone.

A chunk is a set of WHOLE townships (packed by size, largest first, into ``n`` chunks), so
everything models.features computes over a population (village / township disaster shares, the
township's identification rate) and per-township capacities come out in each chunk exactly as for
the whole county or province. One streaming pass over the Parquet tables (tasks of a few row
groups; row groups whose quarter_idx statistics are outside the wanted quarters are skipped)
routes every row into per-chunk Arrow IPC (Feather) part files under a scratch directory; a
chunk's parts are read back in task order, so its rows keep the order of the source tables
however the tasks run (fangpin.cluster: in worker processes or here).

Two ways of assigning rows (routers):

- :class:`QuarterRouter` (batch scoring of quarter ``q``): a household goes to the chunk of its
  township in ``q``; household rows also go to the chunk of their own township (a household that
  moved still counts in its old township's past quarters);
- :class:`HouseholdRouter` (training: every quarter): a household goes to the chunk of every
  township it was ever in, with all its rows; the chunk's feature rows are then those whose own
  township is in the chunk (:func:`own_rows`), so a row is computed once, with its whole history.

Memory: one batch of rows plus the household-id → chunk map (one id and one integer per
household).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fangpin.errors import UserError

TABLES = ("households", "persons", "events")


class StaleTables(UserError, ValueError):
    """An ingested table without the canonical column types: ingest it again."""


def check_types(path: Path, schema) -> None:
    """The columns the partition pass computes with must have their canonical types (an events
    table written by an older ingest for an export without department signals had only text
    columns): a clear error naming the file, never a compute kernel's message."""
    import pyarrow as pa

    want = {"quarter_idx": pa.types.is_integer, "household_id": lambda t: pa.types.is_string(t)
            or pa.types.is_large_string(t)}
    for name, ok in want.items():
        i = schema.get_field_index(name)
        got = "missing" if i < 0 else f"of type {schema.field(i).type}"
        if i < 0 or not ok(schema.field(i).type):
            raise StaleTables(f"{path.name} 的列 {name} 缺失或类型不对，请重新运行 fangpin ingest 生成标准表。",
                              f"{path.name}: column {name} is {got}, not the canonical type; re-run "
                              "`fangpin ingest` to rewrite the tables.")


def dataset(d: Path, table: str):
    import pyarrow.dataset as pds

    p = Path(d) / f"{table}.parquet"
    return pds.dataset(str(p), format="parquet") if p.exists() else None


def place_key(county, township):
    """"county/township" text per row (null → empty)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def text(a):
        return pc.fill_null(pc.cast(a, pa.string()), "")

    return pc.binary_join_element_wise(text(county), text(township), "/")


def pack_townships(key, n: int) -> tuple[dict[str, int], list[list[tuple[str, str]]]]:
    """Townships ("county/township" keys, one per row) packed into ``n`` chunks of similar row
    counts (largest first). Returns township → chunk and the (county, township) pairs per chunk."""
    import pyarrow.compute as pc

    vc = pc.value_counts(key)
    names, sizes = vc.field("values").to_pylist(), vc.field("counts").to_numpy()
    load = np.zeros(n, dtype=np.int64)
    bins: dict[str, int] = {}
    places: list[list[tuple[str, str]]] = [[] for _ in range(n)]
    for tw, size in sorted(zip(names, sizes.tolist(), strict=True), key=lambda kv: (-kv[1], kv[0])):
        k = int(np.argmin(load))
        bins[tw] = k
        load[k] += size
        county, _, township = tw.partition("/")
        places[k].append((county, township))
    return bins, places


class _Ids:
    """household id → position lookup, built where it is used (picklable: ids travel as Arrow)."""

    def __init__(self, ids):
        self.ids = ids
        self._index: pd.Index | None = None

    def __getstate__(self):
        return {**self.__dict__, "_index": None}

    def positions(self, hid) -> np.ndarray:
        """Position of each id of ``hid`` in ``ids`` (-1: unknown); each distinct id looked up once."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._index is None:  # object-dtype index: hashing Python strings beats Arrow-backed strings here
            self._index = pd.Index(self.ids.to_numpy(zero_copy_only=False), dtype=object)
        de = pc.dictionary_encode(hid.combine_chunks() if isinstance(hid, pa.ChunkedArray) else hid)
        dpos = self._index.get_indexer(pd.Index(de.dictionary.to_numpy(zero_copy_only=False), dtype=object))
        idx = pc.fill_null(de.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        return np.where(idx >= 0, dpos[np.maximum(idx, 0)], -1)


class QuarterRouter:
    """Scoring quarter ``q``: household id → chunk of its township in ``q``; household rows also to
    the chunk of their own township (module doc)."""

    def __init__(self, ids, bucket: np.ndarray, keys, key_bin: np.ndarray):
        self.ids, self.bucket, self.keys, self.key_bin = _Ids(ids), bucket, keys, key_bin

    def by_key(self, key) -> np.ndarray:
        import pyarrow.compute as pc

        if not len(self.key_bin):
            return np.full(len(key), -1, dtype=np.int64)
        pos = pc.fill_null(pc.index_in(key, value_set=self.keys), -1).to_numpy(zero_copy_only=False)
        pos = pos.astype(np.int64)
        return np.where(pos >= 0, self.key_bin[np.maximum(pos, 0)], -1)

    def by_id(self, hid) -> np.ndarray:
        pos = self.ids.positions(hid)
        return np.where(pos >= 0, self.bucket[np.maximum(pos, 0)], -1)

    def route(self, table: str, b) -> tuple[np.ndarray, np.ndarray]:
        """(row numbers, chunk) of the rows of batch ``b`` of ``table`` (a row may go to two chunks)."""
        by_id = self.by_id(b.column("household_id"))
        if table == "households":
            own = self.by_key(place_key(b.column("county"), b.column("township")))
            mine = np.flatnonzero(own >= 0)
            extra = np.flatnonzero((by_id >= 0) & (by_id != own))
            return np.concatenate([mine, extra]), np.concatenate([own[mine], by_id[extra]])
        rows = np.flatnonzero(by_id >= 0)
        return rows, by_id[rows]


class HouseholdRouter:
    """Training: household id → every chunk of a township the household was ever in (most
    households: one; ``extra`` holds the further (id position, chunk) pairs of those that moved).
    Household rows carry ``_row``, their position in households.parquet."""

    row_numbers = True

    def __init__(self, ids, bucket: np.ndarray, extra_pos: np.ndarray, extra_bin: np.ndarray):
        self.ids, self.bucket = _Ids(ids), bucket
        self.extra_pos, self.extra_bin = extra_pos, extra_bin

    def route(self, table: str, b) -> tuple[np.ndarray, np.ndarray]:
        pos = self.ids.positions(b.column("household_id"))
        rows = np.flatnonzero(pos >= 0)
        bucket = self.bucket[pos[rows]]
        if len(self.extra_pos):
            # the rows of moved households, once more per further chunk
            order = np.argsort(self.extra_pos, kind="stable")
            ep, eb = self.extra_pos[order], self.extra_bin[order]
            lo = np.searchsorted(ep, pos[rows], side="left")
            hi = np.searchsorted(ep, pos[rows], side="right")
            cnt = hi - lo
            if cnt.any():
                r = np.repeat(rows, cnt)
                start = np.repeat(lo, cnt)
                within = np.arange(len(r)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
                rows = np.concatenate([rows, r])
                bucket = np.concatenate([bucket, eb[start + within]])
        return rows, bucket


def partition_part(task: tuple, router, scratch: str, n: int) -> dict[str, np.ndarray]:
    """Route the rows of some row groups of one table (``task``: table, part number, Parquet path,
    row-group numbers, quarter range) into ``<table>_<chunk>_<part>.arrow`` files, one row group at
    a time. Returns the rows written per chunk."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from fangpin.contract import PROVENANCE

    table, part, path, groups, qlo, qhi = task
    pf = pq.ParquetFile(path)
    rows_k = np.zeros(n, dtype=np.int64)
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    # every column but the rows' provenance (export file and row: never a feature; the file name
    # was the part files' largest column: 4.02 → 3.35 GB at 1 M households)
    columns = [c for c in pf.schema_arrow.names if c not in PROVENANCE]
    schema = pa.schema([pf.schema_arrow.field(c) for c in columns], metadata=pf.schema_arrow.metadata)
    numbered = table == "households" and getattr(router, "row_numbers", False)
    if numbered:  # each household row's position in the file: the in-process row order
        schema = schema.append(pa.field("_row", pa.int64()))
        md = pf.metadata
        offsets = np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)])
    try:
        for g in groups:
            b = pf.read_row_group(g, columns=columns)
            if numbered:
                b = b.append_column("_row", pa.array(np.arange(offsets[g], offsets[g + 1], dtype=np.int64)))
            q = b.column("quarter_idx")
            keep = pc.and_(pc.greater_equal(q, qlo), pc.less_equal(q, qhi))
            if not pc.all(keep).as_py():
                b = b.filter(keep)
            if b.num_rows == 0:
                continue
            rows, bucket = router.route(table, b)
            order = np.argsort(bucket, kind="stable")
            sorted_rows = rows[order]
            starts = np.searchsorted(bucket[order], np.arange(n + 1))
            for k in np.flatnonzero(np.diff(starts)).tolist():
                lo, hi = int(starts[k]), int(starts[k + 1])
                w = writers.get(k)
                if w is None:
                    w = writers[k] = pa.ipc.new_file(str(Path(scratch) / f"{table}_{k:04d}_{part:04d}.arrow"), schema)
                # one take per chunk: its row numbers ascend (then those routed a second time), which
                # gathers ~3x faster than one take of the whole batch in chunk order
                for rb in b.take(pa.array(sorted_rows[lo:hi], type=pa.int64())).to_batches():
                    w.write_batch(rb)
                rows_k[k] += hi - lo
    finally:
        for w in writers.values():
            w.close()
    return {table: rows_k}


class Partitioner:
    """The partition pass (module doc): :meth:`index_quarter` (scoring) or :meth:`index_all`
    (training) builds the router, :meth:`tasks` lists the routing tasks (run them with
    :func:`partition_part`), :meth:`add` sums their row counts."""

    PERSON_QUARTERS = 2  # scoring: the scored quarter and the one before (changes since the last snapshot)

    def __init__(self, src: Path, scratch: Path, n: int, groups_per_task: int = 2):
        self.src, self.scratch, self.n = Path(src), Path(scratch), n
        self.groups_per_task = groups_per_task
        self.counties: set[str] = set()
        self.rows = {t: np.zeros(n, dtype=np.int64) for t in TABLES}
        self.townships: list[list[tuple[str, str]]] = [[] for _ in range(n)]  # (county, township) per chunk
        self.router = None
        self.wanted: dict[str, tuple[int, int]] = {}

    def _scan(self, flt=None):
        import pyarrow as pa
        import pyarrow.compute as pc

        hh = dataset(self.src, "households")
        ids, keys = [], []
        for b in hh.to_batches(columns=["household_id", "county", "township"], filter=flt,
                               batch_readahead=1, fragment_readahead=1):
            if b.num_rows:
                ids.append(b.column(0).cast(pa.string()))
                keys.append(place_key(b.column(1), b.column(2)))
                self.counties.update(x for x in pc.unique(b.column(1)).to_pylist() if x is not None)
        key = pa.chunked_array(keys, type=pa.string()).combine_chunks() if keys else pa.array([], pa.string())
        ids_arr = pa.chunked_array(ids, type=pa.string()).combine_chunks() if ids else pa.array([], pa.string())
        return ids_arr, key

    def index_quarter(self, qidx: int, event_window: int) -> int:
        """Scoring quarter ``qidx``: townships of the quarter packed into chunks, household → chunk
        of its township in the quarter. Returns the quarter's household count."""
        import pyarrow as pa
        import pyarrow.dataset as pds

        ids, key = self._scan(pds.field("quarter_idx") == qidx)
        bins, self.townships = pack_townships(key, self.n)
        self.router = QuarterRouter(ids, np.zeros(0, dtype=np.int64), pa.array(list(bins), type=pa.string()),
                                    np.fromiter(bins.values(), dtype=np.int64, count=len(bins)))
        self.router.bucket = self.router.by_key(key)
        self.wanted = {"households": (-(2**31), qidx), "persons": (qidx - self.PERSON_QUARTERS + 1, qidx),
                       "events": (qidx - event_window, qidx)}
        return len(ids)

    def index_all(self) -> int:
        """Training: townships of every quarter packed into chunks (by household-quarter rows),
        household → every chunk of its townships. Returns the household-quarter count."""
        import pyarrow as pa
        import pyarrow.compute as pc

        ids, key = self._scan()
        bins, self.townships = pack_townships(key, self.n)
        chunk = np.fromiter((bins[k] for k in key.to_pylist()), dtype=np.int64, count=len(key)) if len(key) else \
            np.zeros(0, dtype=np.int64)
        de = pc.dictionary_encode(ids)
        hid = de.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        pairs = np.unique(hid * self.n + chunk)  # distinct (household, chunk), household-major
        h, c = pairs // self.n, pairs % self.n
        first = np.ones(len(h), dtype=bool)
        first[1:] = h[1:] != h[:-1]
        self.router = HouseholdRouter(de.dictionary.cast(pa.string()), c[first], h[~first], c[~first])
        big = 2**31 - 1
        self.wanted = {t: (-big, big) for t in TABLES}
        return len(ids)

    def tasks(self) -> list[tuple]:
        """(table, part, path, row groups, first quarter, last quarter) per task, in table order."""
        import pyarrow.parquet as pq

        out = []
        for table in TABLES:
            path = self.src / f"{table}.parquet"
            if not path.exists():
                continue
            md = pq.ParquetFile(path).metadata
            check_types(path, md.schema.to_arrow_schema())
            col = md.schema.to_arrow_schema().get_field_index("quarter_idx")
            lo, hi = self.wanted[table]
            groups = []
            for g in range(md.num_row_groups):
                st = md.row_group(g).column(col).statistics
                if st is not None and st.has_min_max and (st.max < lo or st.min > hi):
                    continue  # no row of the wanted quarters
                groups.append(g)
            for i in range(0, len(groups), self.groups_per_task):
                out.append((table, len(out), str(path.resolve()), groups[i:i + self.groups_per_task], lo, hi))
        return out

    def add(self, rows: dict[str, np.ndarray]) -> None:
        for t, r in rows.items():
            self.rows[t] += r

    def run(self, executor=None) -> None:
        """Every routing task (on ``executor``, fangpin.cluster; default here)."""
        from fangpin.cluster import Executor

        ex = executor or Executor()
        router = ex.share(self.router)
        for rows in ex.map_unordered(partition_part, self.tasks(), router, str(self.scratch.resolve()), self.n):
            self.add(rows)


def chunk_frames(scratch: Path, k: int, lines: dict[int, float]):
    """The canonical frames of chunk ``k`` (pandas dtypes as pd.read_parquet gives them; parts
    concatenated in task order), None when the chunk has no household rows."""
    from models.features import Frames

    def read(table: str) -> pd.DataFrame | None:
        parts = sorted(Path(scratch).glob(f"{table}_{k:04d}_*.arrow"))
        if not parts:
            return None
        frames = [pd.read_feather(p) for p in parts]
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    hh = read("households")
    if hh is None:
        return None
    persons = read("persons")
    if persons is None:
        persons = pd.DataFrame(columns=["household_id", "quarter", "quarter_idx", "relation", "health",
                                        "labor_skill", "age"])
    return Frames(households=hh, persons=persons, events=read("events"), lines=lines)


def drop_chunk(scratch: Path, k: int) -> None:
    """Remove chunk ``k``'s part files once its task has written what it made of them: the
    scratch directory then never holds a whole quarter's rows twice (a 5M-household province:
    ~20 GB of part files)."""
    for table in TABLES:
        for p in Path(scratch).glob(f"{table}_{k:04d}_*.arrow"):
            p.unlink(missing_ok=True)


def own_rows(df: pd.DataFrame, places: list[tuple[str, str]]) -> np.ndarray:
    """Rows of ``df`` (county, township columns) whose own township is one of ``places``."""
    key = df["county"].astype("string").fillna("") + "/" + df["township"].astype("string").fillna("")
    return key.isin([f"{c}/{t}" for c, t in places]).to_numpy(dtype=bool)
