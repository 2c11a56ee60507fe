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
# The one order of warning levels (domain.md, Lu'an): 红 (一级) > 黄 (二级) > 蓝 (三级), most urgent
# first. Every rank of a level is derived from it: LEVEL_RANK sorts (0 = most urgent, the store's
# level_rank column); severity() compares (0 = no warning … 3 = 红; models.levels).
LEVELS: tuple[str, ...] = ("红", "黄", "蓝")
LEVEL_RANK = {lvl: i for i, lvl in enumerate(LEVELS)}


def severity(level: str | None) -> int:
    """0 for no warning (None or anything not a level), else 1 (蓝) … 3 (红): higher is more urgent."""
    i = LEVEL_RANK.get(level) if isinstance(level, str) else None
    return 0 if i is None else len(LEVELS) - i


def max_level(levels) -> str | None:
    """The most urgent of some levels (None if there are none)."""
    return max((lvl for lvl in levels if severity(lvl)), key=severity, default=None)


LEVEL_LABEL = {"红": "红（一级）", "黄": "黄（二级）", "蓝": "蓝（三级）"}
# which list a warning is on (its deadline follows): 红 home verification within
# warnings.verification_days, 黄 the next monthly visit, 蓝 the half-yearly review
VISIT_LIST = {"红": "入户核实", "黄": "月度走访", "蓝": "半年复核"}
DEFERRED_NOTE = "（核实名额已满，顺延）"

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
_MASKED = re.compile(r"^[0-9A-Za-z]{0,4}\*+[0-9A-Za-z]{0,4}$")


def contains_full_id(text: str | None) -> bool:
    """Whether a string contains something shaped like an 18-character resident ID, also written
    with spaces or dashes (:data:`fangpin.ids.ID_IN_TEXT`)."""
    from fangpin.ids import contains_id_number

    return contains_id_number(text)


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
    # share of (probability − county base rate), percentage points; the shown figures plus the
    # record's other_pp add up to 100 × (probability − base_rate) (models/explain.py)
    prob_pp: float


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


def level_days(level: str, w) -> int:
    """Days a warning of ``level`` has (``w``: params.warnings): 红 verification_days, 黄
    monthly_visit_days, 蓝 review_days (an unknown level: the verification days, and the record
    refuses the level)."""
    return {"红": w.verification_days, "黄": w.monthly_visit_days, "蓝": w.review_days}.get(level, w.verification_days)


def level_deadline(level: str, start: date, w) -> date:
    """The deadline of a warning of ``level`` created on ``start`` (module doc of deadline)."""
    return deadline(start, level_days(level, w), w.working_days, w.holiday_country)


def visit_list(level: str, w, deferred: bool = False) -> str:
    """The list a warning is on, as cadres read it: ``入户核实（15日内）``, ``月度走访``,
    ``半年复核``; a deferred 红 candidate ``月度走访（核实名额已满，顺延）``."""
    if level == "红":
        return f"{VISIT_LIST['红']}（{w.verification_days}日内）"
    return VISIT_LIST[level] + (DEFERRED_NOTE if deferred else "")


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
    # the figures' starting point: the county base rate (probability), the 其他因素 line in
    # percentage points and the period the reference was measured on (models/explain.py)
    base_rate: float | None = Field(None, ge=0, le=1)
    other_pp: float | None = None
    reference_period: str | None = None
    deferred: bool = False  # a 红 candidate moved to 黄: the township's verification capacity was full

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
        params,
        created_at: datetime | None = None,
        **fields,
    ) -> WarningRecord:
        """A new open warning: id from (quarter, household, model version), deadline by level
        from ``params.warnings`` (:func:`level_deadline`)."""
        w = params.warnings
        created = created_at or datetime.now(UTC)
        fields.setdefault("id", warning_id(fields["quarter"], fields["household_id"], fields["model_version"]))
        return cls(
            created_at=created,
            deadline=level_deadline(fields["level"], local_date(created), w),
            **fields,
        )

    def is_overdue(self, today: date | None = None) -> bool:
        today = today or local_date(datetime.now(UTC))
        return self.status == STATUS_OPEN and today > self.deadline


# ------------------------------------------------------------------------------------------------
# Many records at once (batch scoring, store, Excel): an Arrow table with a fixed schema, checked in
# bulk with the same rules as WarningRecord's validators instead of one pydantic object per row.


def record_schema():
    """The Arrow schema of warning records in their JSON form (``model_dump(mode="json")``):
    nested rule hits / reasons / measures, ISO text for ``created_at`` and ``deadline``."""
    import pyarrow as pa

    hit = pa.struct([("rule_id", pa.string()), ("level", pa.string()), ("text", pa.string()),
                     ("threshold", pa.string())])
    reason = pa.struct([("factor", pa.string()), ("text", pa.string()), ("direction", pa.string()),
                        ("logodds", pa.float64()), ("prob_pp", pa.float64())])
    measure = pa.struct([("type", pa.string()), ("text", pa.string())])
    return pa.schema([
        ("id", pa.string()), ("quarter", pa.string()), ("county", pa.string()), ("township", pa.string()),
        ("village", pa.string()), ("household_id", pa.string()), ("head_name", pa.string()),
        ("id_masked", pa.string()), ("level", pa.string()), ("probability", pa.float64()),
        ("rule_hits", pa.list_(hit)), ("reasons", pa.list_(reason)), ("measures", pa.list_(measure)),
        ("model_version", pa.string()), ("ruleset_version", pa.string()), ("created_at", pa.string()),
        ("deadline", pa.string()), ("status", pa.string()), ("status_reason", pa.string()),
        ("base_rate", pa.float64()), ("other_pp", pa.float64()), ("reference_period", pa.string()),
        ("deferred", pa.bool_()),
    ])


_REQUIRED = ("id", "quarter", "county", "township", "village", "household_id", "level", "probability",
             "model_version", "ruleset_version", "created_at", "deadline", "status")
_NESTED_REQUIRED = {"rule_hits": ("rule_id", "level", "text", "threshold"),
                    "reasons": ("factor", "text", "direction", "logodds", "prob_pp"),
                    "measures": ("type", "text")}


def validate_table(table) -> None:
    """Raise ``ValueError("warning row i (household h): …")`` unless every row of an Arrow table of
    :func:`record_schema` would pass :class:`WarningRecord` validation: required fields present;
    quarter in canonical ``YYYYQn`` form; level, status and nested levels / directions in their sets;
    probability in [0, 1]; at most four reasons; ``id_masked`` masked (first 4 + last 4); created_at
    an ISO timestamp (naive = UTC) and deadline an ISO date; no full ID number in any text
    (head name, household id, status reason, rule hits, reasons, measures). Vectorised (Arrow
    compute): one pass per check over the whole table."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from fangpin import quarters
    from fangpin.ids import ID_IN_TEXT, redact_numbers

    n = table.num_rows
    if n == 0:
        return
    schema = record_schema()
    if set(table.column_names) != set(schema.names):
        raise ValueError(f"warning table columns {sorted(table.column_names)} != {sorted(schema.names)}")
    table = table.select(schema.names).cast(schema)
    hid = table.column("household_id")

    def fail(mask, what: str) -> None:
        bad = np.flatnonzero(np.asarray(mask, dtype=bool))
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"warning row {i} (household {redact_numbers(str(hid[i].as_py()))}): {what} "
                             f"({len(bad)} rows)")  # an ID number given as household id: masked

    def row_any(col: str, values_mask) -> np.ndarray:
        """Per row: whether any nested value of list column ``col`` has ``values_mask`` set."""
        lists = table.column(col).combine_chunks()
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        out = np.zeros(n, dtype=bool)
        m = np.asarray(values_mask, dtype=bool)
        if m.any():
            out[parents[m]] = True
        return out

    for c in _REQUIRED:
        fail(pc.is_null(table.column(c)).to_numpy(zero_copy_only=False), f"{c} is missing")
    for c in ("rule_hits", "reasons", "measures"):
        fail(pc.is_null(table.column(c)).to_numpy(zero_copy_only=False), f"{c} is missing (use an empty list)")
        values = pc.list_flatten(table.column(c).combine_chunks())
        for f in _NESTED_REQUIRED[c]:
            fail(row_any(c, pc.is_null(pc.struct_field(values, f)).to_numpy(zero_copy_only=False)),
                 f"{c}.{f} is missing")
    q = table.column("quarter")

    def canonical(v: str) -> bool:
        try:
            return quarters.fmt(*quarters.parse(v)) == v
        except ValueError:
            return False

    canon = {v: canonical(v) for v in pc.unique(q).to_pylist()}
    fail(~np.array([canon[v] for v in q.to_pylist()]), "quarter is not in canonical YYYYQn form")
    fail(~pc.is_in(table.column("level"), pa.array(LEVELS)).to_numpy(zero_copy_only=False), "level not in 红/黄/蓝")
    fail(~pc.is_in(table.column("status"), pa.array(STATUSES)).to_numpy(zero_copy_only=False), "unknown status")
    p = table.column("probability").to_numpy(zero_copy_only=False)
    fail(~((p >= 0) & (p <= 1)), "probability outside [0, 1]")
    fail(pc.list_value_length(table.column("reasons")).to_numpy(zero_copy_only=False) > 4, "more than 4 reasons")
    hits = pc.list_flatten(table.column("rule_hits").combine_chunks())
    fail(row_any("rule_hits", ~pc.is_in(pc.struct_field(hits, "level"), pa.array(LEVELS)).to_numpy(
        zero_copy_only=False)), "rule hit level not in 红/黄/蓝")
    rs = pc.list_flatten(table.column("reasons").combine_chunks())
    fail(row_any("reasons", ~pc.is_in(pc.struct_field(rs, "direction"), pa.array(["up", "down"])).to_numpy(
        zero_copy_only=False)), "reason direction not up/down")
    m = table.column("id_masked")
    ok = pc.fill_null(pc.match_substring_regex(m, _MASKED.pattern), True)
    full = pc.fill_null(pc.match_substring_regex(m, ID_IN_TEXT), False)
    fail(~ok.to_numpy(zero_copy_only=False) | full.to_numpy(zero_copy_only=False),
         "id_masked must be a masked ID number (first 4 + last 4), never a full one")
    for c in ("head_name", "household_id", "status_reason"):
        fail(pc.fill_null(pc.match_substring_regex(table.column(c), ID_IN_TEXT), False).to_numpy(
            zero_copy_only=False), "a warning must never contain a full ID number")
    for c in ("rule_hits", "reasons", "measures"):
        texts = pc.struct_field(pc.list_flatten(table.column(c).combine_chunks()), "text")
        fail(row_any(c, pc.fill_null(pc.match_substring_regex(texts, ID_IN_TEXT), False).to_numpy(
            zero_copy_only=False)), "a warning must never contain a full ID number")
    for v in pc.unique(table.column("created_at")).to_pylist():
        try:
            datetime.fromisoformat(v)  # naive is taken as UTC, as WarningRecord does
        except ValueError:
            fail(pc.equal(table.column("created_at"), v).to_numpy(zero_copy_only=False),
                 "created_at is not an ISO timestamp")
    for v in pc.unique(table.column("deadline")).to_pylist():
        try:
            date.fromisoformat(v)
        except ValueError:
            fail(pc.equal(table.column("deadline"), v).to_numpy(zero_copy_only=False), "deadline is not an ISO date")
