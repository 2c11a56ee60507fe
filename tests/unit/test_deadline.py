"""Verification deadlines and status transitions of the warning record."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from fangpin.config import Params
from fangpin.ids import check_char
from fangpin.warnings import (
    STATUS_EXCLUDED,
    STATUS_INCLUDED,
    STATUS_OPEN,
    VerificationError,
    WarningRecord,
    check_transition,
    deadline,
    local_date,
    warning_id,
)

FAKE_ID = "41010119900307123" + check_char("41010119900307123")  # a generated 18-character ID


def test_calendar_days_by_default():
    assert deadline(date(2025, 9, 26), 15) == date(2025, 10, 11)
    assert deadline(date(2024, 2, 20), 15) == date(2024, 3, 6)  # leap year
    with pytest.raises(ValueError):
        deadline(date(2025, 1, 1), 0)


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        # National Day 2025: Oct 1-8 off; Sun Sep 28 and Sat Oct 11 are make-up workdays (调休)
        (date(2025, 9, 26), 1, date(2025, 9, 28)),
        (date(2025, 9, 26), 15, date(2025, 10, 23)),
        # an ordinary fortnight: 10 working days from Monday 2025-06-09 → Monday 2025-06-23
        (date(2025, 6, 9), 10, date(2025, 6, 23)),
        # Spring Festival 2026 (Feb 15-23 off, Sat Feb 14 and Sat Feb 28 worked)
        (date(2026, 2, 13), 2, date(2026, 2, 24)),
        (date(2026, 2, 12), 1, date(2026, 2, 13)),
    ],
)
def test_working_days_follow_the_official_calendar(start, days, expected):
    assert deadline(start, days, working_days=True) == expected


def test_local_date_is_china_time():
    assert local_date(datetime(2025, 3, 31, 17, 0, tzinfo=UTC)) == date(2025, 4, 1)
    assert local_date(datetime(2025, 3, 31, 15, 0)) == date(2025, 3, 31)  # naive = UTC


def _fields(**kw):
    base = dict(quarter="2025Q3", county="甲县", township="东镇", village="一村", household_id="H1",
                head_name="张三", id_masked="4101**********123X", level="红", probability=0.42,
                model_version="3", ruleset_version="rules-2026.1")
    base.update(kw)
    return base


def test_create_uses_params_for_deadline_and_a_stable_id():
    created = datetime(2025, 9, 25, 20, 0, tzinfo=UTC)  # 2025-09-26 in Beijing
    cal = WarningRecord.create(params=Params(), created_at=created, **_fields())
    assert cal.deadline == date(2025, 10, 11) and cal.status == STATUS_OPEN
    wd = Params.model_validate({"warnings": {"working_days": True}})
    assert WarningRecord.create(params=wd, created_at=created, **_fields()).deadline == date(2025, 10, 23)
    assert cal.id == warning_id("2025Q3", "H1", "3") != warning_id("2025Q3", "H1", "4")
    assert cal.is_overdue(date(2025, 10, 12)) and not cal.is_overdue(date(2025, 10, 11))


def test_deadlines_follow_the_level_and_say_which_list():
    from fangpin.warnings import visit_list

    created = datetime(2025, 9, 25, 20, 0, tzinfo=UTC)  # 2025-09-26 in Beijing
    p = Params()
    due = {lvl: WarningRecord.create(params=p, created_at=created, **_fields(level=lvl)).deadline
           for lvl in ("红", "黄", "蓝")}
    # 红: home verification within 15 days; 黄: the next monthly visit; 蓝: the half-yearly review
    assert due == {"红": date(2025, 10, 11), "黄": date(2025, 10, 27), "蓝": date(2026, 3, 28)}
    w = p.warnings
    assert visit_list("红", w) == "入户核实（15日内）" and visit_list("黄", w) == "月度走访"
    assert visit_list("蓝", w) == "半年复核" and "顺延" in visit_list("黄", w, deferred=True)


def test_record_refuses_full_ids_and_too_many_reasons():
    with pytest.raises(ValidationError, match="masked"):
        WarningRecord.create(params=Params(), **_fields(id_masked=FAKE_ID))
    with pytest.raises(ValidationError, match="full ID"):
        WarningRecord.create(params=Params(), **_fields(head_name=f"张三 {FAKE_ID}"))
    reason = {"factor": "income", "text": "人均纯收入5,800元", "direction": "up", "logodds": 0.5, "prob_pp": 4.0}
    with pytest.raises(ValidationError):
        WarningRecord.create(params=Params(), **_fields(reasons=[reason] * 5))
    with pytest.raises(ValidationError):
        WarningRecord.create(params=Params(), **_fields(level="紫"))
    ok = WarningRecord.create(params=Params(), **_fields(reasons=[reason] * 4, quarter="2025q3"))
    assert ok.quarter == "2025Q3" and len(ok.reasons) == 4


def test_transitions():
    check_transition(STATUS_OPEN, STATUS_INCLUDED)
    check_transition(STATUS_OPEN, STATUS_EXCLUDED, "收入稳定超线")
    with pytest.raises(VerificationError, match="原因"):
        check_transition(STATUS_OPEN, STATUS_EXCLUDED, "  ")
    for closed in (STATUS_INCLUDED, STATUS_EXCLUDED):
        for new in (STATUS_OPEN, STATUS_INCLUDED, STATUS_EXCLUDED):
            with pytest.raises(VerificationError):
                check_transition(closed, new, "x")
    with pytest.raises(VerificationError, match="未知"):
        check_transition(STATUS_OPEN, "已走访")


def test_one_level_order_ranks_both_ways():
    """LEVELS (most urgent first) is the one order: the store's sort rank and the severity the
    models compare come from it and agree."""
    from fangpin.warnings import LEVEL_RANK, LEVELS, severity
    from models.levels import from_rank, rank

    assert LEVELS == ("红", "黄", "蓝")
    assert [severity(lvl) for lvl in LEVELS] == [3, 2, 1] and severity(None) == severity("x") == 0
    assert sorted(["蓝", "红", "黄"], key=LEVEL_RANK.__getitem__) == list(LEVELS)
    assert rank(["红", None, "蓝", "黄"]).tolist() == [3, 0, 1, 2]
    assert from_rank(rank(list(LEVELS))).tolist() == list(LEVELS)
