"""The read-back's vector filter (pipelines.readback._may_change) drops only targets that
pipelines.readback.match leaves as they are: on generated ledgers of every state, each target
match changes is kept, and most of a scoring run's own new warnings (no later row) are dropped."""

from __future__ import annotations

import random
from datetime import date

import pandas as pd

from fangpin import quarters as fq
from fangpin.config import Params
from fangpin.warnings import STATUS_EXCLUDED, STATUS_OPEN
from pipelines.labels import newly_identified_at
from pipelines.readback import COLUMNS, _may_change, match

STATES = [
    {},
    {"monitor_category": "边缘易致贫户", "monitor_since": 202405, "risk_eliminated": False},
    {"monitor_category": "脱贫不稳定户", "monitor_since": 202201, "risk_eliminated": True, "eliminated_at": 202312},
    {"monitor_category": "突发严重困难户", "monitor_since": 202404, "risk_eliminated": None},
    {"monitor_category": "", "risk_eliminated": True},
    {"monitor_category": "边缘易致贫户", "monitor_since": 202406, "risk_eliminated": False,
     "support_health": "城乡居民基本医疗保险个人缴费补贴"},
]


def _ledger(rng: random.Random, n: int, quarters: list[int]) -> pd.DataFrame:
    rows = []
    for i in range(n):
        county = "甲县" if i % 3 else "乙县"
        for q in quarters:
            if rng.random() < 0.15:
                continue  # a household missing from a quarter
            row = dict.fromkeys(COLUMNS)
            row.update(household_id=f"H{i:04d}", county=county, township="东镇", village="一村", quarter=fq.from_index(q),
                       quarter_idx=q, **rng.choice(STATES))
            rows.append(row)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["ident_q"] = newly_identified_at(df)
    return df.sort_values(["county", "household_id", "quarter_idx"], kind="stable").reset_index(drop=True)


def _rows(df: pd.DataFrame, county: str, hid: str) -> list[dict]:
    from pipelines.common import records

    out = records(df[(df["county"] == county) & (df["household_id"] == hid)])
    for r in out:
        r["ident_q"] = None if r["ident_q"] is None else int(r["ident_q"])
        r["risk_eliminated"] = None if r["risk_eliminated"] is None else bool(r["risk_eliminated"])
    return out


def test_every_target_match_would_change_is_kept():
    rng = random.Random(7)
    quarters = [fq.to_index(q) for q in ("2024Q1", "2024Q2", "2024Q3", "2024Q4")]
    df = _ledger(rng, 300, quarters)
    targets = [{"id": f"W{i}", "quarter": fq.from_index(rng.choice(quarters)), "county": "甲县" if i % 3 else "乙县",
                "household_id": f"H{i % 320:04d}", "status": rng.choice([STATUS_OPEN, STATUS_EXCLUDED]),
                "loop_id": None, "run_id": None, "township": "东镇", "village": "一村", "level": "黄"}
               for i in range(400)]
    kept = {t["id"] for t in _may_change(targets, df)}
    changed = {t["id"] for t in targets
               if match(t, _rows(df, t["county"], t["household_id"]), date(2025, 1, 10), Params()) is not None}
    assert changed and changed <= kept
    assert len(kept) < len(targets)  # a filter: targets of the newest quarter without return risk go


def test_a_scoring_runs_own_warnings_without_return_risk_are_dropped():
    q = fq.to_index("2024Q4")
    df = _ledger(random.Random(3), 50, [q - 1, q])
    targets = [{"id": f"W{i}", "quarter": "2024Q4", "county": "甲县" if i % 3 else "乙县", "household_id": f"H{i:04d}",
                "status": STATUS_OPEN, "loop_id": None, "run_id": None} for i in range(50)]
    kept = _may_change(targets, df)
    newest = df[df["quarter_idx"] <= q].drop_duplicates(["county", "household_id"], keep="last")
    risky = {(r.county, r.household_id) for r in newest.itertuples()
             if r.monitor_category and r.risk_eliminated is True}
    assert {(t["county"], t["household_id"]) for t in kept} == risky
