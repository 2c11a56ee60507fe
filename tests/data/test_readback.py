"""Read-back from the next export, through the CLI in a fresh working directory (SQLite and
PostgreSQL stores): the county's history is ingested, warnings of 2024Q1 are in the store (one
excluded by a cadre, one verified 纳入监测), then ``fangpin readback --ledger`` reads the 2024Q2
export. Households identified there close their warnings (the cadre's 排除 overruled and listed as a
conflict), support recorded in the 帮扶 columns meets the support plan, an eliminated household's
warning is marked 返贫风险 and, identified again, is a 返贫 case; a household with nothing new stays
open; reading the same export again changes nothing; a later batch warning of a household the
export shows eliminated is marked 返贫风险 at once."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from ingest_fixtures import H, household, write_csv
from pg_db import throwaway_pg_db
from seed_warnings import record_tables
from typer.testing import CliRunner

from fangpin import clues as fc
from fangpin.cli import app
from fangpin.config import load_params
from fangpin.store import Store
from fangpin.store.loop import conflicts, loops, verified_hook
from fangpin.warnings import STATUS_EXCLUDED, STATUS_INCLUDED, STATUS_OPEN, WarningRecord
from pipelines.common import rooted

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
HH = {k: f"52012200100{i:04d}" for i, k in enumerate("ABCDEFG", start=1)}
SUPPORT = H("support_health")


def _ledger(quarter: str, states: dict[str, dict]) -> list[dict]:
    rows = []
    for k, hid in HH.items():
        over = {"quarter": quarter, **states.get(k, {})}
        rows += household(hid, 2, **over)
    return rows


MONITORED_Q2 = {"monitor_category": "边缘易致贫户", "monitor_since": "202405", "risk_eliminated": "否"}
Q1 = {"C": {"household_type": "脱贫户", "monitor_category": "脱贫不稳定户", "monitor_since": "202201",
            "risk_eliminated": "是", "eliminated_at": "202312", "elimination_mode": "帮扶消除"}}
Q2 = {
    "A": MONITORED_Q2,
    "B": MONITORED_Q2,
    "C": {"monitor_category": "脱贫不稳定户", "monitor_since": "202406", "risk_eliminated": "否"},  # 返贫
    "E": {**MONITORED_Q2, "support_health": "城乡居民基本医疗保险个人缴费补贴"},
    "F": {"monitor_category": "突发严重困难户", "monitor_since": "202404", "risk_eliminated": "否"},
    "G": {"monitor_category": "脱贫不稳定户", "monitor_since": "202301", "risk_eliminated": "是",
          "eliminated_at": "202405"},
}


def _write(path: Path, rows: list[dict]) -> Path:
    headers = list(dict.fromkeys(h for r in rows for h in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_csv(path, rows, headers=headers)


def _warning(params, key: str, quarter: str, level: str = "红", created=datetime(2024, 4, 3, 2, tzinfo=UTC)):
    return WarningRecord.create(params=params, created_at=created, quarter=quarter, county="青石县", township="兴兴镇",
                                village="康沟村", household_id=HH[key], head_name="测试", level=level, probability=0.2,
                                model_version="3", ruleset_version="rules-2026.1")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield None  # the working directory's own SQLite file
        return
    with throwaway_pg_db() as url:
        yield url


def test_next_export_closes_identified_and_marks_return(tmp_path, monkeypatch, store_url):
    monkeypatch.setenv("FANGPIN_STATE_DIR", str(tmp_path / "state"))
    if store_url:
        monkeypatch.setenv("FANGPIN_STORE_URL", store_url)
    else:
        monkeypatch.delenv("FANGPIN_STORE_URL", raising=False)
    work = tmp_path / "county"
    q1 = _write(tmp_path / "export_q1" / "户成员台账_2024Q1.csv", _ledger("2024Q1", Q1))
    q2 = _write(tmp_path / "export_q2" / "户成员台账_2024Q2.csv", _ledger("2024Q2", Q2))
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", "--ledger", str(q1.parent), "--out", str(work / "data" / "ingested"),
                              "--params", str(PARAMS)])
    assert res.exit_code == 0, res.output

    p = rooted(load_params(PARAMS), work)
    store = Store.from_params(p)
    try:
        ws = {k: _warning(p, k, "2024Q1") for k in "ABCDE"}
        store.write_quarter_tables(record_tables(ws.values()), "2024Q1", "3")
        when = datetime(2024, 4, 10, 3, tzinfo=UTC)
        store.record_feedback(ws["B"].id, STATUS_EXCLUDED, actor="张伟", reason="收入稳定在监测线以上",
                              hook=verified_hook(p, when), visited_at=when)
        store.record_feedback(ws["E"].id, STATUS_INCLUDED, actor="张伟", hook=verified_hook(p, when), visited_at=when)
        e_loop = loops(store, [ws["E"].id])[ws["E"].id]
        # decision due 20 working days after the verification (2024-04-10), with the May-Day 调休
        assert e_loop["verified_at"] == date(2024, 4, 10) and e_loop["decision_due"] > date(2024, 5, 8)

        args = ["readback", "--ledger", str(q2.parent), "--workdir", str(work), "--params", str(PARAMS),
                "--today", "2024-07-10"]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        assert "2 closed by the ledger (identified), 1 conflicts" in res.output, res.output

        got = {k: store.get_warning(w.id) for k, w in ws.items()}
        lp = loops(store, [w.id for w in ws.values()])
        lp = {k: lp.get(w.id) for k, w in ws.items()}
        # identified in the export: closed as 纳入监测 by the ledger, support plan due 10 working days on
        assert got["A"].status == STATUS_INCLUDED and lp["A"]["ledger_outcome"] == fc.IDENTIFIED
        assert [f.actor for f in store.feedback_history(ws["A"].id)] == ["全国系统台账"]
        assert lp["A"]["identified_quarter"] == "2024Q2" and lp["A"]["identified_month"] == 202405
        assert lp["A"]["identified_at"] == date(2024, 7, 10) and lp["A"]["support_due"] == date(2024, 7, 24)
        # the cadre's 排除 overruled by the ledger, and listed for the county
        assert got["B"].status == STATUS_INCLUDED and "以台账为准" in lp["B"]["conflict"]
        assert [(f.from_status, f.to_status, f.actor) for f in store.feedback_history(ws["B"].id)] == [
            (STATUS_OPEN, STATUS_EXCLUDED, "张伟"), (STATUS_EXCLUDED, STATUS_INCLUDED, "全国系统台账")]
        assert [c["household_id"] for c in conflicts(store, county="青石县")] == [HH["B"]]
        # eliminated at the warning's quarter: 返贫风险; identified again: a 返贫 case
        assert lp["C"]["return_risk"] is True and got["C"].status == STATUS_INCLUDED
        assert lp["C"]["ledger_outcome"] == fc.IDENTIFIED
        assert not any(lp[k]["return_risk"] for k in "ABE" if lp[k])
        # nothing in the export: still open, to be verified
        assert got["D"].status == STATUS_OPEN and lp["D"]["ledger_outcome"] == fc.NOTHING
        # support recorded with the identification: the support plan met on the day
        assert got["E"].status == STATUS_INCLUDED and lp["E"]["ledger_outcome"] == fc.SUPPORTED
        assert lp["E"]["support_at"] == date(2024, 7, 10) and lp["E"]["support_source"] == "ledger"

        # the same export again: nothing changes
        res = runner.invoke(app, args[:-1] + ["2024-07-20"])
        assert res.exit_code == 0 and ", 0 changed;" in res.output, res.output
        assert loops(store, [ws["A"].id])[ws["A"].id]["support_due"] == date(2024, 7, 24)

        # a batch warning of 2024Q2 for G, eliminated in the export: 返贫风险 as it is written
        store.write_quarter_tables(record_tables([_warning(p, "G", "2024Q2", created=datetime(2024, 7, 12, tzinfo=UTC))]),
                                   "2024Q2", "3")
        g = store.query_warnings(household_id=HH["G"]).items[0]
        assert loops(store, [g.id])[g.id]["return_risk"] is True
    finally:
        store.dispose()
