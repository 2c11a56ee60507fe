"""Read back from the next export: what the national system's ledger now says of every warning.

fangpin does not replace the national system's record: identification, support and elimination
are recorded there and come back in every quarterly export. When an export is ingested
(``fangpin score``, ``fangpin retrain``, or ``fangpin readback`` on its own), each warning whose
loop is not finished is matched to its household's rows in the ledgers after the warning's
quarter (fangpin/clues.py, ledger outcomes):

- **identified** (已识别): a later snapshot shows the household newly identified — the labels'
  own definition (pipelines.labels.newly_identified_at: 监测对象类别 set, 风险是否已消除 not 是,
  识别监测时间 after the warning's quarter). The warning is closed as 已核实·纳入监测; a cadre's
  排除 is overruled (the ledger wins) and the conflict listed for the county. The support plan is
  due ``warnings.support_plan`` after this read-back.
- **supported** (已帮扶): from the identification on, a 帮扶 column holds a measure the household
  did not have at the warning's quarter.
- **eliminated** (已消除): from the identification on, 风险是否已消除 = 是 (消除监测时间 kept).
- **nothing** (未见变化): later snapshots exist and show none of these.

A warning of a household the ledger shows eliminated at the warning's quarter (a monitoring object
with 风险是否已消除 = 是: in scope, so scored every quarter) is marked 返贫风险; identified again,
it is a 返贫 case. Each household that is or was a monitoring object keeps its newest state in
the store (``household_ledger``): clue and event warnings are marked 返贫风险 from it.

Idempotent: reading the same export again changes nothing (dates of first sight are kept).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from fangpin import clues as fc
from fangpin import quarters as fq
from fangpin.contract import SUPPORT_HEADERS
from fangpin.warnings import STATUS_EXCLUDED, STATUS_INCLUDED, STATUS_OPEN, local_date
from pipelines.common import records

log = logging.getLogger(__name__)
SUPPORT_COLUMNS = tuple(SUPPORT_HEADERS.values())
COLUMNS = ("household_id", "county", "township", "village", "quarter", "quarter_idx", "monitor_category",
           "monitor_since", "risk_eliminated", "eliminated_at", *SUPPORT_COLUMNS)


def _support(row: dict) -> set[tuple[str, str]]:
    return {(c, str(row[c]).strip()) for c in SUPPORT_COLUMNS if row.get(c) is not None and str(row[c]).strip()}


def _int(v) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def match(target: dict, rows: list[dict], today: date, params) -> dict | None:
    """The loop of one warning after reading its household's ledger rows (``rows``: every snapshot
    of the household, ascending, each with ``ident_q`` from pipelines.labels.newly_identified_at).
    Returns the change to write (``apply_readback``'s form), or None when nothing changes."""
    from fangpin.store.loop import _loop_defaults, origin_of_run

    q = fq.to_index(target["quarter"])
    existed = target.get("loop_id") is not None
    now = datetime.now(UTC)
    keys = [k for k in _loop_defaults("", now) if k != "warning_id"]
    loop = ({k: target[k] for k in keys} | {"warning_id": target["id"]} if existed
            else _loop_defaults(target["id"], now, origin_of_run(target.get("run_id"))))
    new = dict(loop)
    base = [r for r in rows if r["quarter_idx"] <= q]
    later = [r for r in rows if r["quarter_idx"] > q]
    b = base[-1] if base else None
    if b is not None and fc.is_return_risk(b["monitor_category"], b["risk_eliminated"]):
        new["return_risk"] = True
    status, reason = None, None
    if later:
        new["readback_quarter"] = later[-1]["quarter"]
        hit = next((r for r in later if r["ident_q"] is not None and r["ident_q"] > q), None)
        outcome = fc.NOTHING
        if hit is not None:
            outcome = fc.IDENTIFIED
            month = _int(hit["monitor_since"])
            if new["identified_at"] is None:
                new.update(identified_at=today, identified_quarter=hit["quarter"], identified_month=month,
                           support_due=fc.step_deadline(params.warnings.support_plan, today, params.warnings))
            after = [r for r in later if r["quarter_idx"] >= hit["quarter_idx"]]
            had = _support(b) if b is not None else set()
            supp = next((r for r in after if _support(r) - had), None)
            if supp is not None:
                outcome = fc.SUPPORTED
                if new["support_at"] is None:
                    new.update(support_at=today, support_source="ledger")
            elim = next((r for r in after if r["risk_eliminated"] is True and r["monitor_category"]), None)
            if elim is not None:
                outcome = fc.ELIMINATED
                new.update(eliminated_quarter=elim["quarter"], eliminated_month=_int(elim["eliminated_at"]))
            said = f"{hit['quarter']} 台账显示已识别为监测对象（识别监测时间 {month or '未填'}）"
            if target["status"] == STATUS_OPEN:
                status, reason = STATUS_INCLUDED, said
            elif target["status"] == STATUS_EXCLUDED:
                status, reason = STATUS_INCLUDED, f"{said}，以台账为准"
                new["conflict"] = f"干部核实为“{STATUS_EXCLUDED}”，{said}：以台账为准"
            if status is not None and new["verified_at"] is None:
                new["verified_at"] = today
        new["ledger_outcome"] = outcome
    changed = {k: v for k, v in new.items() if k != "updated_at" and loop.get(k) != v}
    if not changed and status is None:
        return None
    new["updated_at"] = now
    return {"warning_id": target["id"], "loop": new, "loop_existed": existed, "status": status,
            "from_status": target["status"], "reason": reason, "household_id": target["household_id"]}


def _may_change(targets: list[dict], df: pd.DataFrame) -> list[dict]:
    """The targets :func:`match` can change: those whose household has a ledger row after the
    warning's quarter, or whose newest row up to it shows 返贫风险. For any other, ``match`` finds
    nothing to write (no later row: no outcome; no return risk: its loop stays as it is) — most of
    a scoring run's targets are its own new warnings, with no later row. Vectorised over ``df``
    (the targets' ledger rows)."""
    if not targets:
        return []
    t = pd.DataFrame({"county": [x["county"] for x in targets], "household_id": [x["household_id"] for x in targets],
                      "q": [fq.to_index(x["quarter"]) for x in targets]})
    t["_t"] = np.arange(len(t))
    rr = fc.return_risk_rows(df["monitor_category"], df["risk_eliminated"])
    rows = df[["county", "household_id", "quarter_idx"]].assign(rr=rr)
    m = t.merge(rows, on=["county", "household_id"], how="inner")
    later = m.loc[m["quarter_idx"] > m["q"], "_t"].unique()
    base = m[m["quarter_idx"] <= m["q"]].sort_values(["_t", "quarter_idx"]).drop_duplicates("_t", keep="last")
    keep = np.zeros(len(t), dtype=bool)
    keep[later] = True
    keep[base.loc[base["rr"], "_t"].to_numpy()] = True
    return [x for x, k in zip(targets, keep.tolist(), strict=True) if k]


def _tables(dirs: list[Path], columns, flt):
    """The households rows of several ingested folders (a county's history and a new export), a
    quarter of a later folder replacing the same quarter of an earlier one."""
    from pipelines.partition import dataset

    parts = []
    for i, d in enumerate(dirs):
        ds = dataset(Path(d), "households")
        if ds is None:
            continue
        cols = [c for c in columns if c in ds.schema.names]
        t = ds.to_table(columns=cols, filter=flt).to_pandas()
        for c in columns:
            if c not in t.columns:
                t[c] = None
        parts.append(t.assign(_src=i))
    if not parts:
        from fangpin.errors import no_ingest_output

        raise no_ingest_output(Path(dirs[-1]))
    df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    if len(parts) > 1:
        newest = df.groupby("quarter_idx")["_src"].transform("max")
        df = df[df["_src"] == newest]
    return df.drop(columns="_src").reset_index(drop=True)


def read_back(store, ingested, params, *, now: datetime | None = None) -> dict:
    """Match the store's unfinished warnings to the ingested ledger (``ingested``: a folder of
    canonical tables, or a list of them — the county's history, then a new export) and write what
    it says (module doc). Returns the counts."""
    import pyarrow.dataset as pds

    from fangpin.store import loop as sl
    from pipelines.labels import newly_identified_at

    now = now or datetime.now(UTC)
    today = local_date(now)
    dirs = [Path(d) for d in (ingested if isinstance(ingested, (list, tuple)) else [ingested])]
    quarters = _tables(dirs, ["quarter_idx"], None)["quarter_idx"]
    max_q = int(quarters.max())
    targets = sl.readback_targets(store, fq.from_index(max_q))
    changes = []
    if targets:
        wanted = sorted({t["household_id"] for t in targets})
        from_q = min(fq.to_index(t["quarter"]) for t in targets) - 4
        df = _tables(dirs, COLUMNS, pds.field("household_id").isin(wanted) & (pds.field("quarter_idx") >= from_q))
        df["ident_q"] = newly_identified_at(df)
        df = df.sort_values(["county", "household_id", "quarter_idx"], kind="stable")
        targets_m = _may_change(targets, df)
        df = df[df.set_index(["county", "household_id"]).index.isin(
            {(t["county"], t["household_id"]) for t in targets_m})]
        by: dict[tuple[str, str], list[dict]] = {}
        for r in records(df):
            r["ident_q"] = None if r["ident_q"] is None else int(r["ident_q"])
            r["risk_eliminated"] = None if r["risk_eliminated"] is None else bool(r["risk_eliminated"])
            by.setdefault((r["county"], r["household_id"]), []).append(r)
        for t in targets_m:
            ch = match(t, by.get((t["county"], t["household_id"]), []), today, params)
            if ch is not None:
                changes.append(ch)
    latest = _tables(dirs, ["county", "township", "village", "household_id", "quarter", "quarter_idx",
                            "monitor_category", "monitor_since", "risk_eliminated", "eliminated_at"],
                     (pds.field("quarter_idx") == max_q) & pds.field("monitor_category").is_valid())
    ledger_rows = [{"county": r["county"], "household_id": r["household_id"], "township": r["township"],
                    "village": r["village"], "quarter": r["quarter"], "monitor_category": r["monitor_category"],
                    "monitor_since": _int(r["monitor_since"]),
                    "risk_eliminated": None if r["risk_eliminated"] is None else bool(r["risk_eliminated"]),
                    "eliminated_at": _int(r["eliminated_at"]), "updated_at": now}
                   for r in records(latest)]
    written = sl.apply_readback(store, changes, ledger_rows, now=now)
    counts = {
        "export_quarter": fq.from_index(max_q),
        "warnings_matched": len(targets),
        "loops_changed": len(changes),
        "closed_by_ledger": sum(1 for c in changes if c["status"] and c["from_status"] == STATUS_OPEN),
        "conflicts": sum(1 for c in changes if c["status"] and c["from_status"] == STATUS_EXCLUDED),
        "identified": sum(1 for c in changes if c["loop"]["ledger_outcome"] in (fc.IDENTIFIED, fc.SUPPORTED,
                                                                                 fc.ELIMINATED)),
        "eliminated": sum(1 for c in changes if c["loop"]["ledger_outcome"] == fc.ELIMINATED),
        "return_risk": sum(1 for c in changes if c["loop"]["return_risk"]),
        "households_state": written["households"],
    }
    if changes:
        store.audit_append(key_id=None, endpoint="readback", household_ids=[c["household_id"] for c in changes],
                           outcome=f"readback:{counts['export_quarter']}:{len(changes)}")
    log.info("read-back %s: %d warnings matched, %d changed (%d closed by the ledger, %d conflicts)",
             counts["export_quarter"], counts["warnings_matched"], counts["loops_changed"], counts["closed_by_ledger"],
             counts["conflicts"])
    return counts
