"""Canonical frames from in-memory data (e.g. JSON posted to the scoring API)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fangpin.ingest import tables as tb


@dataclass
class CanonicalFrames:
    persons: pd.DataFrame
    households: pd.DataFrame
    events: pd.DataFrame
    quarantine: pd.DataFrame  # one line per problem, `file` = source label, `row` = record number
    findings: list[dict]


def canonical_frames(
    ledger: pd.DataFrame,
    events: pd.DataFrame | None,
    key: bytes,
    *,
    tolerance: float = 0.10,
    source: str = "api",
    quarter: str | None = None,
) -> CanonicalFrames:
    """Build persons/households/events exactly as ``fangpin ingest`` does, from frames whose
    columns are Chinese headers, their aliases, or canonical names. Any cell may be text or a
    number. ``quarter`` fills 统计季度 when the frame has no such column. Record numbers in the
    quarantine are 1-based positions in the input (``row`` = position + 1)."""

    def _text(df: pd.DataFrame) -> pd.DataFrame:
        t = df.reset_index(drop=True).astype(object).where(df.reset_index(drop=True).notna(), None)
        return t.astype("str").where(t.notna())

    led = ledger.copy()
    if quarter is not None and not any(c in led.columns for c in ("统计季度", "quarter")):
        led["quarter"] = quarter
    rows = pd.RangeIndex(1, len(led) + 1).to_numpy()
    p = tb.prepare(_text(led), [str(c) for c in led.columns], "ledger", source, rows=rows)
    lb = tb.build_ledger([p], key, tolerance)
    qs = [p.quarantine, lb.quarantine]
    findings = [f.to_dict() for f in lb.findings]
    ev_out = tb.empty_events()
    if events is not None and len(events):
        erows = pd.RangeIndex(1, len(events) + 1).to_numpy()
        pe = tb.prepare(_text(events), [str(c) for c in events.columns], "events", f"{source}:events", rows=erows)
        ev_out, ev_findings, _ = tb.join_households(tb.build_events([pe], key), lb.persons)
        qs.append(pe.quarantine)
        findings += [f.to_dict() for f in ev_findings]
    return CanonicalFrames(lb.persons, lb.households, ev_out, pd.concat(qs, ignore_index=True), findings)
