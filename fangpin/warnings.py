"""The warning record: one household flagged for a quarter, as cadres act on it.

This is the one definition of a warning (API, store, Excel and Parquet all use it):
who (place, household, head-of-household name, masked ID), how urgent (level, calibrated
probability, verification deadline), why (rule hits, at most four reasons), what to do (suggested
measures), with model / ruleset versions and the verification status.

Personal data: the full ID number never enters a record (``id_masked`` is validated), and there is
no health field: health appears only as far as a reason sentence needs it.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Level = Literal["红", "黄", "蓝"]
LEVELS: tuple[str, ...] = ("红", "黄", "蓝")  # most urgent first
LEVEL_RANK = {lvl: i for i, lvl in enumerate(LEVELS)}  # 0 = most urgent (sort ascending)
LEVEL_LABEL = {"红": "红（一级）", "黄": "黄（二级）", "蓝": "蓝（三级）"}

STATUS_OPEN = "待核实"
STATUS_INCLUDED = "已核实·纳入监测"
STATUS_EXCLUDED = "已核实·排除"
Status = Literal["待核实", "已核实·纳入监测", "已核实·排除"]
STATUSES: tuple[str, ...] = (STATUS_OPEN, STATUS_INCLUDED, STATUS_EXCLUDED)
# Allowed status changes. Closed states are terminal: a warning cannot be closed twice or re-opened.
TRANSITIONS: dict[str, frozenset[str]] = {
    STATUS_OPEN: frozenset({STATUS_INCLUDED, STATUS_EXCLUDED}),
    STATUS_INCLUDED: frozenset(),
    STATUS_EXCLUDED: frozenset(),
}
REASON_REQUIRED = frozenset({STATUS_EXCLUDED})

LOCAL_TZ = ZoneInfo("Asia/Shanghai")  # deadlines are local calendar dates
_FULL_ID = re.compile(r"\d{17}[\dXx]")
_MASKED = re.compile(r"^[0-9A-Za-z]{0,4}\*+[0-9A-Za-z]{0,4}$")


def level_rank(level: str) -> int:
    return LEVEL_RANK[level]


def max_level(levels) -> str | None:
    """The most urgent of some levels (None if there are none)."""
    ranked = [lvl for lvl in levels if lvl in LEVEL_RANK]
    return min(ranked, key=LEVEL_RANK.__getitem__) if ranked else None


def contains_full_id(text: str | None) -> bool:
    """Whether a string contains something shaped like an 18-character resident ID."""
    return bool(text) and _FULL_ID.search(str(text)) is not None


class _Rec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleHit(_Rec):
    rule_id: str
    level: Level
    text: str  # Chinese sentence with the household's figures
    threshold: str  # Chinese text of the threshold that fired


class Reason(_Rec):
    factor: str  # cadre-meaningful factor key, e.g. "medical"
    text: str  # Chinese sentence naming the household's own values
    direction: Literal["up", "down"]
    logodds: float  # summed TreeSHAP contribution of the factor (log-odds)
    prob_pp: float  # probability-scale effect, percentage points


class Measure(_Rec):
    type: str  # e.g. 健康帮扶
    text: str


class VerificationError(ValueError):
    """A status change that the verification procedure does not allow (message in Chinese)."""


def check_transition(current: str, new: str, reason: str | None = None) -> None:
    """Raise :class:`VerificationError` unless ``current → new`` is an allowed status change."""
    if new not in TRANSITIONS:
        raise VerificationError(f"未知状态：{new}（可选：{'、'.join(STATUSES)}）")
    if current not in TRANSITIONS:
        raise VerificationError(f"当前状态未知：{current}")
    if current == new:
        raise VerificationError(f"预警已是“{current}”状态，不能重复提交")
    if new not in TRANSITIONS[current]:
        if not TRANSITIONS[current]:
            raise VerificationError(f"预警已结案（{current}），不能再次变更")
        raise VerificationError(f"不能从“{current}”直接变更为“{new}”")
    if new in REASON_REQUIRED and not (reason and reason.strip()):
        raise VerificationError(f"变更为“{new}”须填写原因")


def warning_id(quarter: str, household_id: str, model_version: str) -> str:
    """Stable id of the warning for (quarter, household, model version): re-runs keep the id."""
    digest = hashlib.sha256(f"{quarter}|{household_id}|{model_version}".encode()).hexdigest()
    return "W" + digest[:19]


@lru_cache(maxsize=4)
def _calendar(country: str):
    import holidays  # maintained public-holiday calendars, incl. China's 调休 make-up workdays

    return holidays.country_holidays(country)


def deadline(start: date, days: int, working_days: bool = False, country: str = "CN") -> date:
    """The verification deadline ``days`` after ``start``.

    Calendar days by default (national guidance: a clue is decided within 15 days). With
    ``working_days`` the count skips weekends and public holidays and includes weekend make-up
    workdays (调休) of the country's official calendar, as published by python-holidays; years the
    calendar does not know yet fall back to its rule-based holidays.
    """
    if days <= 0:
        raise ValueError(f"verification days must be positive, got {days}")
    if not working_days:
        return start + timedelta(days=days)
    return _calendar(country).get_nth_working_day(start, days)


def local_date(ts: datetime) -> date:
    """The local (China) calendar date of a timestamp; naive timestamps are taken as UTC."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(LOCAL_TZ).date()


class WarningRecord(_Rec):
    id: str
    quarter: str
    county: str
    township: str
    village: str
    household_id: str
    head_name: str | None = None  # cadres need it to visit; never logged
    id_masked: str | None = None  # first 4 + last 4 only
    level: Level
    probability: float = Field(ge=0, le=1)  # calibrated
    rule_hits: tuple[RuleHit, ...] = ()
    reasons: tuple[Reason, ...] = Field(default=(), max_length=4)
    measures: tuple[Measure, ...] = ()
    model_version: str
    ruleset_version: str
    created_at: datetime
    deadline: date
    status: Status = STATUS_OPEN
    status_reason: str | None = None

    @field_validator("quarter")
    @classmethod
    def _quarter(cls, v: str) -> str:
        from fangpin import quarters

        y, n = quarters.parse(v)
        return quarters.fmt(y, n)

    @field_validator("id_masked")
    @classmethod
    def _masked(cls, v: str | None) -> str | None:
        if v is not None and (contains_full_id(v) or not _MASKED.match(v)):
            raise ValueError("id_masked must be a masked ID number (first 4 + last 4), never a full one")
        return v

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @model_validator(mode="after")
    def _no_full_id_anywhere(self) -> WarningRecord:
        texts = [self.head_name, self.status_reason, self.household_id]
        texts += [h.text for h in self.rule_hits] + [r.text for r in self.reasons]
        texts += [m.text for m in self.measures]
        if any(contains_full_id(t) for t in texts):
            raise ValueError("a warning must never contain a full ID number")
        return self

    @classmethod
    def create(
        cls,
        *,
        params=None,
        created_at: datetime | None = None,
        **fields,
    ) -> WarningRecord:
        """A new open warning: id from (quarter, household, model version), deadline from
        ``params.warnings`` (verification_days, working_days, holiday_country)."""
        if params is None:
            from fangpin.config import load_params

            params = load_params()
        w = params.warnings
        created = created_at or datetime.now(UTC)
        fields.setdefault("id", warning_id(fields["quarter"], fields["household_id"], fields["model_version"]))
        return cls(
            created_at=created,
            deadline=deadline(local_date(created), w.verification_days, w.working_days, w.holiday_country),
            **fields,
        )

    @property
    def level_rank(self) -> int:
        return LEVEL_RANK[self.level]

    def is_overdue(self, today: date | None = None) -> bool:
        today = today or local_date(datetime.now(UTC))
        return self.status == STATUS_OPEN and today > self.deadline


def sort_key(w: WarningRecord) -> tuple:
    """Cadre order: most urgent level first, then highest probability, then household id."""
    return (LEVEL_RANK[w.level], -w.probability, w.household_id)
