"""`fangpin score`: the quarterly batch — every in-scope household of a quarter scored with
``@champion``, warnings explained, written to the store, a Parquet file and township workbooks.

A description of the work; fangpin.cluster runs its tasks (worker processes of a Dask cluster,
or this process for a small county). Memory per task is bounded by the chunk size:

1. **Partition** (pipelines.partition): tasks of a few row groups route every row a quarter's
   features need into per-chunk Arrow IPC files under a scratch directory: household snapshots up
   to the quarter (income history), person rows of the quarter and the one before, department
   events of the last ``max(4, severe_event_quarters) + 1`` quarters. A chunk is a set of WHOLE
   townships (``warnings.chunk_households`` per chunk), so the population context of
   models.features and per-township capacities come out exactly as for the whole county
   (tests/data/test_score.py checks it).
2. **Chunks**, one task each (:func:`_run_chunk`): ``RiskModel.predict`` (the model's one scoring
   method: features, booster, calibration, rules, levels, and reasons and measures ONLY for the
   in-scope households with a warning, additivity of their TreeSHAP checked on every explained
   row); the warnings as an Arrow table (head-of-household name and masked ID from persons)
   checked in bulk with the WarningRecord rules (fangpin.warnings.validate_table); the chunk's
   warnings, tasks and every scored household's levels go to Parquet files in the scratch
   directory, and the online history of its households (for ``/v1/score`` and ``/v1/events``)
   to Arrow IPC files.
3. **Workbooks**, one task per township (:func:`_write_workbook`, fangpin.excel), started as soon
   as its chunk is done, into the scratch directory.
4. **Store**, in the calling process while the chunks run: ``Store.write_quarter_tables`` inserts
   each finished chunk's warnings, its 保障缺口 tasks and its households' online history (which
   replaces that of the run's counties: fangpin.store.history.HistoryWrite), inside ONE
   transaction (idempotent, atomic: a failed or killed run leaves the store as it was — the
   quarter, its warnings, tasks and history, appears whole or not at all), committed after the
   last chunk. Then the read-back of the exports (pipelines/readback.py), with the store's
   checkpoint (SQLite) in a thread beside it.
5. **Publish** after the commit: the chunk files are concatenated (in chunk order) into the
   Parquet outputs and the workbooks moved into place (atomic per file).

Outputs: ``<paths.warnings_dir>/warnings_<Q>.parquet`` (one row per warning, nested rule_hits /
reasons / measures), ``<paths.warnings_dir>/scores_<Q>.parquet`` (every in-scope household:
probability, levels, rule ids — for analysts and audits), ``<warnings.excel_dir>/<县>/
预警清单_<乡镇>_<Q>.xlsx``, and the store. The scratch directory is under ``paths.warnings_dir``:
on a cluster of several machines it must be on storage every worker sees.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from fangpin.config import Params
from pipelines.partition import dataset, partition_part

log = logging.getLogger(__name__)


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
    chunk_peak_rss_mib: float = 0.0  # largest peak RSS of a process that ran tasks (ru_maxrss)
    workers: int = 1  # worker processes that ran the tasks (1: this process)
    tasks: int = 0  # 保障缺口 tasks routed to departments
    tasks_by_department: dict = field(default_factory=dict)
    townships: list = field(default_factory=list)  # per township: cut-offs' counts, shortfall (models.levels)
    report: dict = field(default_factory=dict)  # the score report (levels, workload, tasks): score_report_<Q>.json
    report_path: str = ""
    readback: dict = field(default_factory=dict)  # the exports read back (pipelines/readback.py)
    history: dict = field(default_factory=dict)  # online history written (fangpin.store.history)


# ----------------------------------------------------------------------------------------------
# reading the canonical tables in pieces


def latest_quarter(ingested_dir: Path) -> str:
    """The latest quarter present in households.parquet."""
    import pyarrow.compute as pc

    from fangpin.quarters import from_index

    ds = dataset(ingested_dir, "households")
    if ds is None:
        from fangpin.errors import no_ingest_output

        raise no_ingest_output(ingested_dir)  # a FileNotFoundError
    col = ds.to_table(columns=["quarter_idx"]).column("quarter_idx")
    if len(col) == 0:
        from fangpin.errors import no_ingest_output

        raise no_ingest_output(ingested_dir)
    return from_index(int(pc.max(col).as_py()))


# ----------------------------------------------------------------------------------------------
# one chunk → warning records


def _heads(persons: pd.DataFrame, qidx: int) -> pd.DataFrame:
    """Head-of-household name and masked ID per household (fangpin.contract.head_rows)."""
    from fangpin.contract import head_rows

    cols = [c for c in ("household_id", "quarter_idx", "relation", "name", "id_masked") if c in persons.columns]
    mine = (persons["quarter_idx"] == qidx).to_numpy(dtype=bool, na_value=False)
    out = head_rows(persons.loc[mine, cols]).set_index("household_id")  # the columns, then the rows
    for c in ("name", "id_masked"):
        if c not in out.columns:
            out[c] = None
    return out[["name", "id_masked"]]


def warnings_table(model, params: Params, scored: pd.DataFrame, heads: pd.DataFrame, created_at: datetime):
    """Warnings of the in-scope warned rows of one scored chunk (RiskModel.predict with
    ``explain="in_scope"``: reasons, figure summaries and measures on those rows) as an Arrow
    table of fangpin.warnings.record_schema, checked with validate_table. ``heads``:
    :func:`_heads`. Returns (table, explained)."""
    import pyarrow as pa

    from fangpin.warnings import (
        STATUS_OPEN,
        level_deadline,
        local_date,
        record_schema,
        validate_table,
        warning_id,
    )
    from models.levels import floored_hits

    schema = record_schema()

    warn = np.flatnonzero((scored["warning"] & scored["in_scope"]).to_numpy(dtype=bool))
    if not len(warn):
        return schema.empty_table(), 0
    hits_col = scored["rule_hits"].to_numpy()[warn]
    # rule hits as a warning shows them: the rules with a level floor, labelled with it (the others
    # are tasks), the four fields of a hit
    hits = [[{k: h[k] for k in ("rule_id", "level", "text", "threshold")} for h in floored_hits(hs, model.levels)]
            for hs in hits_col]
    reasons = scored["reasons"].to_numpy()[warn].tolist()
    measures = scored["measures"].to_numpy()[warn].tolist()
    figs = scored["summary"].to_numpy()[warn].tolist()
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


def chunk_tasks(model, params: Params, scored: pd.DataFrame, heads: pd.DataFrame, created_at: datetime):
    """The 保障缺口 tasks (fangpin.tasks) of the in-scope rows of one scored chunk whose rule hits
    have a route (``params.tasks.routes``), as an Arrow table of fangpin.tasks.task_schema.
    ``heads``: :func:`_heads` of the chunk."""
    from fangpin.tasks import task_table

    routes = params.tasks.routes
    hits_col = scored["rule_hits"].to_numpy()
    ins = scored["in_scope"].to_numpy(dtype=bool)
    idx = [i for i in np.flatnonzero(ins).tolist() if any(h["rule_id"] in routes for h in (hits_col[i] or ()))]
    cols = {c: scored[c].to_numpy()[idx] for c in ("quarter", "county", "township", "village", "household_id")}
    hids = [str(h) for h in cols["household_id"]]
    head = heads.reindex(hids)  # one lookup for the chunk's tasks (a household without a head: None)
    names, masked = (head[c].astype(object).where(head[c].notna(), None).tolist() for c in ("name", "id_masked"))
    version = str(model.ruleset_version)
    rows = [{"quarter": str(q), "county": c, "township": t, "village": v, "household_id": h, "head_name": n,
             "id_masked": m, "ruleset_version": version, "hits": hits_col[i]}
            for i, q, c, t, v, h, n, m in zip(idx, cols["quarter"], cols["county"], cols["township"], cols["village"],
                                              hids, names, masked, strict=True)]
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
    df["rule_ids"] = [[h["rule_id"] for h in (hs or [])] for hs in s["rule_hits"].tolist()]
    return pa.Table.from_pandas(df, preserve_index=False).cast(schema)


# ----------------------------------------------------------------------------------------------
# the tasks: one chunk, one workbook


def _scores_schema():
    """The analysts' scores Parquet: one row per in-scope household of the quarter."""
    import pyarrow as pa

    return pa.schema([("household_id", pa.string()), ("quarter", pa.string()), ("county", pa.string()),
                      ("township", pa.string()), ("village", pa.string()), ("probability", pa.float64()),
                      ("model_level", pa.string()), ("rule_level", pa.string()), ("combined_level", pa.string()),
                      ("deferred", pa.bool_()), ("warning", pa.bool_()), ("rule_ids", pa.list_(pa.string()))])


def _run_chunk(k: int, job: dict) -> dict:
    """Score and explain chunk ``k`` and write warnings_k, tasks_k and scores_k Parquet files into
    the scratch directory. ``job``: what every chunk of the run shares (model, params, quarter …).
    Returns counts, the chunk's townships with warnings or tasks and their level groups, seconds."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from fangpin.cluster import peak_rss_mib
    from fangpin.tasks import by_department
    from pipelines.partition import chunk_frames, drop_chunk

    scratch, model, params, qidx = Path(job["scratch"]), _job_model(job), job["params"], job["qidx"]
    if job["threads"]:
        model.meta["num_threads"] = job["threads"]  # the cluster is the parallelism: a thread per task
    out = {"k": k, "households": 0, "warnings": 0, "explained": 0, "by_level": {}, "rule_warnings": 0,
           "places": [], "rows": 0, "seconds": {}, "tasks": 0, "tasks_by_department": {}, "levels": []}
    t0 = time.perf_counter()
    fr = chunk_frames(scratch, k, job["lines"])
    if fr is None:
        drop_chunk(scratch, k)
        out["peak_rss_mib"] = peak_rss_mib()
        return out
    t1 = time.perf_counter()
    s = model.predict(fr, quarters=[qidx], explain="in_scope")
    scored = s.frame()
    t2 = time.perf_counter()
    heads = _heads(fr.persons, qidx)
    table, n_exp = warnings_table(model, params, scored, heads, job["created"])
    tasks = chunk_tasks(model, params, scored, heads, job["created"])
    t3 = time.perf_counter()
    if job["history"]:
        _write_history_chunk(model, fr, s, scored, heads, qidx, job, k, scratch / f"history_{k:04d}")
    t_hist = time.perf_counter() - t3
    out["levels"] = [] if s.level_groups is None else s.level_groups.to_dict(orient="records")
    out["tasks"] = tasks.num_rows
    out["tasks_by_department"] = by_department(tasks) if tasks.num_rows else {}
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
    out["places"] = sorted(set(zip(table.column("county").to_pylist(), table.column("township").to_pylist(),
                                   strict=True)) | set(zip(tasks.column("county").to_pylist(),
                                                           tasks.column("township").to_pylist(), strict=True)))
    drop_chunk(scratch, k)  # its outputs are written: its part files are not needed again
    t4 = time.perf_counter()
    out["peak_rss_mib"] = peak_rss_mib()
    out["seconds"] = {"read": t1 - t0, "score": t2 - t1, "warnings": t3 - t2, "history": t_hist,
                      "write": t4 - t3 - t_hist}
    return out


_MODELS: dict = {}  # per worker process: the run's model, unpickled once (by its pickle's hash)


def _job_model(job: dict):
    """The run's model. On a cluster it travels pickled, with the directory of its own code
    (models.registry.code_path) put on the worker's ``sys.path`` before it is unpickled."""
    if job.get("model") is not None:
        return job["model"]
    import hashlib
    import pickle
    import sys

    key = hashlib.sha256(job["model_pickle"]).hexdigest()
    if key not in _MODELS:
        if job.get("model_path") and job["model_path"] not in sys.path:
            sys.path.insert(0, job["model_path"])
        _MODELS.clear()
        _MODELS[key] = pickle.loads(job["model_pickle"])
    return _MODELS[key]


def _write_history_chunk(model, fr, s, scored: pd.DataFrame, heads: pd.DataFrame, qidx: int, job: dict,
                         k: int, base: Path) -> None:
    """The online history of chunk ``k``'s households (fangpin.store.history): households (key,
    place, level, block row; in blocks: fangpin.store.history.encode_household_blocks), their
    history blocks and the blocks' schema, the person → household map (in blocks:
    fangpin.store.history.encode_person_blocks) and the place contexts, as Arrow
    IPC files ``<base>_{households,blocks,schemas,persons,places}.feather``
    (uncompressed: the calling process maps them instead of decoding Parquet; they live until the
    chunk's rows are in the store). A person of a household not scored (out of scope) is not mapped."""
    import orjson
    import pyarrow as pa

    from fangpin.ids import keyed_hashes
    from fangpin.store.history import encode_blocks, encode_household_blocks, encode_person_blocks
    from models.features import text_positions

    hids = scored["household_id"].astype(str).tolist()
    hkeys = keyed_hashes(hids, job["id_key"])
    rows = np.arange(len(hids))
    if hasattr(model, "history_table"):
        hist = model.history_table(s, rows)
        snaps = model.snapshot_table(fr, qidx, hids, job["event_quarters"])
    else:  # a model registered before blocks: its own code gives records
        hist = pa.Table.from_pylist(model.histories(s, rows))
        snaps = pa.Table.from_pylist(model.snapshots(fr, qidx, hids, job["event_quarters"]))
    places = pd.DataFrame({c: scored[c].astype(str).to_numpy() for c in ("county", "township", "village")})
    places["household_id"] = hids
    enc = encode_blocks(places, hist, snaps, f"{job['history_run']}{k:04d}", job["quarter"])
    order = enc["order"]
    hd = heads.reindex(hids)

    def text(values) -> pa.Array:  # column-wise: missing → null, everything else as text
        return pa.array(pd.Series(values, copy=False).astype("string"), type=pa.string(), from_pandas=True)

    county = text(scored["county"])
    households = pa.table({
        "household_key": hkeys, "household_id": hids,
        "county": county, "township": text(scored["township"]), "village": text(scored["village"]),
        "level": text(scored["combined_level"]), "head_name": text(hd["name"]), "id_masked": text(hd["id_masked"]),
    }).take(pa.array(order)).append_column("block_key", pa.array(enc["block_key"], pa.string()))
    households = households.append_column("block_row", pa.array(enc["block_row"], pa.int32()))
    _write_part(encode_household_blocks(households, f"{job['history_run']}{k:04d}"), base, "households")
    _write_part(pa.table(enc["blocks"]), base, "blocks")
    _write_part(pa.table(enc["schema"]), base, "schemas")
    p = fr.persons
    if "person_key" in p.columns:
        mine = ((p["quarter_idx"] == qidx) & p["person_key"].notna()).to_numpy(dtype=bool, na_value=False)
        p = p.loc[mine, ["household_id", "person_key"]]
    else:
        p = p.iloc[:0]
    schema = pa.schema([("person_key", pa.string()), ("household_key", pa.string()), ("county", pa.string())])
    if len(p):
        at = text_positions(p["household_id"].astype(str), hids)  # each person's household (-1: not scored)
        mapped = at >= 0
        take = pa.array(at[mapped])
        persons = pa.table([pa.array(p["person_key"].astype(str).to_numpy(dtype=object)[mapped], pa.string()),
                            pa.array(hkeys, pa.string()).take(take), county.take(take).cast(pa.string())], schema=schema)
    else:
        persons = schema.empty_table()
    _write_part(encode_person_blocks(persons, f"{job['history_run']}{k:04d}"), base, "persons")
    places = model.place_contexts(s)
    _write_part(pa.table({"county": [k[0] for k in places], "township": [k[1] for k in places],
                             "village": [k[2] for k in places],
                             "quarter": [v.pop("quarter") for v in places.values()],
                             "data": [orjson.dumps(v).decode() for v in places.values()]},
                            schema=pa.schema([("county", pa.string()), ("township", pa.string()),
                                              ("village", pa.string()), ("quarter", pa.string()),
                                              ("data", pa.string())])), base, "places")


HISTORY_PARTS = ("households", "persons", "places", "blocks", "schemas")  # HistoryWrite.add's order


def _add_history(conn, writer, base: Path) -> None:
    """A chunk's online history into the store (``writer``: fangpin.store.history.HistoryWrite),
    then its files are removed."""
    writer.add(conn, *(_history_part(base, p) for p in HISTORY_PARTS))
    for p in HISTORY_PARTS:
        Path(f"{base}_{p}.feather").unlink(missing_ok=True)


def _write_part(table, base: Path, part: str) -> None:
    import pyarrow as pa

    with pa.OSFile(f"{base}_{part}.feather", "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)


def _history_part(base: Path, part: str):
    """Record batches of one of a chunk's history files (``<base>_<part>.feather``, written by
    :func:`_write_history_chunk`), for fangpin.store.history.HistoryWrite (``data`` stays JSON text)."""
    import pyarrow as pa

    f = Path(f"{base}_{part}.feather")
    if not f.exists():
        return
    with pa.memory_map(str(f)) as src:
        yield from pa.ipc.open_file(src).read_all().to_batches(max_chunksize=5000 if part == "blocks" else 50_000)


def _write_workbook(place: tuple[int, str, str, dict | None], job: dict) -> dict:
    """The workbook of one township (``place``: chunk, county, township, its level group) from its
    chunk's warnings and tasks, into ``<scratch>/excel``. Returns its path relative to that folder
    and seconds."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    from fangpin.cluster import peak_rss_mib
    from fangpin.excel import township_path, write_township_workbook

    t0 = time.perf_counter()
    k, county, township, workload = place
    scratch = Path(job["scratch"])
    flt = (pc.field("county") == county) & (pc.field("township") == township)
    table = pds.dataset(str(scratch / f"warnings_{k:04d}.parquet")).to_table(filter=flt)
    tasks = pds.dataset(str(scratch / f"tasks_{k:04d}.parquet")).to_table(filter=flt)
    path = township_path(scratch / "excel", county, township, job["quarter"])
    write_township_workbook(table, path, today=job["today"], tasks=tasks, township=township, quarter=job["quarter"],
                            county=county, workload=workload, params=job["params"])
    return {"path": str(path.relative_to(scratch / "excel")), "seconds": time.perf_counter() - t0,
            "peak_rss_mib": peak_rss_mib()}


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
    executor=None,
    readback_dirs: list[Path] | None = None,
    history: bool = True,
) -> ScoreResult:
    """Score one quarter (default: the latest in the data) and publish its warnings (module doc).

    ``params`` should be rooted (pipelines.common.rooted); ``root`` resolves a relative
    ``warnings.excel_dir``. ``model`` defaults to ``@champion``; ``store`` to Store.from_params;
    ``executor`` (fangpin.cluster.Executor) to the one fangpin.cluster.execution picks for the
    quarter's household count.

    ``seconds``: ``partition`` (of it ``partition_index``: this process finding the quarter's
    households and packing its townships into chunks), ``chunks`` (wall: chunks scored in the
    tasks while this process inserts finished ones into the store), ``store`` (wall from the last
    chunk to the commit), ``readback``, ``checkpoint_wait`` (the store's checkpoint still running
    after the read-back),
    ``excel_wait`` (wall from the commit until the last workbook), ``publish`` (Parquet outputs and
    workbooks into place), ``total``; and task times summed over tasks (worker time, not wall):
    ``score`` (the model's one method: features, booster, calibration, rules, levels, TreeSHAP,
    reasons, measures), ``warnings`` (the checked warnings table and tasks), ``excel``
    (workbooks), ``chunk_read`` and ``chunk_write`` (chunk input and Parquet output), ``history``
    (the online history of the chunks); ``history_store`` (this process writing it into the
    warnings' transaction as the chunks finish) and ``history_store_<table>`` (its blocks,
    households, persons and places, each with reading its chunk files).

    ``history``: also leave the online history of the scored quarter in the store
    (fangpin.store.history) for ``/v1/score`` and ``/v1/events``.
    """
    from fangpin import quarters as fq

    src = Path(ingested_dir or params.paths.ingested_dir)
    quarter = fq.fmt(*fq.parse(quarter)) if quarter else latest_quarter(src)
    hh_ds = dataset(src, "households")
    if hh_ds is None:
        from fangpin.errors import no_ingest_output

        raise no_ingest_output(src)  # a FileNotFoundError
    import pyarrow.dataset as pds

    n_q = hh_ds.count_rows(filter=pds.field("quarter_idx") == fq.to_index(quarter))
    if n_q == 0:
        from fangpin.errors import NotEnoughData

        raise NotEnoughData(f"台账中没有 {quarter} 季度的户，请用 --quarter 选择台账中已有的季度，或先导入该季度的台账。",
                            f"The ledger has no households in {quarter}: choose a quarter it holds with --quarter, or "
                            f"ingest that quarter's export first.")  # a ValueError
    kw = dict(quarter=quarter, ingested_dir=src, model=model, store=store, root=root, show_progress=show_progress,
              write_excel=write_excel, chunk_households=chunk_households, n_q=n_q, history=history,
              readback_dirs=readback_dirs or [src])
    if executor is not None:
        return _score(params, executor, **kw)
    from fangpin.cluster import execution

    with execution(params, "score", n_q) as ex:
        return _score(params, ex, **kw)


def _score(params: Params, ex, *, quarter: str, ingested_dir: Path, model, store, root, show_progress: bool,
           write_excel: bool, chunk_households: int | None, n_q: int, history: bool,
           readback_dirs: list[Path]) -> ScoreResult:
    from fangpin import quarters as fq
    from fangpin.ids import params_key
    from fangpin.tasks import task_schema
    from fangpin.warnings import local_date, record_schema
    from models.levels import check_coverage
    from models.rules import rule_ids
    from pipelines.common import write_json
    from pipelines.partition import Partitioner

    t_all = time.perf_counter()
    secs: dict[str, float] = {}
    src = ingested_dir
    if model is None:
        from models.registry import load_champion

        model = load_champion(params, root)
    if model.model_version is None:
        raise ValueError("the model has no registry version (load it with models.registry.load_champion)")
    check_coverage(model.levels, params.tasks.routes, rule_ids())  # every rule hit a warning or a task
    qidx = fq.to_index(quarter)
    lines = {**model.lines, **{int(k): float(v) for k, v in params.lines.items()}}
    lj = src / "lines.json"
    if lj.exists():
        import json

        lines.update({int(k): float(v) for k, v in json.loads(lj.read_text(encoding="utf-8")).items()})
    chunk = chunk_households or params.warnings.chunk_households
    n_chunks = max(1, math.ceil(n_q / chunk))
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
    scratch = Path(tempfile.mkdtemp(prefix=f".score_{quarter}_", dir=out_dir)).resolve()
    books: list = []
    try:
        t0 = time.perf_counter()
        part = Partitioner(src, scratch, n_chunks)
        part.index_quarter(qidx, event_window=max(4, model.ruleset.severe_event_quarters))
        secs["partition_index"] = time.perf_counter() - t0  # this process: the quarter's townships into chunks
        tasks = part.tasks()
        task = prog.add_task(f"分区 {quarter} (partition)", total=len(tasks)) if prog else None
        router = ex.share(part.router)
        for rows in ex.map_unordered(partition_part, tasks, router, str(scratch), n_chunks):
            part.add(rows)
            if prog:
                prog.advance(task)
        secs["partition"] = time.perf_counter() - t0
        if store is None:
            from fangpin.store import Store

            store = Store.from_params(params)
        portable = {}
        if ex.distributed:  # a registered version's own code is not importable on a worker until
            import pickle  # its directory is on the worker's sys.path: see _job_model

            from models.registry import code_path

            portable = dict(model=None, model_pickle=pickle.dumps(model), model_path=code_path(model))
        job = ex.share(dict(dict(model=model), scratch=str(scratch), params=params, qidx=qidx, quarter=quarter,
                            lines=lines, created=created, today=local_date(created),
                            threads=params.cluster.threads_per_worker if ex.distributed else None,
                            history=history, id_key=params_key(params) if history else None,
                            history_run=uuid.uuid4().hex[:16],
                            event_quarters=max(4, model.ruleset.severe_event_quarters), **portable))

        t0 = time.perf_counter()
        task = prog.add_task(f"评分 {quarter} (score)", total=n_q) if prog else None
        task_secs: dict[str, float] = {}
        last_chunk = [t0]
        hist_w, hist_secs = None, [0.0]
        if history:
            from fangpin.store import history as hs

            hist_w = hs.HistoryWrite(quarter, sorted(part.counties))

        def timed(fn):
            def run(conn):
                t = time.perf_counter()
                fn(conn)
                hist_secs[0] += time.perf_counter() - t
            return run

        def finished_tables():
            """Each chunk's warnings as it finishes (the store inserts them meanwhile), then its
            保障缺口 tasks and its online history, in the same transaction; its townships'
            workbooks start as tasks."""
            import pyarrow.parquet as pq

            from fangpin.store.levels_tasks import Tasks

            if hist_w is not None:
                yield timed(hist_w.begin)
            for r in ex.map_unordered(_run_chunk, range(n_chunks), job):
                res.households += r["households"]
                res.warnings += r["warnings"]
                res.explained += r["explained"]
                res.rule_warnings += r["rule_warnings"]
                res.chunk_peak_rss_mib = max(res.chunk_peak_rss_mib, r.get("peak_rss_mib", 0.0))
                for lv, c in r["by_level"].items():
                    res.by_level[lv] = res.by_level.get(lv, 0) + c
                res.tasks += r["tasks"]
                for d, c in r["tasks_by_department"].items():
                    res.tasks_by_department[d] = res.tasks_by_department.get(d, 0) + c
                res.townships += r["levels"]
                for k, v in r["seconds"].items():
                    task_secs[k] = task_secs.get(k, 0.0) + v
                if write_excel:
                    load = {(g["county"], g["township"]): g for g in r["levels"]}
                    books.extend(ex.submit(_write_workbook, (r["k"], c, t, load.get((c, t))), job)
                                 for c, t in r["places"])
                if prog:
                    prog.advance(task, r["rows"])
                last_chunk[0] = time.perf_counter()
                p = scratch / f"warnings_{r['k']:04d}.parquet"
                if p.exists():
                    yield pq.read_table(p)
                p = scratch / f"tasks_{r['k']:04d}.parquet"
                if p.exists():
                    yield Tasks(pq.read_table(p))
                if hist_w is not None:
                    base = scratch / f"history_{r['k']:04d}"
                    yield timed(lambda conn, b=base: _add_history(conn, hist_w, b))
            if hist_w is not None:
                yield timed(hist_w.finish)

        wr = store.write_quarter_tables(finished_tables(), quarter, res.model_version,
                                        counties=sorted(part.counties),
                                        tasks=lambda: (),  # the chunks' tasks came in the stream
                                        thresholds=lambda: res.townships)
        t_commit = time.perf_counter()
        # the store's checkpoint (SQLite: the quarter's pages from the WAL into the file, I/O
        # outside the GIL) runs beside the read-back instead of inside the commit
        ckpt = threading.Thread(target=store.checkpoint, name="store-checkpoint", daemon=True)
        ckpt.start()
        res.store = {"run_id": wr.run_id, "n_warnings": wr.n_warnings, "inserted": wr.inserted,
                     "updated": wr.updated, "removed": wr.removed}
        secs["chunks"] = last_chunk[0] - t0
        secs["store"] = t_commit - last_chunk[0]
        from pipelines.readback import read_back

        # the exports read back: earlier warnings matched to the later quarters, this quarter's
        # warnings of households the ledger shows eliminated marked 返贫风险 (pipelines/readback.py)
        res.readback = read_back(store, readback_dirs, params, now=created)
        secs["readback"] = time.perf_counter() - t_commit
        ckpt.join()
        secs["checkpoint_wait"] = time.perf_counter() - t_commit - secs["readback"]
        t_commit = time.perf_counter()
        written = [b.result() for b in books]
        secs["excel_wait"] = time.perf_counter() - t_commit
        for w in written:
            task_secs["excel"] = task_secs.get("excel", 0.0) + w["seconds"]
            res.chunk_peak_rss_mib = max(res.chunk_peak_rss_mib, w["peak_rss_mib"])
        for k in ("score", "warnings", "history", "excel"):
            secs[k] = task_secs.get(k, 0.0)
        secs["chunk_read"], secs["chunk_write"] = task_secs.get("read", 0.0), task_secs.get("write", 0.0)

        if hist_w is not None:
            res.history = hist_w.result()
            secs["history_store"] = hist_secs[0]
            secs.update({f"history_store_{k}": v for k, v in hist_w.seconds.items()})
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
        published = []
        for rel in sorted(w["path"] for w in written):
            dest = excel_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(scratch / "excel" / rel, dest)
            published.append(str(dest))
        res.workbooks = published
        res.warnings_parquet, res.scores_parquet = str(final_w), str(final_s)
        secs["publish"] = time.perf_counter() - t0
    finally:
        for b in books:  # a failed run: let running workbook tasks end before the scratch goes
            try:
                b.result()
            except Exception:  # noqa: BLE001 - the run's own error is the one raised
                pass
        if prog:
            prog.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    secs["total"] = time.perf_counter() - t_all
    res.seconds = {k: round(v, 2) for k, v in secs.items()}
    res.workers = ex.workers
    log.info("score %s: %d households, %d warnings (%s) in %.1fs on %d workers", quarter, res.households,
             res.warnings, res.by_level, secs["total"], res.workers)
    return res


@contextmanager
def ingested_export(params: Params, ledger: list[Path], events: list[Path] | None, *, show_progress: bool = True):
    """A new export ingested into a temporary directory (fangpin.ingest), yielded while it lives;
    its ingest report and quarantine are kept under ``<warnings_dir>/export_ingest/``."""
    from fangpin.ingest import ingest

    with tempfile.TemporaryDirectory(prefix="fangpin_ingest_") as tmp:
        report = ingest(ledger, events or [], tmp, params, show_progress=show_progress)
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
        yield Path(tmp)


def score_export(params: Params, ledger: list[Path], events: list[Path] | None, *, quarter: str | None = None,
                 **kw) -> ScoreResult:
    """Score a new export: ingest it into a temporary directory first (fangpin.ingest), then score."""
    with ingested_export(params, ledger, events, show_progress=kw.get("show_progress", True)) as tmp:
        return score_quarter(params, quarter=quarter, ingested_dir=tmp, readback_dirs=history_and(params, tmp), **kw)


def history_and(params: Params, export: Path) -> list[Path]:
    """The folders a read-back reads: the county's ingested history (when there is one), then the
    new export (its quarters replace the history's)."""
    hist = Path(params.paths.ingested_dir)
    return [hist, export] if (hist / "households.parquet").exists() else [export]
