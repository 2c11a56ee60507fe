"""`ingest()`: county exports in, canonical tables out (docs/data-model.md), nothing lost.

Every data row read ends up either in an output table or in ``quarantine.csv``; the report
(``ingest_report.json``) counts both per file and in total. Files that cannot be read at all are
listed with a Chinese message for the clerk; the other files are still ingested.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fangpin import ids
from fangpin.config import IngestParams, Params
from fangpin.ingest import stream as st
from fangpin.ingest import tables as tb
from fangpin.ingest.read import discover

log = logging.getLogger(__name__)

OUTPUT_FILES = {
    "households": "households.parquet",
    "persons": "persons.parquet",
    "events": "events.parquet",
    "oracle": "oracle.parquet",
    "lines": "lines.json",
    "quarantine": "quarantine.csv",
    "report": "ingest_report.json",
}


@dataclass
class IngestReport:
    """What ``ingest_report.json`` holds (``to_dict``); ``ok`` is False when a file failed."""

    rows_read: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    duplicate_person_rows: int = 0
    invalid_id_numbers: int = 0
    events_read: int = 0
    events_accepted: int = 0
    events_unmatched: int = 0
    persons: int = 0
    households: int = 0
    events: int = 0
    quarters: list[str] = field(default_factory=list)
    monitoring_lines: dict[str, dict] = field(default_factory=dict)
    by_kind: dict[str, dict] = field(default_factory=dict)
    files: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    quarantine_by_reason: list[dict] = field(default_factory=list)
    out_dir: str = ""
    append: bool = False
    created: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    def finding(self, code: str) -> dict | None:
        return next((f for f in self.findings if f["code"] == code), None)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["ok"] = self.ok
        d["summary"] = self.summary()
        return d

    def summary(self) -> str:
        """Plain Chinese summary for the clerk (file names, what to fix)."""
        lines = [f"读取 {self.rows_read} 行：导入 {self.rows_accepted} 行，隔离 {self.rows_quarantined} 行"
                 f"（见 quarantine.csv）。"]
        if self.duplicate_person_rows:
            lines.append(f"重复人员行 {self.duplicate_person_rows} 行（已保留第一行）。")
        if self.invalid_id_numbers:
            lines.append(f"证件号码校验位错误 {self.invalid_id_numbers} 人（已保留，请核对）。")
        if self.events_read:
            lines.append(f"部门预警数据 {self.events_read} 条，台账中找不到对应人员的 {self.events_unmatched} 条。")
        if self.errors:
            good = sum(1 for f in self.files if f.get("status") == "ok")
            lines.append(f"{len(self.errors)} 个文件无法导入（其余 {good} 个文件已导入），请修正后重新导入：")
            lines += [f"  - {e['file']}：{e['message']}" for e in self.errors]
        return "\n".join(lines)


def _as_paths(paths: Iterable | str | Path | None) -> list[Path]:
    if paths is None:
        return []
    if isinstance(paths, (str, Path)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def read_inputs(paths: list[Path], exclude: Path | None, spill: st.Spill, key: bytes, progress=None,
                executor=None, limits: IngestParams | None = None) -> _Inputs:
    """Read every input file chunk by chunk, as tasks of ``executor`` (fangpin.cluster; default:
    this process): split the files into raw chunks, prepare (normalise + validate) each chunk,
    spill the ledger rows to disk; keep events / 监测线 / oracle rows and the quarantine lines in
    memory. Results are taken in file and chunk order (fangpin.ingest.tasks). ``limits`` bound
    each file (fangpin.ingest.read)."""
    from fangpin.cluster import Executor
    from fangpin.ingest import tasks as tk

    ex = executor or Executor()
    files, skipped, missing = discover(paths, exclude=exclude)
    r = _Inputs(skipped=skipped)
    r.entries = [{"file": m.path.name, "path": str(m.path), "kind": None, "status": "error",
                  "error": m.message, "rows_read": 0} for m in missing]
    r.errors = [m.to_dict() for m in missing]
    names = [f.name for f in files]
    # the file name identifies rows in quarantine.csv; disambiguate equal names in different folders
    labels = [f.name if names.count(f.name) == 1 else str(f) for f in files]
    raw_dir = spill.root / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    # a file larger than its share of the work is cut into chunks that run as tasks of their own
    sizes = [Path(f).stat().st_size for f in files]
    share = sum(sizes) / (2 * ex.workers) if ex.distributed else float("inf")
    task = progress.add_task("读取并校验文件 (files)", total=len(files)) if progress else None
    t0 = time.perf_counter()
    opened: dict[int, dict] = {}
    for res in ex.map_unordered(tk.read_file, [(i, str(Path(f).resolve()), labels[i], sizes[i] > share)
                                               for i, f in enumerate(files)],
                                str(raw_dir.resolve()), key, str(spill.root.resolve()), limits):
        opened[res["i"]] = res
        if progress:
            progress.advance(task)
    items = [{"i": i, "c": c, "raw": raw, "kind": o["kind"], "headers": o["headers"], "label": labels[i],
              "path": str(files[i]), "seq0": seq0, "n": n, "blank": blank, "cell_errors": cell_errors,
              "limits": limits or IngestParams()}
             for i, o in sorted(opened.items()) for c, (raw, n, blank, seq0, cell_errors) in enumerate(o["chunks"])]
    t1 = time.perf_counter()
    if items:
        task = progress.add_task("校验 (chunks)", total=len(items)) if progress else None
    by_chunk = {(x["i"], x["c"]): x for x in items}
    for res in ex.map_unordered(tk.prepare_chunk, items, key, str(spill.root.resolve())):
        it = by_chunk[(res["i"], res["c"])]
        opened[res["i"]]["prepared"].append({**res, "n": it["n"], "blank": it["blank"]})
        if progress:
            progress.advance(task)

    for i, f in enumerate(files):
        o, label = opened[i], labels[i]
        entry = {"file": label, "path": str(f), "kind": None, "status": "ok"}
        if o["kind"] is not None:
            entry.update(kind=o["kind"], encoding=o["encoding"], header_row=o["header_row"])
        if o["error"] is not None:  # the file could not be opened or read
            exc = tk.file_error(o["error"])
            entry.update(status="error", error=exc.message, column=exc.column, rows_read=0)
            r.errors.append({**exc.to_dict(), "file": label})
            log.warning("file not ingested: %s (%s)", label, exc.code)
            r.entries.append(entry)
            continue
        parts = sorted(o["prepared"], key=lambda x: x["c"])
        entry.update(blank_rows=sum(x["blank"] for x in parts), rows_read=sum(x["n"] for x in parts))
        err = next((x["error"] for x in parts if x["error"] is not None), None)
        if err is not None:
            spill.discard([Path(p) for x in parts for _, p, _ in x["pieces"]])
            exc = tk.file_error(err)
            entry.update(status="error", error=exc.message, column=exc.column)
            r.errors.append({**exc.to_dict(), "file": label})
            log.warning("file not ingested: %s (%s)", label, exc.code)
            r.entries.append(entry)
            continue
        last = parts[-1]
        if last["quarter_from_name"]:
            entry["quarter_from_file_name"] = last["quarter_from_name"]
        if last["extras"]:
            entry["columns_carried"] = last["extras"]
        kind = o["kind"]
        r.quarantine[kind] += [x["quarantine"] for x in parts]
        r.accepted[label] = r.accepted.get(label, 0) + sum(x["accepted"] for x in parts)
        if kind == "ledger":
            r.ledger_files += 1
            r.ledger_rows += sum(x["accepted"] for x in parts)
            r.extras.update(last["extras"])
            for x in parts:
                for q, p, n in x["pieces"]:
                    spill.pieces.setdefault(q, []).append((Path(p), n))
        elif kind == "events":
            r.events += [x["events"] for x in parts if x["events"] is not None]
        elif kind == "lines":
            r.lines += [x["prepared"] for x in parts]
        elif kind == "oracle":
            r.oracle_files += 1
            r.oracle += [(Path(p), n) for x in parts for _, p, n in x["pieces"]]
        r.entries.append(entry)
    log.info("ingest: %d files read in %.1fs, %d chunks of split files validated in %.1fs (%d workers)",
             len(files), t1 - t0, len(items), time.perf_counter() - t1, ex.workers)
    return r


@dataclass
class _Inputs:
    """What reading the inputs keeps (ledger rows are in the spill)."""

    skipped: list[dict]
    entries: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    quarantine: dict[str, list[pd.DataFrame]] = field(
        default_factory=lambda: {"ledger": [], "events": [], "lines": [], "oracle": []})
    events: list[pd.DataFrame] = field(default_factory=list)  # build_events of each chunk
    lines: list[tb.Prepared] = field(default_factory=list)
    oracle: list[tuple[Path, int]] = field(default_factory=list)  # spilled oracle pieces, file and row order
    oracle_files: int = 0
    accepted: dict[str, int] = field(default_factory=dict)  # by file, before duplicates
    ledger_files: int = 0
    ledger_rows: int = 0  # accepted ledger rows
    extras: set[str] = field(default_factory=set)
    empty_files: list[str] = field(default_factory=list)  # header only, no data row


def build_ledger_tables(spill: st.Spill, work: Path, agg: tb.LedgerAgg, persons_w: st.RowGroupWriter,
                        households_w: st.RowGroupWriter, ev_keys, lookup: list[pd.DataFrame], executor=None,
                        progress=None) -> set[str]:
    """Per quarter (quarter order) and per part of whole households (household order): persons
    and households appended to the writers, findings into ``agg``; every step runs as tasks of
    ``executor`` bounded by a piece, a bucket or a part, never by a quarter
    (fangpin.ingest.tasks, steps 3-4). Returns the quarters built."""
    from fangpin.cluster import Executor
    from fangpin.ingest import tasks as tk

    ex = executor or Executor()
    qs = sorted(spill.pieces, key=lambda q: (int(q[:4]), q[5:]))
    part_rows = st.PART_ROWS
    every = max(1, min(st.SAMPLE_EVERY, part_rows // 4))
    pieces = {q: [(j, str(Path(p).resolve()), n) for j, (p, n) in enumerate(spill.pieces[q])] for q in qs}
    buckets = {q: max(1, -(-sum(n for _, _, n in pieces[q]) // st.BUCKET_ROWS)) for q in qs}
    scratch = (work / "buckets").resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # 3a: per piece, person keys into hash buckets and a sample of household_ids
    samples: dict[str, list[str]] = {q: [] for q in qs}
    seq_range: dict[tuple[str, int], tuple[int, int] | None] = {}
    items = [(q, j, p, str(scratch / f"{q}_{j:07d}.arrow"), buckets[q]) for q in qs for j, p, _ in pieces[q]]
    for res in ex.map_unordered(tk.scan_piece, items, every):
        samples[res["q"]] += res["sample"]
        seq_range[(res["q"], res["j"])] = res["seq"]
    # 3b: per bucket, the duplicated person rows (keep the first in row order)
    dup_seq: dict[str, list[np.ndarray]] = {q: [] for q in qs}
    dq: dict[str, list[pd.DataFrame]] = {q: [] for q in qs}
    items = [(q, b, [str(scratch / f"{q}_{j:07d}.arrow") for j, _, _ in pieces[q]]) for q in qs
             for b in range(buckets[q])]
    for res in ex.map_unordered(tk.find_duplicates, items):
        dup_seq[res["q"]].append(res["dup_seq"])
        if res["dq"] is not None:
            dq[res["q"]].append(res["dq"])
    shutil.rmtree(scratch, ignore_errors=True)
    # 3c: per piece, the rows (duplicates dropped) routed into household_id ranges
    routes: dict[str, dict[int, dict[int, str]]] = {q: {} for q in qs}
    items = []
    for q in qs:
        seqs = np.sort(np.concatenate(dup_seq[q])) if dup_seq[q] else np.array([], dtype=np.int64)
        bounds = st.part_bounds(samples[q], part_rows, every)
        samples[q] = []
        for j, p, _ in pieces[q]:
            r = seq_range[(q, j)]
            mine = seqs[np.searchsorted(seqs, r[0]):np.searchsorted(seqs, r[1], side="right")] if r else seqs[:0]
            items.append((q, j, p, str((work / "parts" / q).resolve()), bounds, mine))
    for res in ex.map_unordered(tk.route_piece, items):
        for v, path in res["parts"].items():
            routes[res["q"]].setdefault(v, {})[res["j"]] = path
    t_route = time.perf_counter() - t0
    out_dir = work / "built"
    out_dir.mkdir(parents=True, exist_ok=True)
    # parts in household_id order, the files of a part in piece (row) order
    part_ids = {q: sorted(routes[q]) for q in qs}
    parts = [(q, v, [routes[q][pid][j] for j in sorted(routes[q][pid])]) for q in qs
             for v, pid in enumerate(part_ids[q])]
    task = progress.add_task("生成人员和户表 (build)", total=len(parts)) if progress else None
    t0 = time.perf_counter()
    built: dict[tuple[str, int], dict] = {}
    keys = ex.share(ev_keys) if ev_keys is not None else None
    for res in ex.map_unordered(tk.build_part, parts, agg.tolerance, agg.extras, keys, str(out_dir.resolve())):
        built[(res["q"], res["v"])] = res
        if progress:
            progress.advance(task)
    import pyarrow.feather as feather

    t1 = time.perf_counter()
    for q in qs:
        for d in dq[q]:
            agg.add_duplicates(d)
        for v in range(len(part_ids[q])):
            res = built[(q, v)]
            agg.merge(res["agg"])
            persons_w.append(feather.read_table(res["persons"]))
            households_w.append(feather.read_table(res["households"]))
            for p in (res["persons"], res["households"]):
                Path(p).unlink()
            if res["lookup"] is not None:
                lookup.append(res["lookup"])
    log.info("ingest: %d quarters routed in %.1fs (%d buckets), %d parts built in %.1fs, written in %.1fs", len(qs),
             t_route, sum(buckets.values()), len(parts), t1 - t0, time.perf_counter() - t1)
    return set(qs)


def build_oracle_table(pieces: list[tuple[Path, int]], work: Path, path: Path, executor=None) -> int:
    """``oracle.parquet`` from the spilled oracle pieces (file and row order), as
    ``tables.build_oracle`` on all rows at once: a household-quarter given more than once keeps its
    last row. Those duplicates are decided per hash bucket of household_id (tasks of ``executor``),
    then the pieces are streamed into the file one at a time. Returns the rows written."""
    import pyarrow.feather as feather

    from fangpin.cluster import Executor
    from fangpin.ingest import tasks as tk

    ex = executor or Executor()
    n = sum(k for _, k in pieces)
    drop = np.array([], dtype=np.int64)
    if n:
        buckets = max(1, -(-n // st.BUCKET_ROWS))
        scratch = (work / "oracle_buckets").resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        files = [str(scratch / f"{j:07d}.arrow") for j in range(len(pieces))]
        for _ in ex.map_unordered(tk.oracle_scan, [(str(Path(p).resolve()), f, buckets)
                                                   for (p, _), f in zip(pieces, files, strict=True)]):
            pass
        found = list(ex.map_unordered(tk.oracle_duplicates, [(b, files) for b in range(buckets)]))
        drop = np.sort(np.concatenate(found))
        shutil.rmtree(scratch, ignore_errors=True)
    w = st.RowGroupWriter(path, ROW_GROUP_ROWS)
    rows = 0
    for p, _ in pieces:
        t = feather.read_table(p)
        if len(drop):
            t = t.filter(pc.invert(pc.is_in(t["_seq"], value_set=pa.array(drop, pa.int64()))))
        o = t.to_pandas()
        o["quarter_idx"] = tb.quarter_index(o["quarter"])
        w.append(pa.Table.from_pandas(o[list(ORACLE_OUT)], preserve_index=False))
        rows += len(o)
        Path(p).unlink()
    if w.writer is None:  # oracle files without a row: the empty table of tables.build_oracle
        pd.DataFrame({c: pd.Series(dtype=dt) for c, dt in ORACLE_OUT.items()}).to_parquet(path, index=False)
    w.close()
    return rows


ORACLE_OUT = {"household_id": "str", "quarter": "str", "quarter_idx": "int32", "true_probability": "float64"}


def ingest(
    ledger_paths: Iterable | str | Path,
    event_paths: Iterable | str | Path | None,
    out_dir: str | Path,
    params: Params,
    *,
    append: bool = False,
    key: bytes | None = None,
    show_progress: bool = False,
    executor=None,
) -> IngestReport:
    """Ingest ledger/event/监测线/oracle files (files or folders) into ``out_dir``.

    With ``append=True`` the tables already in ``out_dir`` are kept and the quarters present in
    the new ledger files replace the same quarters there (re-running is idempotent); events are
    de-duplicated on (person, date, department, type, amount).

    Memory per task stays bounded by a chunk, a piece, a hash bucket or a part of whole households,
    never by a quarter or the province (see fangpin.ingest.stream); this process holds the
    department events (and the persons they name), the quarantine lines and a piece at a time of
    the tables it writes.
    Files, chunks, quarters and parts run as tasks (fangpin.ingest.tasks) of ``executor``, by
    default the one fangpin.cluster.execution picks for the input's size.

    Every output is written into a staging folder inside ``out_dir`` first and moved into place
    (one rename per file) only when the whole run succeeded: a failed or interrupted ingest
    leaves the previous outputs as they were and no temporary files (the staging folder of a
    killed run is removed by the next one).
    """
    if executor is None:
        from fangpin.cluster import execution

        size = sum(f.stat().st_size for f in discover(_as_paths(ledger_paths) + _as_paths(event_paths),
                                                       exclude=Path(out_dir))[0])
        with execution(params, "ingest", size) as ex:
            return ingest(ledger_paths, event_paths, out_dir, params, append=append, key=key,
                          show_progress=show_progress, executor=ex)
    key = key or ids.params_key(params)
    out = Path(out_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    paths = _as_paths(ledger_paths) + _as_paths(event_paths)

    prog = None
    if show_progress:
        from fangpin.progress import progress

        prog = progress()
        prog.start()
    tmp = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))
    stage = tmp / "out"
    stage.mkdir()
    done = False
    try:
        spill = st.Spill(tmp)
        r = read_inputs(paths, exclude=out, spill=spill, key=key, progress=prog, executor=executor,
                        limits=params.ingest)
        _report_header_only(r, append and (out / OUTPUT_FILES["persons"]).exists())
        task = prog.add_task("生成标准表", total=5) if prog else None

        def step():
            if prog:
                prog.advance(task)

        new_events = (pd.concat(r.events, ignore_index=True) if r.events else tb.build_events([], key))
        ev_keys = pa.array(new_events["person_key"].dropna().unique(), type=pa.large_string()) \
            if len(new_events) else None
        old = None
        if append and (out / OUTPUT_FILES["persons"]).exists():
            old_events = pd.read_parquet(out / OUTPUT_FILES["events"])
            old = old_events
            if len(old_events):
                k = pa.array(old_events["person_key"].dropna().unique(), type=pa.large_string())
                ev_keys = k if ev_keys is None else pa.concat_arrays([ev_keys, k]).unique()
        new_q = set(spill.pieces)
        persons_w = st.RowGroupWriter(stage / OUTPUT_FILES["persons"], ROW_GROUP_ROWS)
        households_w = st.RowGroupWriter(stage / OUTPUT_FILES["households"], ROW_GROUP_ROWS)
        lookup: list[pd.DataFrame] = []
        quarters: set[str] = set()
        n_old_p = n_old_h = 0
        if old is not None:
            n_old_p, qs = _copy_old(out / OUTPUT_FILES["persons"], new_q, persons_w, ev_keys, lookup)
            n_old_h, _ = _copy_old(out / OUTPUT_FILES["households"], new_q, households_w, None, None)
            quarters |= qs
        agg = tb.LedgerAgg(params.ingest.income_mismatch_tolerance, sorted(r.extras))
        quarters |= build_ledger_tables(spill, tmp, agg, persons_w, households_w, ev_keys, lookup, executor, prog)
        persons_w.close()
        households_w.close()
        if agg.persons == 0 and n_old_p == 0:
            # nothing accepted: the empty tables of tables.build_ledger
            pd.DataFrame(columns=list(tb.PERSON_OUT)).to_parquet(stage / OUTPUT_FILES["persons"], index=False)
            pd.DataFrame(columns=list(tb.HOUSEHOLD_OUT)).to_parquet(stage / OUTPUT_FILES["households"], index=False)
        step()
        all_events = new_events
        if old is not None and len(old):
            all_events = pd.concat([old, new_events], ignore_index=True).drop_duplicates(
                ["person_key", "event_date", "department", "event_type", "amount"], keep="first")
        persons_lookup = (pd.concat(lookup, ignore_index=True) if lookup
                          else pd.DataFrame({"person_key": pd.Series(dtype="str"),
                                             "quarter_idx": pd.Series(dtype="int32"),
                                             "household_id": pd.Series(dtype="str")}))
        events, ev_findings, _ = tb.join_households(all_events, persons_lookup)
        step()

        configured = {int(y): float(v) for y, v in params.lines.items()}
        if append and (out / OUTPUT_FILES["report"]).exists():
            # lines that an earlier run took from a 监测线.csv stay in force
            prev = json.loads((out / OUTPUT_FILES["report"]).read_text(encoding="utf-8"))
            for y, v in prev.get("monitoring_lines", {}).items():
                if v.get("source") != "params.yaml":
                    configured[int(y)] = float(v["line"])
        lines, lines_q, _ = tb.build_lines(r.lines, configured)
        if r.oracle_files:
            build_oracle_table(r.oracle, tmp, stage / OUTPUT_FILES["oracle"], executor)
        step()

        quarantine = pd.concat([p for k in ("ledger", "events", "lines", "oracle") for p in r.quarantine[k]]
                               + [agg.quarantine(), lines_q], ignore_index=True)
        report = _report(r, quarantine, agg, new_events, events, ev_findings, n_old_p + agg.persons,
                         n_old_h + agg.households, quarters, lines, out, append)
        step()
        _write(stage, events, lines, quarantine, report, append, prev=out)
        # publish: every file is complete; one rename each (same file system), nothing can fail
        # half way for lack of space or a bad row any more
        for f in sorted(stage.iterdir()):
            f.replace(out / f.name)
        done = True
        step()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done and created:
            shutil.rmtree(out, ignore_errors=True)
        if prog:
            prog.stop()
    log.info("ingest: %d rows read, %d accepted, %d quarantined, %d file errors",
             report.rows_read, report.rows_accepted, report.rows_quarantined, len(report.errors))
    return report


def _copy_old(path: Path, new_q: set[str], writer: st.RowGroupWriter, ev_keys, lookup) -> tuple[int, set[str]]:
    """Append mode: stream the rows of an existing table whose quarter is not re-ingested."""
    n, qs = 0, set()
    f = pq.ParquetFile(path)
    for i in range(f.num_row_groups):
        t = f.read_row_group(i)
        if new_q:
            t = t.filter(pc.invert(pc.is_in(t["quarter"], value_set=pa.array(sorted(new_q), t["quarter"].type))))
        if not len(t):
            continue
        writer.append(t)
        n += len(t)
        qs.update(pc.unique(t["quarter"]).to_pylist())
        if lookup is not None and ev_keys is not None:
            hit = pc.is_in(t["person_key"].cast(pa.large_string()), value_set=ev_keys)
            sub = t.filter(hit).select(["person_key", "quarter_idx", "household_id"])
            if len(sub):
                lookup.append(sub.to_pandas())
    return n, qs


def _report(r: _Inputs, quarantine, agg: tb.LedgerAgg, new_events, events, ev_findings, n_persons, n_households,
            quarters: set[str], lines, out, append) -> IngestReport:
    q_rows = quarantine.drop_duplicates(["file", "row"])["file"].value_counts().to_dict()
    dup_lines = quarantine.loc[quarantine["code"] == "duplicate_line", "file"].value_counts()
    by_kind: dict[str, dict] = {}
    for e in r.entries:
        if e["status"] != "ok":
            continue
        acc = r.accepted.get(e["file"], 0)
        if e["kind"] == "ledger":
            acc -= agg.duplicates_by_file.get(e["file"], 0)
        elif e["kind"] == "lines":
            acc -= int(dup_lines.get(e["file"], 0))
        e["rows_quarantined"] = int(q_rows.get(e["file"], 0))
        e["rows_accepted"] = int(acc)
        if e["kind"] == "ledger":
            e["duplicate_person_rows"] = int(agg.duplicates_by_file.get(e["file"], 0))
        k = by_kind.setdefault(e["kind"], {"files": 0, "rows_read": 0, "rows_accepted": 0, "rows_quarantined": 0})
        k["files"] += 1
        for c in ("rows_read", "rows_accepted", "rows_quarantined"):
            k[c] += e[c]
    findings = [f.to_dict() for f in agg.findings()] + [f.to_dict() for f in ev_findings]
    if r.empty_files:
        findings.append(tb.Finding("header_only_files", "只有表头、没有数据行的文件：" + "、".join(r.empty_files),
                                   len(r.empty_files), [{"file": f} for f in r.empty_files]).to_dict())
    years_needed = sorted({int(q[:4]) for q in quarters})
    missing = [y for y in years_needed if y not in lines]
    if missing:
        findings.append(tb.Finding("missing_monitoring_line",
                                   f"以下年度没有监测线：{missing}。请在 params.yaml 的 lines 中配置，"
                                   "或在台账旁放置 监测线.csv", len(missing)).to_dict())
    qbr = (quarantine.groupby(["code", "column"], sort=False).size().rename("count").reset_index()
           .sort_values("count", ascending=False))
    if len(quarantine):
        findings.append(tb.Finding("quarantined_rows", "无法导入的行（原因见 quarantine.csv）",
                                   int(quarantine.drop_duplicates(["file", "row"]).shape[0])).to_dict())
    ev_new_matched = 0
    if len(new_events):
        new_keys = pd.MultiIndex.from_frame(new_events[["source_file", "source_row"]])
        is_new = pd.MultiIndex.from_frame(events[["source_file", "source_row"]]).isin(new_keys)
        ev_new_matched = int((is_new & events["household_id"].notna().to_numpy()).sum())
    ok = [e for e in r.entries if e["status"] == "ok"]
    rep = IngestReport(
        rows_read=sum(e.get("rows_read", 0) for e in ok),
        rows_accepted=sum(e["rows_accepted"] for e in ok),
        rows_quarantined=sum(e["rows_quarantined"] for e in ok),
        duplicate_person_rows=sum(agg.duplicates_by_file.values()),
        invalid_id_numbers=agg.invalid,
        events_read=by_kind.get("events", {}).get("rows_read", 0),
        events_accepted=len(new_events),
        events_unmatched=len(new_events) - ev_new_matched,
        persons=n_persons, households=n_households, events=len(events),
        quarters=sorted(quarters, key=lambda q: (q[:4], q[5:])),
        monitoring_lines={str(y): v for y, v in lines.items()},
        by_kind=by_kind, files=r.entries, errors=r.errors, skipped=r.skipped, findings=findings,
        quarantine_by_reason=qbr.to_dict("records"),
        out_dir=str(out), append=append, created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return rep


# Rows per Parquet row group. Readers that stream a table (batch scoring's partition pass) decode a
# row group at a time, so this bounds their memory; pyarrow's default (1 Mi rows) made a
# 1M-household county's pass peak at ~3.5 GB.
ROW_GROUP_ROWS = 131_072


STAGING_PREFIX = ".ingest-"


def _remove_stale_staging(out: Path) -> None:
    """Remove the staging folders of ingests that were killed (their process is gone)."""
    for d in out.glob(f"{STAGING_PREFIX}*"):
        try:
            pid = int(d.name[len(STAGING_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        alive = True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            alive = False
        except PermissionError:
            pass
        if not alive or pid == os.getpid():
            shutil.rmtree(d, ignore_errors=True)


def _report_header_only(r: _Inputs, have_old_rows: bool) -> None:
    """A ledger or events file with a header and no data row is reported as such; when no ledger
    file has any row (and ``--append`` keeps none), the ingest fails (exit non-zero)."""
    empty = [e for e in r.entries if e["status"] == "ok" and e["kind"] in ("ledger", "events")
             and not e.get("rows_read")]
    for e in empty:
        e["header_only"] = True
    r.empty_files = [e["file"] for e in empty]
    ledgers = [e for e in r.entries if e["status"] == "ok" and e["kind"] == "ledger"]
    if ledgers and not any(e.get("rows_read") for e in ledgers) and not have_old_rows:
        names = "、".join(e["file"] for e in ledgers)
        r.errors.append({"file": names, "path": None, "code": "header_only", "column": None,
                         "message": f"台账文件 {names} 只有表头，没有数据行：没有可导入的户。请检查导出是否完整。"})


def _write(out: Path, events, lines, quarantine, report, append, prev: Path | None = None) -> None:
    """Write the outputs into ``out``; in append mode the earlier quarantine lines come from ``prev``."""
    events.to_parquet(out / OUTPUT_FILES["events"], index=False, row_group_size=ROW_GROUP_ROWS)
    # flat {"year": yuan} (docs/data-model.md); where each came from is in the report
    (out / OUTPUT_FILES["lines"]).write_text(json.dumps(
        {str(y): v["line"] for y, v in lines.items()}, ensure_ascii=False, indent=2), encoding="utf-8")
    qpath = out / OUTPUT_FILES["quarantine"]
    q = quarantine[tb.QUARANTINE_COLUMNS]
    old_q = (prev or out) / OUTPUT_FILES["quarantine"]
    if append and old_q.exists():
        before = pd.read_csv(old_q, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        q = pd.concat([before, q.astype(str)], ignore_index=True).drop_duplicates()
    # UTF-8 with BOM and CRLF: opens correctly in Excel on Chinese Windows; cells holding \r or \n
    # (they occur in broken exports) are quoted because both are in the line terminator. A cell
    # that Excel would run as a formula (=, +, -, @ …, not a plain number) gets a leading
    # apostrophe: Excel shows it as text.
    q = q.astype(str).apply(_excel_text)
    q.to_csv(qpath, index=False, encoding="utf-8-sig", lineterminator="\r\n")
    (out / OUTPUT_FILES["report"]).write_text(
        json.dumps(report.to_dict(), ensure_ascii=False, indent=2, default=_json_default), encoding="utf-8")


_FORMULA_START = r"^[=+\-@\t\r]"
_PLAIN_NUMBER = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"


def _excel_text(col: pd.Series) -> pd.Series:
    risky = col.str.contains(_FORMULA_START, regex=True, na=False) & ~col.str.match(_PLAIN_NUMBER, na=False)
    return col.where(~risky, "'" + col)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (pd.Timestamp, datetime)):
        return o.isoformat()
    raise TypeError(type(o))


@dataclass
class Tables:
    households: pd.DataFrame
    persons: pd.DataFrame
    events: pd.DataFrame
    lines: dict[int, float]
    oracle: pd.DataFrame | None
    report: dict


def load_tables(directory: str | Path) -> Tables:
    """The canonical frames of an ingested directory (see docs/data-model.md)."""
    d = Path(directory)
    if not (d / OUTPUT_FILES["persons"]).exists():
        raise FileNotFoundError(f"{d} holds no ingested tables (run `fangpin ingest` first)")
    lines_raw = json.loads((d / OUTPUT_FILES["lines"]).read_text(encoding="utf-8"))
    oracle_p = d / OUTPUT_FILES["oracle"]
    report_p = d / OUTPUT_FILES["report"]
    return Tables(
        households=pd.read_parquet(d / OUTPUT_FILES["households"]),
        persons=pd.read_parquet(d / OUTPUT_FILES["persons"]),
        events=pd.read_parquet(d / OUTPUT_FILES["events"]),
        lines={int(y): float(v) for y, v in lines_raw.items()},
        oracle=pd.read_parquet(oracle_p) if oracle_p.exists() else None,
        report=json.loads(report_p.read_text(encoding="utf-8")) if report_p.exists() else {},
    )
