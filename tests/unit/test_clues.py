"""The clue definitions: channels declared once, people's floors, the village check, each step's
deadline and the step a warning waits on."""

from __future__ import annotations

from datetime import date
from typing import get_args

from fangpin import clues as fc
from fangpin.config import load_params
from fangpin.contract import CLUE_CHANNELS


def test_channels_are_the_contracts():
    assert fc.CHANNELS == CLUE_CHANNELS == get_args(fc.Channel)
    assert fc.ORIGINS == (fc.SCREENING, *CLUE_CHANNELS)


def test_people_channels_are_always_a_warning_others_follow_the_score():
    p = load_params()
    assert fc.warning_level(None, fc.SELF_APPLICATION, p) == "红"
    assert fc.warning_level(None, fc.PUBLIC, p) == "红"
    assert fc.warning_level(None, fc.CADRE, p) is None
    assert fc.warning_level("黄", fc.DEPARTMENT, p) == "黄"
    assert fc.warning_level("黄", fc.SELF_APPLICATION, p) == "红"


def test_deadlines_of_every_step():
    p = load_params()
    received = date(2025, 3, 3)  # a Monday
    assert fc.verification_due("红", fc.SELF_APPLICATION, received, p) == date(2025, 3, 5)  # village check: 2 days
    assert fc.verification_due("红", fc.PUBLIC, received, p) == date(2025, 3, 18)  # 15 days
    assert fc.verification_due("蓝", fc.CADRE, received, p) == date(2025, 9, 2)  # the half-yearly review
    w = p.warnings
    # 20 working days from 2025-04-25 (Fri): the May Day holiday (May 1–5) and its 调休 Sunday 04-27
    assert fc.step_deadline(w.decision, date(2025, 4, 25), w) == date(2025, 5, 27)
    # 10 working days from 2025-09-26 (Fri): 调休 Sunday 09-28, National Day Oct 1–8, 调休 Saturday 10-11
    assert fc.step_deadline(w.support_plan, date(2025, 9, 26), w) == date(2025, 10, 16)


def test_the_step_a_warning_waits_on():
    today = date(2025, 3, 10)
    s = fc.current_step("待核实", date(2025, 3, 8), None, today)
    assert (s.name, s.overdue, s.text) == (fc.VERIFICATION, True, "已逾期 2 天")
    s = fc.current_step("已核实·纳入监测", date(2025, 3, 8), {"decision_due": date(2025, 3, 12)}, today)
    assert (s.name, s.text) == (fc.DECISION, "剩 2 天")
    loop = {"identified_at": date(2025, 3, 1), "support_due": date(2025, 3, 10)}
    assert fc.current_step("已核实·纳入监测", date(2025, 3, 8), loop, today).text == "今天到期"
    assert fc.current_step("已核实·纳入监测", date(2025, 3, 8), {**loop, "support_at": today}, today) is None
    assert fc.current_step("已核实·排除", date(2025, 3, 8), None, today) is None
