"""`fangpin score`: the quarterly batch — every in-scope household of a quarter scored with
``@champion``, warnings explained, written to the store, a Parquet file and township workbooks.

Flow (memory bounded by the chunk size, not by the county):

1. **Partition.** One streaming pass over the canonical tables (pyarrow dataset scans with the
   quarter filter pushed down) routes every row a quarter's features need into per-chunk Parquet
   files under a scratch directory: household snapshots up to the quarter (income history), person
   rows of the quarter and the one before (changes since the last snapshot), department events of
   the last ``max(4, severe_event_quarters) + 1`` quarters. A chunk is a set of WHOLE townships
   (packed by size; ``warnings.chunk_households`` per chunk), so a household's history is in its
   chunk and everything models.features computes over a population (village / township disaster
   shares, the township's identification rate) and per-township visit capacities
   (``levels.mode: capacity``) come out exactly as when the whole county is scored at once
   (tests/data/test_score.py checks it). Memory: one chunk's tables (bounded by the chunk size or
   the largest township) plus a household-id → chunk map of the quarter (one id and one integer
   per household).
2. **Score.** Per chunk: ``RiskModel.score`` (features, booster, calibration, rules, levels) without
   explanations; then TreeSHAP (``pred_contrib``) and reasons (models.explain) ONLY for the
   in-scope households with a warning; additivity is checked on every explained row; warning
   records (head-of-household name and masked ID from persons, measures from models.measures)
   are appended to a temporary Parquet file; every scored household's levels go to a second one.
3. **Publish.** ``Store.write_quarter`` (one transaction: idempotent, atomic) reads the records
   back lazily; township workbooks (fangpin.excel) are written one township at a time; finally
   the Parquet files are renamed into place (atomic per file).

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
        raise FileNotFoundError(f"{Path(ingested_dir) / 'households.parquet'} not found: run `fangpin ingest` first")
    col = ds.to_table(columns=["quarter_idx"]).column("quarter_idx")
    if len(col) == 0:
        raise ValueError(f"{ingested_dir}/households.parquet has no rows")
    return from_index(int(pc.max(col).as_py()))


def _township_key(df: pd.DataFrame) -> pd.Series:
    return df["county"].astype("string").fillna("") + "/" + df["township"].astype("string").fillna("")


class _Partitioner:
    """Route rows of the canonical tables into per-chunk Parquet files (see module doc).

    A chunk is a set of whole townships (packed by size into ``n`` chunks): the feature module's
    population context (village / township disaster shares, the township's identification rate)
    is then computed by models.features itself, exactly as for the whole county. Household rows go
    to the chunk of their own township and, when it differs (a household that moved), also to the
    chunk of its township in the scored quarter, so its history is complete; person and event rows
    follow their household's township in the scored quarter (a household id → chunk map of the
    quarter: one id and one integer per household).
    """

    PERSON_QUARTERS = 2  # the scored quarter and the one before (changes since the last snapshot)

    def __init__(self, src: Path, scratch: Path, qidx: int, n: int, event_window: int, batch_rows: int = 262_144):
        self.src, self.scratch, self.q, self.n = Path(src), Path(scratch), qidx, n
        self.event_window = event_window
        self.batch_rows = batch_rows
        self.counties: set[str] = set()
        self.rows = {t: np.zeros(n, dtype=np.int64) for t in TABLES}
        self._ids: pd.Index | None = None
        self._bucket: np.ndarray | None = None
        self._township_bin: dict[str, int] = {}

    def index_quarter(self) -> int:
        """Build the household → chunk map of the scored quarter (townships packed into ``n``
        chunks of similar size, largest first); returns its household count."""
        import pyarrow.dataset as pds

        hh = _dataset(self.src, "households")
        ids, keys = [], []
        for b in hh.to_batches(columns=["household_id", "county", "township"],
                               filter=pds.field("quarter_idx") == self.q, batch_size=self.batch_rows):
            df = b.to_pandas()
            if len(df):
                self.counties.update(df["county"].dropna().astype(str).unique().tolist())
                ids.append(df["household_id"].astype("string").to_numpy())
                keys.append(_township_key(df).to_numpy())
        key = pd.Series(np.concatenate(keys) if keys else np.array([], dtype=object), dtype="string")
        sizes = key.value_counts()
        load = np.zeros(self.n, dtype=np.int64)
        self._township_bin = {}
        for tw, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
            k = int(np.argmin(load))
            self._township_bin[tw] = k
            load[k] += size
        self._ids = pd.Index(np.concatenate(ids) if ids else np.array([], dtype=object))
        self._bucket = key.map(self._township_bin).to_numpy(dtype=np.int64) if len(key) else np.zeros(0, np.int64)
        return len(self._ids)

    def _by_township(self, df: pd.DataFrame) -> np.ndarray:
        return _township_key(df).map(self._township_bin).fillna(-1).to_numpy(dtype=np.int64)

    def _by_id(self, hid: pd.Series) -> np.ndarray:
        pos = self._ids.get_indexer(hid.astype("string"))
        return np.where(pos >= 0, self._bucket[np.maximum(pos, 0)], -1)

    def run(self) -> None:
        import pyarrow as pa
        import pyarrow.dataset as pds
        import pyarrow.parquet as pq

        if self._ids is None:
            self.index_quarter()
        f = pds.field("quarter_idx")
        filters = {
            "households": f <= self.q,
            "persons": (f <= self.q) & (f > self.q - self.PERSON_QUARTERS),
            "events": (f <= self.q) & (f > self.q - self.event_window - 1),
        }
        for table in TABLES:
            ds = _dataset(self.src, table)
            if ds is None:
                continue
            writers: dict[int, pq.ParquetWriter] = {}
            try:
                for b in ds.to_batches(filter=filters[table], batch_size=self.batch_rows):
                    if b.num_rows == 0:
                        continue
                    hid = b.column(b.schema.get_field_index("household_id")).to_pandas()
                    by_id = self._by_id(hid)
                    if table == "households":
                        own = self._by_township(b.select(["county", "township"]).to_pandas())
                        mine = np.flatnonzero(own >= 0)
                        extra = np.flatnonzero((by_id >= 0) & (by_id != own))
                        rows = np.concatenate([mine, extra])
                        bucket = np.concatenate([own[mine], by_id[extra]])
                    else:
                        rows = np.flatnonzero(by_id >= 0)
                        bucket = by_id[rows]
                    order = np.argsort(bucket, kind="stable")
                    sb = bucket[order]
                    bt = b.take(pa.array(rows[order]))
                    starts = np.searchsorted(sb, np.arange(self.n + 1))
                    for k in range(self.n):
                        lo, hi = starts[k], starts[k + 1]
                        if hi > lo:
                            w = writers.get(k)
                            if w is None:
                                w = writers[k] = pq.ParquetWriter(str(self.path(table, k)), ds.schema)
                            w.write_batch(bt.slice(lo, hi - lo))
                            self.rows[table][k] += hi - lo
            finally:
                for w in writers.values():
                    w.close()

    def path(self, table: str, k: int) -> Path:
        return self.scratch / f"{table}_{k:04d}.parquet"

    def frames(self, k: int, lines: dict[int, float]):
        from models.features import Frames

        def read(table: str) -> pd.DataFrame | None:
            p = self.path(table, k)
            return pd.read_parquet(p) if p.exists() else None

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


def _none(v):
    if v is None:
        return None
    try:
        return None if pd.isna(v) else v
    except (TypeError, ValueError):
        return v


def explain_chunk(model, params: Params, scored: pd.DataFrame, feats: pd.DataFrame, persons: pd.DataFrame,
                  qidx: int, created_at: datetime, table=None) -> tuple[list, int]:
    """Warning records for the in-scope warned rows of one scored chunk. Returns (records, explained)."""
    from fangpin.warnings import WarningRecord, deadline, local_date, warning_id
    from models.explain import check_additivity, explain_rows, labour_classes
    from models.measures import drivers_of, suggest, table_for

    table = table or table_for(params)
    warn = np.flatnonzero((scored["warning"] & scored["in_scope"]).to_numpy(dtype=bool))
    if not len(warn):
        return [], 0
    X = model.spec.matrix(feats.iloc[warn])
    contrib = model.contributions(X)
    check_additivity(scored["raw_score"].to_numpy()[warn], contrib)
    reasons = explain_rows(model.spec, model.calibrator, X, contrib, params.warnings.max_reasons)
    heads = _heads(persons, qidx)
    names = heads["name"].reindex(scored["household_id"].iloc[warn]).to_numpy()
    masked = heads["id_masked"].reindex(scored["household_id"].iloc[warn]).to_numpy()
    cols = {c: scored[c].to_numpy() for c in ("quarter", "county", "township", "village", "household_id",
                                               "combined_level", "probability", "rule_hits")}
    version = str(model.model_version)
    w = params.warnings
    # what WarningRecord.create sets, computed once for the run: the id per household, one deadline
    due = deadline(local_date(created_at), w.verification_days, w.working_days, w.holiday_country)
    classes = labour_classes(X, model.spec)
    probs = np.clip(cols["probability"][warn].astype(np.float64), 0.0, 1.0).tolist()
    measures_of: dict = {}  # (drivers, labour class) → measures: the table lookup is the same for equal keys
    records = []
    for j, i in enumerate(warn):
        hits = cols["rule_hits"][i] or []
        key = (tuple(drivers_of(hits, reasons[j])), classes[j])
        if key not in measures_of:
            measures_of[key] = suggest(key[0], key[1], table=table, max_measures=w.max_measures)
        quarter, hid = str(cols["quarter"][i]), str(cols["household_id"][i])
        records.append(WarningRecord(
            id=warning_id(quarter, hid, version), created_at=created_at, deadline=due,
            quarter=quarter, county=str(cols["county"][i]), township=str(cols["township"][i]),
            village=str(cols["village"][i]), household_id=hid,
            head_name=_none(names[j]), id_masked=_none(masked[j]), level=cols["combined_level"][i],
            probability=probs[j], rule_hits=hits, reasons=reasons[j],
            measures=measures_of[key], model_version=version, ruleset_version=model.ruleset_version,
        ))
    return records, len(warn)


def _record_table(records):
    import pyarrow as pa

    return pa.Table.from_pylist([r.model_dump(mode="json") for r in records], schema=_record_schema())


def _record_schema():
    import pyarrow as pa

    hit = pa.struct([("rule_id", pa.string()), ("level", pa.string()), ("text", pa.string()),
                     ("threshold", pa.string())])
    reason = pa.struct([("factor", pa.string()), ("text", pa.string()), ("direction", pa.string()),
                        ("logodds", pa.float64()), ("prob_pp", pa.float64())])
    measure = pa.struct([("type", pa.string()), ("text", pa.string())])
    return pa.schema([
        ("id", pa.string()), ("quarter", pa.string()), ("county", pa.string()), ("township", pa.string()),
        ("village", pa.string()), ("household_id", pa.string()), ("head_name", pa.string()),
        ("id_masked", pa.string()), ("level", pa.string()), ("probability", pa.float64()),
        ("rule_hits", pa.list_(hit)), ("reasons", pa.list_(reason)), ("measures", pa.list_(measure)),
        ("model_version", pa.string()), ("ruleset_version", pa.string()), ("created_at", pa.string()),
        ("deadline", pa.string()), ("status", pa.string()), ("status_reason", pa.string()),
    ])


SCORE_COLUMNS = ("household_id", "quarter", "county", "township", "village", "probability", "model_level",
                 "rule_level", "combined_level", "warning")


def _scores_table(scored: pd.DataFrame):
    import pyarrow as pa

    s = scored.loc[scored["in_scope"].to_numpy(dtype=bool), list(SCORE_COLUMNS) + ["rule_hits"]]
    df = s[list(SCORE_COLUMNS)].copy()
    for c in ("model_level", "rule_level", "combined_level"):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    df["rule_ids"] = [[h["rule_id"] for h in (hs or [])] for hs in s["rule_hits"]]
    return pa.Table.from_pandas(df, preserve_index=False)


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
) -> ScoreResult:
    """Score one quarter (default: the latest in the data) and publish its warnings (module doc).

    ``params`` should be rooted (pipelines.common.rooted); ``root`` resolves a relative
    ``warnings.excel_dir``. ``model`` defaults to ``@champion``; ``store`` to Store.from_params.
    """
    from fangpin import quarters as fq
    from fangpin.excel import write_township_workbooks
    from models.measures import table_for

    t_all = time.perf_counter()
    secs: dict[str, float] = {}
    src = Path(ingested_dir or params.paths.ingested_dir)
    if model is None:
        from models.pyfunc import load_champion

        model = load_champion(params, root)
    if model.model_version is None:
        raise ValueError("the model has no registry version (load it with models.pyfunc.load_champion)")
    quarter = fq.fmt(*fq.parse(quarter)) if quarter else latest_quarter(src)
    qidx = fq.to_index(quarter)
    lines = {**model.lines, **{int(k): float(v) for k, v in params.lines.items()}}
    lj = src / "lines.json"
    if lj.exists():
        import json

        lines.update({int(k): float(v) for k, v in json.loads(lj.read_text(encoding="utf-8")).items()})
    hh_ds = _dataset(src, "households")
    if hh_ds is None:
        raise FileNotFoundError(f"{src / 'households.parquet'} not found: run `fangpin ingest` first")
    import pyarrow.dataset as pds

    n_q = hh_ds.count_rows(filter=pds.field("quarter_idx") == qidx)
    if n_q == 0:
        raise ValueError(f"no household rows for {quarter} in {src / 'households.parquet'}")
    chunk = chunk_households or params.warnings.chunk_households
    n_chunks = max(1, math.ceil(n_q / chunk))
    out_dir = Path(params.paths.warnings_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    excel_dir = Path(params.warnings.excel_dir)
    if not excel_dir.is_absolute():
        excel_dir = Path(root or ".").resolve() / excel_dir
    res = ScoreResult(quarter=quarter, model_version=str(model.model_version), chunks=n_chunks)
    created = datetime.now(UTC)
    table = table_for(params)

    prog = None
    if show_progress:
        from fangpin.progress import progress

        prog = progress()
        prog.start()
    scratch = Path(tempfile.mkdtemp(prefix=f".score_{quarter}_", dir=out_dir))
    try:
        t0 = time.perf_counter()
        part = _Partitioner(src, scratch, qidx, n_chunks, event_window=max(4, model.ruleset.severe_event_quarters))
        task = prog.add_task(f"分区 {quarter} (partition)", total=len(TABLES) + 1) if prog else None
        part.index_quarter()
        if prog:
            prog.advance(task)
        part.run()
        if prog:
            prog.update(task, completed=len(TABLES) + 1)
        secs["partition"] = time.perf_counter() - t0

        import pyarrow.parquet as pq

        tmp_w, tmp_s = scratch / "warnings.parquet", scratch / "scores.parquet"
        ww = pq.ParquetWriter(str(tmp_w), _record_schema())
        sw = None
        t_score = t_explain = 0.0
        task = prog.add_task(f"评分 {quarter} (score)", total=n_q) if prog else None
        try:
            for k in range(n_chunks):
                fr = part.frames(k, lines)
                if fr is None:
                    continue
                t1 = time.perf_counter()
                scored, feats = model.score(fr, quarters=[qidx], explain="none", return_features=True)
                t2 = time.perf_counter()
                records, n_exp = explain_chunk(model, params, scored, feats, fr.persons, qidx, created, table)
                t_score += t2 - t1
                t_explain += time.perf_counter() - t2
                inscope = scored["in_scope"].to_numpy(dtype=bool)
                res.households += int(inscope.sum())
                res.explained += n_exp
                for r in records:
                    res.by_level[r.level] = res.by_level.get(r.level, 0) + 1
                    res.rule_warnings += bool(r.rule_hits)
                res.warnings += len(records)
                if records:
                    ww.write_table(_record_table(records))
                st = _scores_table(scored)
                if sw is None:
                    sw = pq.ParquetWriter(str(tmp_s), st.schema)
                sw.write_table(st.cast(sw.schema))
                if prog:
                    prog.advance(task, len(scored))
                del fr, scored, feats, records
        finally:
            ww.close()
            if sw is not None:
                sw.close()
        secs["score"], secs["explain"] = t_score, t_explain

        t0 = time.perf_counter()
        if store is None:
            from fangpin.store import Store

            store = Store.from_params(params)
        task = prog.add_task("写入预警库 (store)", total=res.warnings) if prog else None

        def records_with_progress():
            for i, r in enumerate(iter_records(tmp_w), 1):
                if prog and i % 5000 == 0:
                    prog.update(task, completed=i)
                yield r

        wr = store.write_quarter(records_with_progress(), quarter, res.model_version, counties=sorted(part.counties))
        if prog:
            prog.update(task, completed=res.warnings)
        res.store = {"run_id": wr.run_id, "n_warnings": wr.n_warnings, "inserted": wr.inserted,
                     "updated": wr.updated, "removed": wr.removed}
        secs["store"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if write_excel and res.warnings:
            import pyarrow.dataset as pds2

            places = pds2.dataset(str(tmp_w), format="parquet").to_table(columns=["county", "township"])
            pairs = sorted(set(zip(places.column("county").to_pylist(), places.column("township").to_pylist(),
                                   strict=True)))
            task = prog.add_task("乡镇预警清单 (Excel)", total=len(pairs)) if prog else None
            for county, township in pairs:
                res.workbooks += [str(p) for p in write_township_workbooks(
                    list(iter_records(tmp_w, county=county, township=township)), excel_dir)]
                if prog:
                    prog.advance(task)
        secs["excel"] = time.perf_counter() - t0

        final_w, final_s = out_dir / f"warnings_{quarter}.parquet", out_dir / f"scores_{quarter}.parquet"
        os.replace(tmp_w, final_w)
        if sw is not None:
            os.replace(tmp_s, final_s)
        res.warnings_parquet, res.scores_parquet = str(final_w), str(final_s)
    finally:
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
        if not report.ok:
            errs = "; ".join(f"{e.get('file', '?')}: {e.get('reason', e.get('message', e))}" for e in report.errors[:5])
            raise RuntimeError(f"ingest of the export failed ({len(report.errors)} file errors): {errs}")
        keep = Path(params.paths.warnings_dir) / "export_ingest"
        keep.mkdir(parents=True, exist_ok=True)
        for name in ("ingest_report.json", "quarantine.csv"):  # the findings outlive the temp tables
            if (Path(tmp) / name).exists():
                shutil.copy2(Path(tmp) / name, keep / name)
        if report.rows_quarantined:
            log.warning("ingest: %d rows quarantined (not scored): see %s", report.rows_quarantined,
                        keep / "quarantine.csv")
        return score_quarter(params, quarter=quarter, ingested_dir=Path(tmp), **kw)
