"""`ingest()`: county exports in, canonical tables out (docs/data-model.md), nothing lost.

Every data row read ends up either in an output table or in ``quarantine.csv``; the report
(``ingest_report.json``) counts both per file and in total. Files that cannot be read at all are
listed with a Chinese message for the clerk; the other files are still ingested.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from fangpin import ids
from fangpin.config import Params, load_params
from fangpin.ingest import tables as tb
from fangpin.ingest.errors import FileError
from fangpin.ingest.read import discover, read_table

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


def read_inputs(paths: list[Path], exclude: Path | None, progress=None):
    """Read and prepare every input file. Returns (prepared by kind, file entries, errors, skipped)."""
    files, skipped, missing = discover(paths, exclude=exclude)
    prepared: dict[str, list[tb.Prepared]] = {"ledger": [], "events": [], "lines": [], "oracle": []}
    entries: list[dict] = [{"file": m.path.name, "path": str(m.path), "kind": None, "status": "error",
                            "error": m.message, "rows_read": 0} for m in missing]
    errors: list[dict] = [m.to_dict() for m in missing]
    task = progress.add_task("读取并校验文件", total=len(files)) if progress else None
    names = [f.name for f in files]
    for f in files:
        # the file name identifies rows in quarantine.csv; disambiguate equal names in different folders
        label = f.name if names.count(f.name) == 1 else str(f)
        entry = {"file": label, "path": str(f), "kind": None, "status": "ok"}
        try:
            raw = read_table(f)
            entry.update(kind=raw.kind, encoding=raw.encoding, header_row=raw.header_row,
                         blank_rows=raw.blank_rows, rows_read=len(raw.frame))
            p = tb.prepare(raw.frame, raw.headers, raw.kind, label, rows=raw.rows,
                           extra_fields=raw.extra_fields, path=f)
            if p.quarter_from_name:
                entry["quarter_from_file_name"] = p.quarter_from_name
            if p.extras:
                entry["columns_carried"] = p.extras
            prepared[raw.kind].append(p)
        except FileError as exc:
            entry.update(status="error", error=exc.message, column=exc.column, rows_read=entry.get("rows_read", 0))
            errors.append({**exc.to_dict(), "file": label})
            log.warning("file not ingested: %s (%s)", label, exc.code)
        entries.append(entry)
        if progress:
            progress.advance(task)
    return prepared, entries, errors, skipped


def ingest(
    ledger_paths: Iterable | str | Path,
    event_paths: Iterable | str | Path | None = None,
    out_dir: str | Path = "data/ingested",
    params: Params | None = None,
    *,
    append: bool = False,
    key: bytes | None = None,
    show_progress: bool = False,
) -> IngestReport:
    """Ingest ledger/event/监测线/oracle files (files or folders) into ``out_dir``.

    With ``append=True`` the tables already in ``out_dir`` are kept and the quarters present in
    the new ledger files replace the same quarters there (re-running is idempotent); events are
    de-duplicated on (person, date, department, type, amount).
    """
    params = params or load_params()
    key = key or ids.params_key(params)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = _as_paths(ledger_paths) + _as_paths(event_paths)

    prog = None
    if show_progress:
        from fangpin.progress import progress

        prog = progress()
        prog.start()
    try:
        prepared, entries, errors, skipped = read_inputs(paths, exclude=out, progress=prog)
        task = prog.add_task("生成标准表", total=5) if prog else None

        def step():
            if prog:
                prog.advance(task)

        lb = tb.build_ledger(prepared["ledger"], key, params.ingest.income_mismatch_tolerance)
        step()
        new_events = tb.build_events(prepared["events"], key)
        persons, households, old_events = lb.persons, lb.households, None
        if append and (out / OUTPUT_FILES["persons"]).exists():
            old = load_tables(out)
            new_q = set(persons["quarter"].unique())
            persons = pd.concat([old.persons[~old.persons["quarter"].isin(new_q)], persons], ignore_index=True)
            households = pd.concat([old.households[~old.households["quarter"].isin(new_q)], households],
                                   ignore_index=True)
            old_events = old.events
        all_events = new_events
        if old_events is not None and len(old_events):
            all_events = pd.concat([old_events, new_events], ignore_index=True).drop_duplicates(
                ["person_key", "event_date", "department", "event_type", "amount"], keep="first")
        events, ev_findings, _ = tb.join_households(all_events, persons)
        step()

        configured = {int(y): float(v) for y, v in params.lines.items()}
        if append and (out / OUTPUT_FILES["report"]).exists():
            # lines that an earlier run took from a 监测线.csv stay in force
            prev = json.loads((out / OUTPUT_FILES["report"]).read_text(encoding="utf-8"))
            for y, v in prev.get("monitoring_lines", {}).items():
                if v.get("source") != "params.yaml":
                    configured[int(y)] = float(v["line"])
        lines, lines_q, _ = tb.build_lines(prepared["lines"], configured)
        oracle = tb.build_oracle(prepared["oracle"]) if prepared["oracle"] else None
        step()

        quarantine = pd.concat(
            [p.quarantine for ps in prepared.values() for p in ps] + [lb.quarantine, lines_q],
            ignore_index=True)
        report = _report(prepared, entries, errors, skipped, quarantine, lb, new_events, events, ev_findings,
                         persons, households, lines, out, append)
        step()
        _write(out, persons, households, events, lines, oracle, quarantine, report, append)
        step()
    finally:
        if prog:
            prog.stop()
    log.info("ingest: %d rows read, %d accepted, %d quarantined, %d file errors",
             report.rows_read, report.rows_accepted, report.rows_quarantined, len(report.errors))
    return report


def _report(prepared, entries, errors, skipped, quarantine, lb, new_events, events, ev_findings,
            persons, households, lines, out, append) -> IngestReport:
    q_rows = quarantine.drop_duplicates(["file", "row"])["file"].value_counts().to_dict()
    accepted_by_file: dict[str, int] = {}
    accepted_by_file.update(lb.persons["source_file"].value_counts().to_dict() if len(lb.persons) else {})
    if len(new_events):
        accepted_by_file.update(new_events["source_file"].value_counts().to_dict())
    dup_lines = quarantine.loc[quarantine["code"] == "duplicate_line", "file"].value_counts()
    for kind in ("lines", "oracle"):
        for p in prepared[kind]:
            accepted_by_file[p.source_file] = len(p.accepted) - int(dup_lines.get(p.source_file, 0))
    by_kind: dict[str, dict] = {}
    for e in entries:
        if e["status"] != "ok":
            continue
        e["rows_quarantined"] = int(q_rows.get(e["file"], 0))
        e["rows_accepted"] = int(accepted_by_file.get(e["file"], 0))
        if e["kind"] == "ledger":
            e["duplicate_person_rows"] = int(lb.duplicates_by_file.get(e["file"], 0))
        k = by_kind.setdefault(e["kind"], {"files": 0, "rows_read": 0, "rows_accepted": 0, "rows_quarantined": 0})
        k["files"] += 1
        for c in ("rows_read", "rows_accepted", "rows_quarantined"):
            k[c] += e[c]
    findings = [f.to_dict() for f in lb.findings] + [f.to_dict() for f in ev_findings]
    years_needed = sorted({int(q[:4]) for q in persons["quarter"].unique()}) if len(persons) else []
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
    rep = IngestReport(
        rows_read=sum(e.get("rows_read", 0) for e in entries if e["status"] == "ok"),
        rows_accepted=sum(e["rows_accepted"] for e in entries if e["status"] == "ok"),
        rows_quarantined=sum(e["rows_quarantined"] for e in entries if e["status"] == "ok"),
        duplicate_person_rows=sum(lb.duplicates_by_file.values()),
        invalid_id_numbers=lb.invalid_ids,
        events_read=by_kind.get("events", {}).get("rows_read", 0),
        events_accepted=len(new_events),
        events_unmatched=len(new_events) - ev_new_matched,
        persons=len(persons), households=len(households), events=len(events),
        quarters=sorted(persons["quarter"].unique().tolist(), key=lambda q: (q[:4], q[5:])) if len(persons) else [],
        monitoring_lines={str(y): v for y, v in lines.items()},
        by_kind=by_kind, files=entries, errors=errors, skipped=skipped, findings=findings,
        quarantine_by_reason=qbr.to_dict("records"),
        out_dir=str(out), append=append, created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return rep


# Rows per Parquet row group. Readers that stream a table (batch scoring's partition pass) decode a
# row group at a time, so this bounds their memory; pyarrow's default (1 Mi rows) made a
# 1M-household county's pass peak at ~3.5 GB.
ROW_GROUP_ROWS = 131_072


def _write(out: Path, persons, households, events, lines, oracle, quarantine, report, append) -> None:
    persons.to_parquet(out / OUTPUT_FILES["persons"], index=False, row_group_size=ROW_GROUP_ROWS)
    households.to_parquet(out / OUTPUT_FILES["households"], index=False, row_group_size=ROW_GROUP_ROWS)
    events.to_parquet(out / OUTPUT_FILES["events"], index=False, row_group_size=ROW_GROUP_ROWS)
    if oracle is not None:
        oracle.to_parquet(out / OUTPUT_FILES["oracle"], index=False, row_group_size=ROW_GROUP_ROWS)
    # flat {"year": yuan} (docs/data-model.md); where each came from is in the report
    (out / OUTPUT_FILES["lines"]).write_text(json.dumps(
        {str(y): v["line"] for y, v in lines.items()}, ensure_ascii=False, indent=2), encoding="utf-8")
    qpath = out / OUTPUT_FILES["quarantine"]
    q = quarantine[tb.QUARANTINE_COLUMNS]
    if append and qpath.exists():
        prev = pd.read_csv(qpath, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        q = pd.concat([prev, q.astype(str)], ignore_index=True).drop_duplicates()
    # UTF-8 with BOM and CRLF: opens correctly in Excel on Chinese Windows; cells holding \r or \n
    # (they occur in broken exports) are quoted because both are in the line terminator
    q.to_csv(qpath, index=False, encoding="utf-8-sig", lineterminator="\r\n")
    (out / OUTPUT_FILES["report"]).write_text(
        json.dumps(report.to_dict(), ensure_ascii=False, indent=2, default=_json_default), encoding="utf-8")


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
