"""Clues in the store (SQLite and PostgreSQL), through fangpin.store.loop.record_clue with the
scoring given: a self-application scored at 0.001 (no level from the model or the rules) is a 红
warning due in 2 days; a clue without a floor below every level is recorded, not warned; a clue for
a household with an open warning joins it; a duplicate of an open clue is merged; a batch re-run
keeps a clue's warning and its people floor."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from seed_warnings import record_tables

from fangpin import clues as fc
from fangpin.config import load_params
from fangpin.store import Store
from fangpin.store.loop import ClueIn, Scored, loops, query_clues, record_clue
from fangpin.warnings import WarningRecord

NOW = datetime(2025, 3, 3, 2, tzinfo=UTC)  # Monday 2025-03-03, China time 10:00


@pytest.fixture
def store(db_url):
    s = Store(db_url, b"s", migrate=True)
    yield s
    s.dispose()


def _record(params, hid: str, level: str, quarter: str = "2025Q1", probability: float = 0.001, created=NOW):
    return WarningRecord.create(params=params, created_at=created, quarter=quarter, county="青石县", township="兴兴镇",
                                village="康沟村", household_id=hid, level=level, probability=probability,
                                model_version="7", ruleset_version="rules-2026.1")


def _clue(channel: str, hid: str | None, text: str = "申请纳入监测") -> ClueIn:
    return ClueIn(channel=channel, county="青石县", township="兴兴镇", village="康沟村", household_id=hid, person_key=None,
                  id_masked=None, text=text, received_by="李娜", received_at=NOW, key_id=None, source="api")


def test_self_application_at_0_001_is_a_red_warning_and_duplicates_merge(store):
    p = load_params()
    scored = Scored(in_scope=True, level=None, probability=0.001, reasons=[],
                    candidate=_record(p, "H1", "红"))  # the candidate at the clue's level (the floor)
    res = record_clue(store, _clue(fc.SELF_APPLICATION, "H1"), scored, p, NOW)
    assert (res.outcome, res.level, res.deadline) == (fc.CREATED, "红", date(2025, 3, 5))
    w = store.get_warning(res.warning_id)
    assert (w.level, w.probability, w.deadline, w.status) == ("红", 0.001, date(2025, 3, 5), "待核实")
    # the same channel again while the warning is open: merged into the clue, never repeated
    dup = record_clue(store, _clue(fc.SELF_APPLICATION, "H1", "再次申请"), scored, p, NOW)
    assert (dup.outcome, dup.clue_id, dup.repeats, dup.created) == (fc.MERGED, res.clue_id, 1, False)
    assert query_clues(store, household_id="H1")[1] == 1
    assert loops(store, [w.id])[w.id]["clues"] == 2
    # a cadre's screening without a floor, below every level: recorded with its reasons, no warning
    low = Scored(in_scope=True, level=None, probability=0.001, reasons=[])
    nw = record_clue(store, _clue(fc.CADRE, "H2"), low, p, NOW)
    assert (nw.outcome, nw.warning_id) == (fc.NOT_WARNED, None)
    assert store.query_warnings(household_id="H2").total == 0


def test_a_clue_joins_the_open_warning_and_a_batch_rerun_keeps_it(store):
    p = load_params()
    batch = [_record(p, "H3", "蓝", quarter="2025Q1", probability=0.02),
             _record(p, "H4", "黄", quarter="2025Q1", probability=0.03)]
    store.write_quarter_tables(record_tables(batch), "2025Q1", "7")
    scored = Scored(in_scope=True, level="蓝", probability=0.02, reasons=[], candidate=_record(p, "H3", "红"))
    res = record_clue(store, _clue(fc.PUBLIC, "H3"), scored, p, NOW)
    assert (res.outcome, res.warning_id, res.level) == (fc.JOINED, batch[0].id, "红")
    assert store.query_warnings(household_id="H3").total == 1  # joined, not a second warning
    lp = loops(store, [batch[0].id])[batch[0].id]
    assert (lp["origin"], lp["channels"], lp["floor_level"]) == (fc.SCREENING, [fc.SCREENING, fc.PUBLIC], "红")
    # a self-application for H5, then the batch re-runs 2025Q1 without H5 and with H3 at 蓝 again
    cand = _record(p, "H5", "红")
    made = record_clue(store, _clue(fc.SELF_APPLICATION, "H5"), Scored(True, None, 0.001, [], cand), p, NOW)
    assert made.outcome == fc.CREATED
    store.write_quarter_tables(record_tables(batch), "2025Q1", "7")
    assert store.get_warning(made.warning_id) is not None  # a clue's warning stays until verified
    assert store.get_warning(batch[0].id).level == "红"  # the people floor survives the refresh
    assert store.get_warning(batch[1].id).level == "黄"


def test_a_level_an_event_raised_survives_a_batch_rerun_that_does_not_know_the_event(store):
    """POST /v1/events re-scores a household with the department's event and raises its open
    warning (then records the event as a 部门预警 clue); the quarter's batch, re-run from the
    ledger export without that event, must neither remove the warning nor lower its level."""
    import dataclasses

    p = load_params()
    batch = [_record(p, "H6", "蓝", quarter="2025Q1", probability=0.02)]
    store.write_quarter_tables(record_tables(batch), "2025Q1", "7")
    ev = dataclasses.replace(_clue(fc.DEPARTMENT, "H6", "医保：大额医疗支出（2025-02-20，52,000元）"), source="event")
    res = record_clue(store, ev, Scored(in_scope=True, level="红", probability=0.2, reasons=[],
                                        candidate=_record(p, "H6", "红", probability=0.2)), p, NOW)
    assert (res.outcome, res.warning_id, res.level) == (fc.JOINED, batch[0].id, "红")
    store.write_quarter_tables(record_tables(batch), "2025Q1", "7")  # the export's view: 蓝
    w = store.get_warning(batch[0].id)
    assert w is not None and w.level == "红"
