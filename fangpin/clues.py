"""Clues from every channel and the loop after a warning: the one definition of the channels, of a
clue's outcome, of each step's deadline and of what the next export says.

Channels (domain.md): the five a county receives clues through (农户自主申报, 干部排查, 部门预警,
群众反映, 村级排查), and fangpin's own screening of the ledger (大数据筛查: the model and the
rules, batch scoring), which is the origin of every batch warning.

The loop of a warning, each step with its own deadline from ``params.warnings``:

1. **verification** (入户核实): the warning's ``deadline`` — by level (红 15 days, 黄 the next monthly
   visit, 蓝 the half-yearly review; fangpin.warnings.level_deadline), and for a channel of
   ``clues.village_check_channels`` (a self-application) at most ``warnings.village_check`` (2 days,
   Anhui's 一码申报) after the clue was received.
2. **decision** (认定): once a cadre records 已核实·纳入监测, the household is due to be identified in
   the national system within ``warnings.decision`` (20 working days); met when an export read back
   shows it identified (pipelines/readback.py).
3. **support plan** (帮扶计划): once an export shows the household identified, a support plan is due
   within ``warnings.support_plan`` (10 working days, Pinggui) of that read-back; met when a cadre
   records it or an export shows new support measures (the 帮扶 columns).

Every deadline comes from :func:`fangpin.warnings.deadline` (calendar or working days with 调休).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from fangpin.contract import CLUE_CHANNELS
from fangpin.warnings import STATUS_INCLUDED, STATUS_OPEN, deadline, level_deadline, max_level

SELF_APPLICATION = "农户自主申报"
CADRE = "干部排查"
DEPARTMENT = "部门预警"
PUBLIC = "群众反映"
VILLAGE = "村级排查"
CHANNELS: tuple[str, ...] = CLUE_CHANNELS  # (SELF_APPLICATION, CADRE, DEPARTMENT, PUBLIC, VILLAGE)
Channel = Literal["农户自主申报", "干部排查", "部门预警", "群众反映", "村级排查"]  # = CHANNELS (tests/unit/test_clues.py)
SCREENING = "大数据筛查"  # fangpin's model and rules (batch scoring): the origin of every batch warning
ORIGINS: tuple[str, ...] = (SCREENING, *CHANNELS)

# what became of a clue
CREATED = "created"  # a new warning
JOINED = "joined"  # joined the household's open warning (raised to the clue's level when higher)
MERGED = "merged"  # a duplicate of an open clue of the same household and channel: merged into it
NOT_WARNED = "not_warned"  # scored below every warning level, channel without a floor: recorded
MONITORED = "monitored"  # already a monitoring object with unresolved risk: the clue goes to its support
UNMATCHED = "unmatched"  # no such household in the ledger: recorded, checked by the village
KEPT_CLOSED = "kept_closed"  # the household's warning of this quarter is already verified: recorded with it
OUTCOMES: tuple[str, ...] = (CREATED, JOINED, MERGED, NOT_WARNED, MONITORED, UNMATCHED, KEPT_CLOSED)
OUTCOME_LABEL = {CREATED: "已生成预警", JOINED: "并入已有预警", MERGED: "重复线索，已合并", NOT_WARNED: "评分未达预警等级，已登记",
                 MONITORED: "已是监测对象，转入帮扶", UNMATCHED: "台账中无此户，待村级核查", KEPT_CLOSED: "本季度预警已核实，已登记"}

# what the newest export read back says of a warning's household (pipelines/readback.py)
NOTHING = "未见变化"
IDENTIFIED = "已识别"
SUPPORTED = "已帮扶"
ELIMINATED = "已消除"
LEDGER_OUTCOMES: tuple[str, ...] = (NOTHING, IDENTIFIED, SUPPORTED, ELIMINATED)  # in the order they happen

VERIFICATION, DECISION, SUPPORT_PLAN = "verification", "decision", "support_plan"
STEPS: tuple[str, ...] = (VERIFICATION, DECISION, SUPPORT_PLAN)
STEP_LABEL = {VERIFICATION: "入户核实", DECISION: "认定纳入监测", SUPPORT_PLAN: "制定帮扶计划"}
SOURCES = ("api", "page", "event")  # how a clue arrived


class ClueError(ValueError):
    """A clue that cannot be recorded as given (message in Chinese)."""


def clue_id() -> str:
    return "C" + secrets.token_hex(9)


def step_deadline(step, start: date, w) -> date:
    """The deadline of a later step (``step``: a StepParams of ``params.warnings``) started on
    ``start``: calendar or working days (with 调休) of ``w.holiday_country``."""
    return deadline(start, step.days, step.working_days, w.holiday_country)


def floor_of(channel: str, params) -> str | None:
    """The level a clue of ``channel`` is at least (None: the score decides, as for /v1/events)."""
    return params.clues.floors.get(channel)


def warning_level(scored: str | None, channel: str, params) -> str | None:
    """The level of a clue's warning: the more urgent of the household's scored level and the
    channel's floor; None when neither gives one (no warning)."""
    return max_level((scored, floor_of(channel, params)))


def verification_due(level: str, channel: str, received: date, params) -> date:
    """A clue's verification deadline: the level's (fangpin.warnings.level_deadline), at most the
    village check of ``clues.village_check_channels`` (a self-application: 2 days)."""
    w = params.warnings
    due = level_deadline(level, received, w)
    if channel in params.clues.village_check_channels:
        due = min(due, step_deadline(w.village_check, received, w))
    return due


def is_return_risk(monitor_category: str | None, risk_eliminated: bool | None) -> bool:
    """返贫风险: a household whose risk the ledger shows eliminated (a monitoring object, 风险是否已消除
    = 是) is warned again."""
    return bool(monitor_category) and bool(risk_eliminated)


def return_risk_rows(monitor_category, risk_eliminated):
    """:func:`is_return_risk` of every row of two columns (pandas Series), as a bool array."""
    import numpy as np

    cat = monitor_category.astype(object).where(monitor_category.notna(), None).tolist()
    elim = risk_eliminated.astype(object).where(risk_eliminated.notna(), None).tolist()
    return np.fromiter((is_return_risk(c, e) for c, e in zip(cat, elim, strict=True)), dtype=bool, count=len(cat))


@dataclass(frozen=True)
class Step:
    """The step a warning waits on now, with its deadline."""

    name: str  # VERIFICATION | DECISION | SUPPORT_PLAN
    due: date | None
    today: date

    @property
    def label(self) -> str:
        return STEP_LABEL[self.name]

    @property
    def days_left(self) -> int | None:
        return None if self.due is None else (self.due - self.today).days

    @property
    def overdue(self) -> bool:
        return self.due is not None and self.today > self.due

    @property
    def text(self) -> str:
        """``剩 n 天`` / ``已逾期 n 天`` (``今天到期`` on the day)."""
        d = self.days_left
        if d is None:
            return "无期限"
        if d < 0:
            return f"已逾期 {-d} 天"
        return "今天到期" if d == 0 else f"剩 {d} 天"


def current_step(status: str, deadline_: date, loop: dict | None, today: date) -> Step | None:
    """The step a warning waits on (None: nothing left to do — excluded, or identified and
    supported). ``loop``: its warning_loop row as a mapping (None: no row yet)."""
    loop = loop or {}
    if status == STATUS_OPEN:
        return Step(VERIFICATION, deadline_, today)
    if status != STATUS_INCLUDED:
        return None
    if loop.get("identified_at") is None:
        return Step(DECISION, loop.get("decision_due"), today)
    if loop.get("support_at") is None and loop.get("ledger_outcome") != ELIMINATED:
        return Step(SUPPORT_PLAN, loop.get("support_due"), today)
    return None


def household_key_of(county: str, household_id: str) -> str:
    """A stable short key of (county, 户编号) for merging (not a secret: 户编号 is not personal data)."""
    return hashlib.sha256(f"{county}|{household_id}".encode()).hexdigest()[:24]


def check_text(text: str | None, what: str, max_chars: int) -> str | None:
    """Free text of a clue (what was reported, who received it): stripped, bounded, and refused
    when it holds an ID number or a phone number (as feedback text is)."""
    from fangpin.ids import contains_personal_number

    if text is None:
        return None
    t = text.strip()
    if len(t) > max_chars:
        raise ClueError(f"{what}过长（最多 {max_chars} 字）")
    if contains_personal_number(t):
        raise ClueError(f"{what}中不得填写完整证件号码或电话号码")
    return t


def local_received(received_at: datetime | None, now: datetime) -> datetime:
    """When the clue was received: as reported (never in the future), else now."""
    from datetime import UTC

    if received_at is None:
        return now
    ts = received_at.replace(tzinfo=UTC) if received_at.tzinfo is None else received_at.astimezone(UTC)
    return min(ts, now)
