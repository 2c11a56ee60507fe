"""`fangpin score`: the quarterly batch — every in-scope household of a quarter scored with
``@champion``, warnings explained, written to the store, a Parquet file and township workbooks.

Flow (memory bounded by the chunk size, not by the county):

1. **Partition.** One streaming pass over the canonical tables (pyarrow dataset scans with the
   quarter filter pushed down, a few row groups in flight) routes every row a quarter's features
   need into per-chunk Arrow IPC (Feather) files under a scratch directory: household snapshots up
   to the quarter (income history), person rows of the quarter and the one before (changes since
   the last snapshot), department events of the last ``max(4, severe_event_quarters) + 1``
   quarters. A chunk is a set of WHOLE townships (packed by size; ``warnings.chunk_households`` per
   chunk), so a household's history is in its chunk and everything models.features computes over
   a population (village / township disaster shares, the township's identification rate) and
   per-township visit capacities (``levels.mode: capacity``) come out exactly as when the whole
   county is scored at once (tests/data/test_score.py checks it). Memory: one batch of rows plus a
   household-id → chunk map of the quarter (one id and one integer per household).
2. **Chunks**, in ``warnings.score_workers`` processes (each holds one chunk at a time): read the
   chunk, ``RiskModel.score`` (features, booster, calibration, rules, levels) without
   explanations; then TreeSHAP (``pred_contrib``) and reasons (models.explain) ONLY for the
   in-scope households with a warning, additivity checked on every explained row; the warnings as
   an Arrow table (head-of-household name and masked ID from persons, measures from
   models.measures) checked in bulk with the WarningRecord rules (fangpin.warnings.validate_table);
   the chunk's warnings and every scored household's levels go to Parquet files, and the
   workbooks of the chunk's townships (fangpin.excel) to a scratch folder.
3. **Store**, in the main process while the chunks are scored: ``Store.write_quarter_tables``
   inserts each finished chunk's warnings inside ONE transaction (idempotent, atomic: a failed or
   killed run leaves the store as it was), committed after the last chunk.
4. **Publish** after the commit: the chunk files are concatenated (in chunk order) into the
   Parquet outputs and the workbooks moved into place (atomic per file).

Outputs: ``<paths.warnings_dir>/warnings_<Q>.parquet`` (one row per warning, nested rule_hits /
reasons / measures), ``<paths.warnings_dir>/scores_<Q>.parquet`` (every in-scope household:
probability, levels, rule ids — for analysts and audits), ``<warnings.excel_dir>/<县>/
预警清单_<乡镇>_<Q>.xlsx``, and the store.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from fangpin.config import Params
from fangpin.errors import UserError

log = logging.getLogger(__name__)

TABLES = ("households", "persons", "events")


@dataclass
class ScoreResult:
    quarter: str
    model_version: str
    households: int = 0  # in-scope households scored
    warnings: int = 0
    by_level: dict = field(default_factory=dict)
    rule_warnings: int = 0  # warnings with at least one rule hit
    explained: int = 0
    chunks: int = 0
    store: dict = field(default_factory=dict)
    warnings_parquet: str = ""
    scores_parquet: str = ""
    workbooks: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    chunk_peak_rss_mib: float = 0.0  # largest peak RSS of a process that scored chunks (ru_maxrss)
    tasks: int = 0  # 保障缺口 tasks routed to departments
    tasks_by_department: dict = field(default_factory=dict)
    townships: list = field(default_factory=list)  # per township: cut-offs' counts, shortfall (models.levels)
    report: dict = field(default_factory=dict)  # the score report (levels, workload, tasks): score_report_<Q>.json
    report_path: str = ""


# ----------------------------------------------------------------------------------------------
# reading the canonical tables in pieces


def _dataset(d: Path, table: str):
    import pyarrow.dataset as pds

    p = Path(d) / f"{table}.parquet"
    return pds.dataset(str(p), format="parquet") if p.exists() else None


def latest_quarter(ingested_dir: Path) -> str:
    """The latest quarter present in households.parquet."""
    import pyarrow.compute as pc

    from fangpin.quarters import from_index

    ds = _dataset(ingested_dir, "households")
    if ds is None:
        from fangpin.errors import no_ingest_output

        raise no_ingest_output(ingested_dir)  # a FileNotFoundError
    col = ds.to_table(columns=["quarter_idx"]).column("quarter_idx")
    if len(col) == 0:
        from fangpin.errors import no_ingest_output

        raise no_ingest_output(ingested_dir)
    return from_index(int(pc.max(col).as_py()))



class _Router:
    """Where a row goes: household id → chunk (the household's township in the scored quarter)
    and township → chunk. Picklable for worker processes (ids travel as an Arrow array; the hash
    index is built where it is used)."""

    def __init__(self, ids, bucket: np.ndarray, keys, key_bin: np.ndarray):
        self.ids, self.bucket, self.keys, self.key_bin = ids, bucket, keys, key_bin
        self._index: pd.Index | None = None

    def __getstate__(self):
        return {**self.__dict__, "_index": None}

    @staticmethod
    def key(county, township):
        """"county/township" text per row (null → empty)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        def text(a):
            return pc.fill_null(pc.cast(a, pa.string()), "")

        return pc.binary_join_element_wise(text(county), text(township), "/")

    def by_key(self, key) -> np.ndarray:
        import pyarrow.compute as pc

        if not len(self.key_bin):
            return np.full(len(key), -1, dtype=np.int64)
        pos = pc.fill_null(pc.index_in(key, value_set=self.keys), -1).to_numpy(zero_copy_only=False)
        pos = pos.astype(np.int64)
        return np.where(pos >= 0, self.key_bin[np.maximum(pos, 0)], -1)

    def by_id(self, hid) -> np.ndarray:
        if self._index is None:  # object-dtype index: hashing Python strings beats Arrow-backed strings here
            self._index = pd.Index(self.ids.to_numpy(zero_copy_only=False), dtype=object)
        import pyarrow as pa
        import pyarrow.compute as pc

        # look up each distinct id once (a household's person rows are many)
        de = pc.dictionary_encode(hid.combine_chunks() if isinstance(hid, pa.ChunkedArray) else hid)
        dpos = self._index.get_indexer(pd.Index(de.dictionary.to_numpy(zero_copy_only=False), dtype=object))
        dbin = np.where(dpos >= 0, self.bucket[np.maximum(dpos, 0)], -1)
        idx = pc.fill_null(de.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        return np.where(idx >= 0, dbin[np.maximum(idx, 0)], -1)


def _partition_part(task: tuple, router: _Router, scratch: Path, n: int) -> dict[str, np.ndarray]:
    """Route the rows of some row groups of one table (``task``: table, part number, Parquet path,
    row-group numbers, quarter range) into ``<table>_<chunk>_<part>.arrow`` files, one row group at
    a time. Returns the rows written per chunk."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table, part, path, groups, qlo, qhi = task
    pf = pq.ParquetFile(path)
    rows_k = np.zeros(n, dtype=np.int64)
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    schema = pf.schema_arrow
    try:
        for g in groups:
            b = pf.read_row_group(g)
            q = b.column("quarter_idx")
            keep = pc.and_(pc.greater_equal(q, qlo), pc.less_equal(q, qhi))
            if not pc.all(keep).as_py():
                b = b.filter(keep)
            if b.num_rows == 0:
                continue
            by_id = router.by_id(b.column("household_id"))
            if table == "households":
                own = router.by_key(router.key(b.column("county"), b.column("township")))
                mine = np.flatnonzero(own >= 0)
                extra = np.flatnonzero((by_id >= 0) & (by_id != own))
                rows = np.concatenate([mine, extra])
                bucket = np.concatenate([own[mine], by_id[extra]])
            else:
                rows = np.flatnonzero(by_id >= 0)
                bucket = by_id[rows]
            order = np.argsort(bucket, kind="stable")
            sorted_rows = rows[order]
            starts = np.searchsorted(bucket[order], np.arange(n + 1))
            for k in np.flatnonzero(np.diff(starts)).tolist():
                lo, hi = int(starts[k]), int(starts[k + 1])
                w = writers.get(k)
                if w is None:
                    w = writers[k] = pa.ipc.new_file(str(Path(scratch) / f"{table}_{k:04d}_{part:04d}.arrow"), schema)
                # one take per chunk: its row numbers ascend, which gathers ~3x faster than one take
                # of the whole batch in chunk order
                for rb in b.take(pa.array(sorted_rows[lo:hi], type=pa.int64())).to_batches():
                    w.write_batch(rb)
                rows_k[k] += hi - lo
    finally:
        for w in writers.values():
            w.close()
    return {table: rows_k}


class StaleTables(UserError, ValueError):
    """An ingested table without the canonical column types: ingest it again."""


def _check_types(path: Path, schema) -> None:
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


class _Partitioner:
    """Route rows of the canonical tables into per-chunk Arrow IPC files (see module doc).

    A chunk is a set of whole townships (packed by size into ``n`` chunks): the feature module's
    population context (village / township disaster shares, the township's identification rate)
    is then computed by models.features itself, exactly as for the whole county. Household rows go
    to the chunk of their own township and, when it differs (a household that moved), also to the
    chunk of its township in the scored quarter, so its history is complete; person and event rows
    follow their household's township in the scored quarter (a household id → chunk map of the
    quarter: one id and one integer per household).

    The pass is split into tasks of a few consecutive row groups (row groups whose quarter_idx
    statistics are outside the wanted quarters are skipped); each task writes its own part file
    per chunk, and a chunk's parts are read back in task order, so the rows keep the order of the
    source tables however the tasks are run (in worker processes or here, :meth:`run`).
    """

    PERSON_QUARTERS = 2  # the scored quarter and the one before (changes since the last snapshot)

    def __init__(self, src: Path, scratch: Path, qidx: int, n: int, event_window: int, groups_per_task: int = 2):
        self.src, self.scratch, self.q, self.n = Path(src), Path(scratch), qidx, n
        self.event_window = event_window
        self.groups_per_task = groups_per_task
        self.counties: set[str] = set()
        self.rows = {t: np.zeros(n, dtype=np.int64) for t in TABLES}
        self.townships: list[list[tuple[str, str]]] = [[] for _ in range(n)]  # (county, township) per chunk
        self.router: _Router | None = None

    def index_quarter(self) -> int:
        """Build the household → chunk map of the scored quarter (townships packed into ``n``
        chunks of similar size, largest first); returns its household count."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.dataset as pds

        hh = _dataset(self.src, "households")
        ids, keys = [], []
        for b in hh.to_batches(columns=["household_id", "county", "township"], filter=pds.field("quarter_idx") == self.q,
                               batch_readahead=1, fragment_readahead=1):
            if b.num_rows:
                ids.append(b.column(0).cast(pa.string()))
                keys.append(_Router.key(b.column(1), b.column(2)))
                self.counties.update(x for x in pc.unique(b.column(1)).to_pylist() if x is not None)
        key = pa.chunked_array(keys, type=pa.string()).combine_chunks() if keys else pa.array([], pa.string())
        vc = pc.value_counts(key)
        names, sizes = vc.field("values").to_pylist(), vc.field("counts").to_numpy()
        load = np.zeros(self.n, dtype=np.int64)
        bins: dict[str, int] = {}
        for tw, size in sorted(zip(names, sizes.tolist(), strict=True), key=lambda kv: (-kv[1], kv[0])):
            k = int(np.argmin(load))
            bins[tw] = k
            load[k] += size
            county, _, township = tw.partition("/")
            self.townships[k].append((county, township))
        ids_arr = pa.chunked_array(ids, type=pa.string()).combine_chunks() if ids else pa.array([], pa.string())
        self.router = _Router(ids_arr, np.zeros(0, dtype=np.int64), pa.array(list(bins), type=pa.string()),
                              np.fromiter(bins.values(), dtype=np.int64, count=len(bins)))
        self.router.bucket = self.router.by_key(key)
        return len(ids_arr)

    def tasks(self) -> list[tuple]:
        """(table, part, path, row groups, first quarter, last quarter) per task, in table order."""
        import pyarrow.parquet as pq

        wanted = {"households": (-(2**31), self.q), "persons": (self.q - self.PERSON_QUARTERS + 1, self.q),
                  "events": (self.q - self.event_window, self.q)}
        out = []
        for table in TABLES:
            path = self.src / f"{table}.parquet"
            if not path.exists():
                continue
            md = pq.ParquetFile(path).metadata
            _check_types(path, md.schema.to_arrow_schema())
            col = md.schema.to_arrow_schema().get_field_index("quarter_idx")
            lo, hi = wanted[table]
            groups = []
            for g in range(md.num_row_groups):
                st = md.row_group(g).column(col).statistics
                if st is not None and st.has_min_max and (st.max < lo or st.min > hi):
                    continue  # no row of the wanted quarters
                groups.append(g)
            for i in range(0, len(groups), self.groups_per_task):
                out.append((table, len(out), str(path), groups[i:i + self.groups_per_task], lo, hi))
        return out

    def add(self, rows: dict[str, np.ndarray]) -> None:
        for t, r in rows.items():
            self.rows[t] += r

    def run(self) -> None:
        """The whole pass in this process."""
        if self.router is None:
            self.index_quarter()
        for task in self.tasks():
            self.add(_partition_part(task, self.router, self.scratch, self.n))

    def frames(self, k: int, lines: dict[int, float]):
        return chunk_frames(self.scratch, k, lines)


def chunk_frames(scratch: Path, k: int, lines: dict[int, float]):
    """The canonical frames of chunk ``k`` (pandas dtypes as pd.read_parquet gives them; parts
    concatenated in task order)."""
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


# ----------------------------------------------------------------------------------------------
# one chunk → warning records


def _heads(persons: pd.DataFrame, qidx: int) -> pd.DataFrame:
    """Head-of-household name and masked ID per household (户主 row, else the first member)."""
    p = persons[persons["quarter_idx"] == qidx]
    cols = [c for c in ("household_id", "relation", "name", "id_masked") if c in p.columns]
    p = p[cols].copy()
    if "relation" in p.columns:
        p["_not_head"] = (p["relation"] != "户主").to_numpy(dtype=bool, na_value=True)
        p = p.sort_values(["household_id", "_not_head"], kind="stable")
    out = p.drop_duplicates("household_id", keep="first").set_index("household_id")
    for c in ("name", "id_masked"):
        if c not in out.columns:
            out[c] = None
    return out[["name", "id_masked"]]


def explain_chunk(model, params: Params, scored: pd.DataFrame, X: np.ndarray, persons: pd.DataFrame,
                  qidx: int, created_at: datetime, table=None):
    """Warnings of the in-scope warned rows of one scored chunk as an Arrow table of
    fangpin.warnings.record_schema, checked with validate_table. Returns (table, explained)."""
    import pyarrow as pa

    from fangpin.warnings import (
        STATUS_OPEN,
        level_deadline,
        local_date,
        record_schema,
        validate_table,
        warning_id,
    )
    from models.explain import explain_warned
    from models.measures import table_for

    schema = record_schema()
    table = table or table_for(params)
    from models.levels import floored_hits

    warn = np.flatnonzero((scored["warning"] & scored["in_scope"]).to_numpy(dtype=bool))
    if not len(warn):
        return schema.empty_table(), 0
    hits_col = scored["rule_hits"].to_numpy()[warn]
    # rule hits as a warning shows them: the rules with a level floor, labelled with it (the others
    # are tasks), the four fields of a hit
    hits = [[{k: h[k] for k in ("rule_id", "level", "text", "threshold")} for h in floored_hits(hs, model.levels)]
            for hs in hits_col]
    county = scored["county"].to_numpy()[warn]
    reasons, measures, figs = explain_warned(model, params, X[warn], scored["raw_score"].to_numpy()[warn], hits,
                                             table, county=county)
    heads = _heads(persons, qidx)
    hid = scored["household_id"].to_numpy()[warn].astype(str)
    names = heads["name"].reindex(hid)
    masked = heads["id_masked"].reindex(hid)
    version = str(model.model_version)
    w = params.warnings
    # what WarningRecord.create sets: the id per household, the deadline of each level
    start = local_date(created_at)
    level = scored["combined_level"].to_numpy()[warn]
    due = {lvl: level_deadline(lvl, start, w).isoformat() for lvl in set(level)}
    quarter = scored["quarter"].to_numpy()[warn].astype(str)
    n = len(warn)
    ts = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at.astimezone(UTC)

    def text(values) -> pa.Array:
        s = pd.Series(values, dtype=object)
        return pa.array(s.where(s.notna(), None).tolist(), pa.string())

    out = pa.table({
        "id": pa.array([warning_id(q, h, version) for q, h in zip(quarter, hid, strict=True)], pa.string()),
        "quarter": pa.array(quarter, pa.string()),
        "county": text(scored["county"].to_numpy()[warn]),
        "township": text(scored["township"].to_numpy()[warn]),
        "village": text(scored["village"].to_numpy()[warn]),
        "household_id": pa.array(hid, pa.string()),
        "head_name": text(names.to_numpy()),
        "id_masked": text(masked.to_numpy()),
        "level": text(scored["combined_level"].to_numpy()[warn]),
        "probability": pa.array(np.clip(scored["probability"].to_numpy(dtype=np.float64)[warn], 0.0, 1.0)),
        "rule_hits": pa.array(hits, schema.field("rule_hits").type),
        "reasons": pa.array(reasons, schema.field("reasons").type),
        "measures": pa.array(measures, schema.field("measures").type),
        "model_version": pa.array([version] * n, pa.string()),
        "ruleset_version": pa.array([str(model.ruleset_version)] * n, pa.string()),
        "created_at": pa.array([ts.isoformat().replace("+00:00", "Z")] * n, pa.string()),
        "deadline": pa.array([due[lvl] for lvl in level], pa.string()),
        "status": pa.array([STATUS_OPEN] * n, pa.string()),
        "status_reason": pa.nulls(n, pa.string()),
        "base_rate": pa.array([f["base_rate"] for f in figs], pa.float64()),
        "other_pp": pa.array([f["other_pp"] for f in figs], pa.float64()),
        "reference_period": pa.array([f["reference_period"] for f in figs], pa.string()),
        "deferred": pa.array(scored["deferred"].to_numpy(dtype=bool)[warn], pa.bool_()),
    }, schema=schema)
    validate_table(out)  # the WarningRecord rules on every row (a warning always has a level, etc.)
    return out, n


def chunk_tasks(model, params: Params, scored: pd.DataFrame, persons: pd.DataFrame, qidx: int,
                created_at: datetime):
    """The 保障缺口 tasks (fangpin.tasks) of the in-scope rows of one scored chunk whose rule hits
    have a route (``params.tasks.routes``), as an Arrow table of fangpin.tasks.task_schema."""
    from fangpin.tasks import task_table

    routes = params.tasks.routes
    hits_col = scored["rule_hits"].to_numpy()
    ins = scored["in_scope"].to_numpy(dtype=bool)
    idx = [i for i in np.flatnonzero(ins).tolist() if any(h["rule_id"] in routes for h in (hits_col[i] or ()))]
    heads = _heads(persons, qidx)
    rows = []
    cols = {c: scored[c].to_numpy() for c in ("quarter", "county", "township", "village", "household_id")}
    for i in idx:
        hid = str(cols["household_id"][i])
        head = heads.loc[hid] if hid in heads.index else None
        rows.append({"quarter": str(cols["quarter"][i]), "county": cols["county"][i], "township": cols["township"][i],
                     "village": cols["village"][i], "household_id": hid,
                     "head_name": None if head is None or pd.isna(head["name"]) else head["name"],
                     "id_masked": None if head is None or pd.isna(head["id_masked"]) else head["id_masked"],
                     "ruleset_version": str(model.ruleset_version), "hits": hits_col[i]})
    return task_table(rows, params, created_at)


def score_report(res: ScoreResult, params: Params, groups: list[dict]) -> dict:
    """The score report of the scored quarter: levels (households, share of the in-scope
    households), workload (warned share, the largest township visit list, capacity, shortfall)
    and tasks by department; the same keys as the evaluation's metrics.json minus precision."""
    n = max(res.households, 1)
    levels = {lvl: {"households": int(res.by_level.get(lvl, 0)), "share": res.by_level.get(lvl, 0) / n}
              for lvl in ("红", "黄", "蓝")}
    short = [g for g in groups if g["shortfall"] > 0]
    return {
        "quarter": res.quarter, "model_version": res.model_version, "households": res.households,
        "levels": levels,
        "workload": {"warned_share": res.warnings / n,
                     "visits_per_township_max": max((int(g["n_red"]) for g in groups), default=0),
                     "capacity_per_township": params.levels.capacity_per_township,
                     "shortfall": int(sum(g["shortfall"] for g in groups)),
                     "townships_over_capacity": len(short), "townships": len(groups)},
        "tasks": {"total": res.tasks, "by_department": res.tasks_by_department},
        "townships": [{k: g[k] for k in ("county", "township", "n_in_scope", "n_red_wanted", "n_red", "n_yellow",
                                          "n_blue", "shortfall", "capacity")} for g in groups],
    }


def _scores_table(scored: pd.DataFrame):
    """The in-scope rows of a scored chunk in the columns of :func:`_scores_schema` (rule hits as
    their rule ids)."""
    import pyarrow as pa

    schema = _scores_schema()
    cols = [n for n in schema.names if n != "rule_ids"]
    s = scored.loc[scored["in_scope"].to_numpy(dtype=bool), cols + ["rule_hits"]]
    df = s[cols].copy()
    for c in ("model_level", "rule_level", "combined_level"):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    df["rule_ids"] = [[h["rule_id"] for h in (hs or [])] for hs in s["rule_hits"]]
    return pa.Table.from_pandas(df, preserve_index=False).cast(schema)


def iter_records(path: Path, **filters) -> Iterator:
    """WarningRecords of a warnings Parquet file (optionally filtered by column equality)."""
    import pyarrow.dataset as pds

    from fangpin.warnings import WarningRecord

    flt = None
    for k, v in filters.items():
        e = pds.field(k) == v
        flt = e if flt is None else flt & e
    for b in pds.dataset(str(path), format="parquet").to_batches(filter=flt, batch_size=20_000):
        for row in b.to_pylist():
            yield WarningRecord.model_validate(row)


# ----------------------------------------------------------------------------------------------
# one chunk, in a worker process (or in-process)

_JOB: dict = {}  # what every chunk of a run needs; set once per worker process


def _init_job(job: dict, threads: int | None) -> None:
    if threads:
        job["model"].meta["num_threads"] = threads  # the pool is the parallelism: one thread per worker
    _JOB.clear()
    _JOB.update(job)


WORKER_MODULES = ["pipelines.score", "models.pyfunc", "models.explain", "models.measures", "fangpin.excel",
                  "xlsxwriter", "pyarrow.parquet"]


def _worker_context():
    """The multiprocessing context of the chunk workers: a fork server that imports the scoring
    modules once (started now, so the imports run while the partition pass does) and forks each
    worker from there. Workers never fork a process that has run OpenMP (LightGBM), and do not pay
    the imports (MLflow, pandas, LightGBM: seconds) each."""
    import multiprocessing as mp
    from multiprocessing import forkserver

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_MODULES)
    forkserver.ensure_running()
    return ctx


def _scores_schema():
    """The analysts' scores Parquet: one row per in-scope household of the quarter."""
    import pyarrow as pa

    return pa.schema([("household_id", pa.string()), ("quarter", pa.string()), ("county", pa.string()),
                      ("township", pa.string()), ("village", pa.string()), ("probability", pa.float64()),
                      ("model_level", pa.string()), ("rule_level", pa.string()), ("combined_level", pa.string()),
                      ("deferred", pa.bool_()), ("warning", pa.bool_()), ("rule_ids", pa.list_(pa.string()))])


def _steal_partition(pool, tasks: list, n_workers: int, run_here) -> Iterator[dict]:
    """Run partition tasks in ``pool`` and in this process at once: a feeder thread keeps the
    workers busy with tasks from the end of the list while this process, otherwise idle, takes
    them from the front (starting the workers blocks until the fork server has imported the scoring
    modules: this process partitions meanwhile). Yields each task's rows per chunk."""
    import threading
    from concurrent.futures import FIRST_COMPLETED, wait

    lock = threading.Lock()
    span = [0, len(tasks)]  # unclaimed tasks: tasks[span[0]:span[1]]
    results: list[dict] = []
    errors: list[BaseException] = []

    def claim(front: bool):
        with lock:
            if span[0] >= span[1]:
                return None
            if front:
                span[0] += 1
                return tasks[span[0] - 1]
            span[1] -= 1
            return tasks[span[1]]

    def feed() -> None:
        try:
            running: set = set()
            while True:
                while len(running) < n_workers and (t := claim(False)) is not None:
                    running.add(pool.submit(_partition_job, t))
                if not running:
                    return
                done, running = wait(running, return_when=FIRST_COMPLETED)
                results.extend(f.result() for f in done)
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)
            with lock:
                span[0] = span[1]

    feeder = threading.Thread(target=feed, name="partition-feeder", daemon=True)
    feeder.start()
    try:
        while (t := claim(True)) is not None:
            yield run_here(t)
    finally:
        with lock:  # on an error here the feeder submits nothing more
            span[0] = span[1]
        feeder.join()
    if errors:
        raise errors[0]
    yield from results


def _maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _partition_job(task: tuple) -> dict:
    return _partition_part(task, _JOB["router"], _JOB["scratch"], _JOB["n"])


def _run_chunk(k: int) -> dict:
    """Score and explain chunk ``k`` and write warnings_k.parquet, scores_k.parquet and the
    workbooks of its townships (under scratch/excel). Returns counts and seconds."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from fangpin.excel import township_path, write_township_workbook
    from fangpin.tasks import by_department

    j = _JOB
    scratch, model, params, qidx = j["scratch"], j["model"], j["params"], j["qidx"]
    out = {"k": k, "households": 0, "warnings": 0, "explained": 0, "by_level": {}, "rule_warnings": 0,
           "workbooks": [], "rows": 0, "seconds": {}, "tasks": 0, "tasks_by_department": {}, "levels": []}
    t0 = time.perf_counter()
    fr = chunk_frames(scratch, k, j["lines"])
    if fr is None:
        return out
    t1 = time.perf_counter()
    s = model.score_arrays(fr, quarters=[qidx], explain="none")
    scored, X = s.frame(), s.X
    t2 = time.perf_counter()
    table, n_exp = explain_chunk(model, params, scored, X, fr.persons, qidx, j["created"], j["table"])
    tasks = chunk_tasks(model, params, scored, fr.persons, qidx, j["created"])
    t3 = time.perf_counter()
    out["levels"] = [] if s.level_groups is None else s.level_groups.to_dict(orient="records")
    out["tasks"] = tasks.num_rows
    out["tasks_by_department"] = by_department(tasks.to_pylist()) if tasks.num_rows else {}
    out["rows"] = len(scored)
    out["households"] = int(scored["in_scope"].to_numpy(dtype=bool).sum())
    out["explained"], out["warnings"] = n_exp, table.num_rows
    levels = table.column("level").to_pylist()
    out["by_level"] = {lv: levels.count(lv) for lv in set(levels)}
    out["rule_warnings"] = int(np.count_nonzero(pc.list_value_length(table.column("rule_hits")).to_numpy(
        zero_copy_only=False) > 0)) if table.num_rows else 0
    pq.write_table(table, scratch / f"warnings_{k:04d}.parquet")
    pq.write_table(tasks, scratch / f"tasks_{k:04d}.parquet")
    pq.write_table(_scores_table(scored), scratch / f"scores_{k:04d}.parquet")
    del fr, s, scored, X
    t4 = time.perf_counter()
    if j["excel"] and (table.num_rows or tasks.num_rows):
        places = sorted(set(zip(table.column("county").to_pylist(), table.column("township").to_pylist(),
                                strict=True)) | set(zip(tasks.column("county").to_pylist(),
                                                        tasks.column("township").to_pylist(), strict=True)))
        load = {(g["county"], g["township"]): g for g in out["levels"]}
        for county, township in places:
            def mine(t, county=county, township=township):
                return t.filter(pc.and_(pc.equal(t.column("county"), county), pc.equal(t.column("township"), township)))

            path = township_path(scratch / "excel", county, township, j["quarter"])
            write_township_workbook(mine(table), path, today=j["today"], tasks=mine(tasks), township=township,
                                    quarter=j["quarter"], county=county, workload=load.get((county, township)),
                                    params=params)
            out["workbooks"].append(str(path.relative_to(scratch / "excel")))
    t5 = time.perf_counter()
    out["peak_rss_mib"] = _maxrss_mib()
    out["seconds"] = {"read": t1 - t0, "score": t2 - t1, "explain": t3 - t2, "write": t4 - t3, "excel": t5 - t4}
    return out


def _concat(parts: list[Path], dest: Path, schema) -> None:
    """Chunk Parquet files → one file (a row group per chunk), streamed one chunk at a time."""
    import pyarrow.parquet as pq

    with pq.ParquetWriter(str(dest), schema) as w:
        for p in parts:
            if p.exists():
                w.write_table(pq.read_table(p).cast(schema))


# ----------------------------------------------------------------------------------------------
# the stage


def score_quarter(
    params: Params,
    *,
    quarter: str | None = None,
    ingested_dir: Path | None = None,
    model=None,
    store=None,
    root: Path | None = None,
    show_progress: bool = True,
    write_excel: bool = True,
    chunk_households: int | None = None,
    workers: int | None = None,
) -> ScoreResult:
    """Score one quarter (default: the latest in the data) and publish its warnings (module doc).

    ``params`` should be rooted (pipelines.common.rooted); ``root`` resolves a relative
    ``warnings.excel_dir``. ``model`` defaults to ``@champion``; ``store`` to Store.from_params;
    ``workers`` to ``warnings.score_workers`` (1: every chunk in this process).

    ``seconds``: ``partition``, ``chunks`` (wall: chunks scored in the workers while the main
    process inserts finished ones into the store), ``store`` (wall from the last chunk to the
    commit), ``publish`` (Parquet outputs and workbooks into place), ``total``; and per-chunk
    times summed over chunks (worker time, not wall): ``score`` (features, booster, calibration,
    rules, levels), ``explain`` (TreeSHAP, reasons, measures, the checked warnings table),
    ``excel`` (workbooks), ``chunk_read`` and ``chunk_write`` (chunk input and Parquet output).
    """
    from fangpin import quarters as fq
    from fangpin.tasks import task_schema
    from fangpin.warnings import local_date, record_schema
    from models.levels import check_coverage
    from models.measures import table_for
    from models.rules import rule_ids
    from pipelines.common import write_json

    t_all = time.perf_counter()
    secs: dict[str, float] = {}
    src = Path(ingested_dir or params.paths.ingested_dir)
    if model is None:
        from models.pyfunc import load_champion

        model = load_champion(params, root)
    if model.model_version is None:
        raise ValueError("the model has no registry version (load it with models.pyfunc.load_champion)")
    check_coverage(model.levels, params.tasks.routes, rule_ids())  # every rule hit a warning or a task
    quarter = fq.fmt(*fq.parse(quarter)) if quarter else latest_quarter(src)
    qidx = fq.to_index(quarter)
    lines = {**model.lines, **{int(k): float(v) for k, v in params.lines.items()}}
    lj = src / "lines.json"
    if lj.exists():
        import json

        lines.update({int(k): float(v) for k, v in json.loads(lj.read_text(encoding="utf-8")).items()})
    hh_ds = _dataset(src, "households")
    if hh_ds is None:
        from fangpin.errors import no_ingest_output

        raise no_ingest_output(src)  # a FileNotFoundError
    import pyarrow.dataset as pds

    n_q = hh_ds.count_rows(filter=pds.field("quarter_idx") == qidx)
    if n_q == 0:
        from fangpin.errors import NotEnoughData

        raise NotEnoughData(f"台账中没有 {quarter} 季度的户，请用 --quarter 选择台账中已有的季度，或先导入该季度的台账。",
                            f"The ledger has no households in {quarter}: choose a quarter it holds with --quarter, or "
                            f"ingest that quarter's export first.")  # a ValueError
    chunk = chunk_households or params.warnings.chunk_households
    n_chunks = max(1, math.ceil(n_q / chunk))
    n_workers = max(1, min(workers or params.warnings.score_workers, n_chunks))
    out_dir = Path(params.paths.warnings_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    excel_dir = Path(params.warnings.excel_dir)
    if not excel_dir.is_absolute():
        excel_dir = Path(root or ".").resolve() / excel_dir
    res = ScoreResult(quarter=quarter, model_version=str(model.model_version), chunks=n_chunks)
    created = datetime.now(UTC)

    prog = None
    if show_progress:
        from fangpin.progress import progress

        prog = progress()
        prog.start()
    scratch = Path(tempfile.mkdtemp(prefix=f".score_{quarter}_", dir=out_dir))
    pool = None
    ctx = _worker_context() if n_workers > 1 else None
    try:
        t0 = time.perf_counter()
        part = _Partitioner(src, scratch, qidx, n_chunks, event_window=max(4, model.ruleset.severe_event_quarters))
        part.index_quarter()
        tasks = part.tasks()
        task = prog.add_task(f"分区 {quarter} (partition)", total=len(tasks)) if prog else None
        if store is None:
            from fangpin.store import Store

            store = Store.from_params(params)
        job = dict(scratch=scratch, model=model, params=params, qidx=qidx, quarter=quarter, lines=lines,
                   created=created, today=local_date(created), table=table_for(params), excel=write_excel,
                   router=part.router, n=n_chunks)
        if n_workers > 1:
            from concurrent.futures import ProcessPoolExecutor, as_completed

            pool = ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_job, initargs=(job, 1))
            for rows in _steal_partition(pool, tasks, n_workers, lambda t: _partition_part(t, part.router, scratch,
                                                                                        n_chunks)):
                part.add(rows)
                if prog:
                    prog.advance(task)
        else:
            _init_job(job, None)
            for t in tasks:
                part.add(_partition_job(t))
                if prog:
                    prog.advance(task)
        secs["partition"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if pool is not None:
            done = (f.result() for f in as_completed([pool.submit(_run_chunk, k) for k in range(n_chunks)]))
        else:
            done = (_run_chunk(k) for k in range(n_chunks))
        task = prog.add_task(f"评分 {quarter} (score)", total=n_q) if prog else None
        chunk_secs: dict[str, float] = {}
        last_chunk = [t0]

        def finished_tables():
            """Each chunk's warnings as it finishes (the store inserts them meanwhile)."""
            import pyarrow.parquet as pq

            for r in done:
                res.households += r["households"]
                res.warnings += r["warnings"]
                res.explained += r["explained"]
                res.rule_warnings += r["rule_warnings"]
                res.workbooks += r["workbooks"]
                res.chunk_peak_rss_mib = max(res.chunk_peak_rss_mib, r.get("peak_rss_mib", 0.0))
                for lv, c in r["by_level"].items():
                    res.by_level[lv] = res.by_level.get(lv, 0) + c
                res.tasks += r["tasks"]
                for d, c in r["tasks_by_department"].items():
                    res.tasks_by_department[d] = res.tasks_by_department.get(d, 0) + c
                res.townships += r["levels"]
                for k, v in r["seconds"].items():
                    chunk_secs[k] = chunk_secs.get(k, 0.0) + v
                if prog:
                    prog.advance(task, r["rows"])
                last_chunk[0] = time.perf_counter()
                p = scratch / f"warnings_{r['k']:04d}.parquet"
                if p.exists():
                    yield pq.read_table(p)

        def task_tables():
            import pyarrow.parquet as pq

            for k in range(n_chunks):
                p = scratch / f"tasks_{k:04d}.parquet"
                if p.exists():
                    yield pq.read_table(p)

        wr = store.write_quarter_tables(finished_tables(), quarter, res.model_version,
                                        counties=sorted(part.counties), tasks=task_tables,
                                        thresholds=lambda: res.townships)
        t_commit = time.perf_counter()
        res.store = {"run_id": wr.run_id, "n_warnings": wr.n_warnings, "inserted": wr.inserted,
                     "updated": wr.updated, "removed": wr.removed}
        secs["chunks"] = last_chunk[0] - t0
        secs["store"] = t_commit - last_chunk[0]
        for k in ("score", "explain", "excel"):
            secs[k] = chunk_secs.get(k, 0.0)
        secs["chunk_read"], secs["chunk_write"] = chunk_secs.get("read", 0.0), chunk_secs.get("write", 0.0)

        t0 = time.perf_counter()
        final_w, final_s = out_dir / f"warnings_{quarter}.parquet", out_dir / f"scores_{quarter}.parquet"
        final_t = out_dir / f"tasks_{quarter}.parquet"
        tmp_w, tmp_s, tmp_t = scratch / "warnings.parquet", scratch / "scores.parquet", scratch / "tasks.parquet"
        _concat([scratch / f"warnings_{k:04d}.parquet" for k in range(n_chunks)], tmp_w, record_schema())
        _concat([scratch / f"scores_{k:04d}.parquet" for k in range(n_chunks)], tmp_s, _scores_schema())
        _concat([scratch / f"tasks_{k:04d}.parquet" for k in range(n_chunks)], tmp_t, task_schema())
        res.townships.sort(key=lambda g: (g["county"], g["township"]))
        res.report = score_report(res, params, res.townships)
        final_r = out_dir / f"score_report_{quarter}.json"
        tmp_r = scratch / "score_report.json"
        write_json(tmp_r, res.report)
        os.replace(tmp_w, final_w)
        os.replace(tmp_s, final_s)
        os.replace(tmp_t, final_t)
        os.replace(tmp_r, final_r)
        res.report_path = str(final_r)
        books = []
        for rel in sorted(res.workbooks):
            dest = excel_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(scratch / "excel" / rel, dest)
            books.append(str(dest))
        res.workbooks = books
        res.warnings_parquet, res.scores_parquet = str(final_w), str(final_s)
        secs["publish"] = time.perf_counter() - t0
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if prog:
            prog.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    secs["total"] = time.perf_counter() - t_all
    res.seconds = {k: round(v, 2) for k, v in secs.items()}
    log.info("score %s: %d households, %d warnings (%s) in %.1fs", quarter, res.households, res.warnings,
             res.by_level, secs["total"])
    return res


def score_export(params: Params, ledger: list[Path], events: list[Path] | None, *, quarter: str | None = None,
                 **kw) -> ScoreResult:
    """Score a new export: ingest it into a temporary directory first (fangpin.ingest), then score."""
    from fangpin.ingest import ingest

    with tempfile.TemporaryDirectory(prefix="fangpin_ingest_") as tmp:
        report = ingest(ledger, events or [], tmp, params, show_progress=kw.get("show_progress", True))
        keep = Path(params.paths.warnings_dir) / "export_ingest"
        keep.mkdir(parents=True, exist_ok=True)
        for name in ("ingest_report.json", "quarantine.csv"):  # the findings outlive the temp tables
            if (Path(tmp) / name).exists():
                shutil.copy2(Path(tmp) / name, keep / name)
        if not report.ok:
            from fangpin.errors import ingest_failed

            errs = "; ".join(f"{e.get('file', '?')}: {e.get('reason', e.get('message', e))}" for e in report.errors[:3])
            raise ingest_failed(keep / "ingest_report.json", errs)
        if report.rows_quarantined:
            log.warning("ingest: %d rows quarantined (not scored): see %s", report.rows_quarantined,
                        keep / "quarantine.csv")
        return score_quarter(params, quarter=quarter, ingested_dir=Path(tmp), **kw)
