"""保障缺口 tasks: a rule hit for a 三保障 / 饮水 / 兜底 gap routed to the department that closes it.

A gap (unsafe housing, no safe water, a sick member without basic medical insurance, a child out
of school, a household without labour and without 低保 / 特困) is not a 15-day risk visit: it needs
a department's fix with a deadline. ``params.tasks.routes`` maps a rule id to its route (gap,
department, measure, days); every rule has a level floor (``levels.rule_floors``), a route, or
both (models.levels.check_coverage), so a hit is always a warning or a task. A household can have
both a warning (its risk) and tasks (its gaps).

Default routes (params.yaml): R04 危房 → 住建 危房改造; R05 饮水 → 水利 饮水安全工程; R06 → 医保 参保
及资助参保; R07 → 教育 控辍保学; R08 (no labour, no 低保 / 特困) → 民政: the gap is the missing 兜底
(domain.md: households without labour are supported by 低保 / 特困 and are not marked eliminated
while they depend on it), and eligibility for 低保 and 特困供养 is assessed by 民政.

:class:`TaskRecord` is the one definition of a task (store, API, cadre page, Excel); the batch
builds many at once as an Arrow table of :func:`task_schema` (:func:`task_table`).
Status: 待办理 → 办理中 → 已办结 (or 待办理 → 已办结); closed is terminal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from fangpin.warnings import contains_full_id, deadline, local_date

KIND = "保障缺口"
TASK_OPEN = "待办理"
TASK_DOING = "办理中"
TASK_DONE = "已办结"
TaskStatus = Literal["待办理", "办理中", "已办结"]
TASK_STATUSES: tuple[str, ...] = (TASK_OPEN, TASK_DOING, TASK_DONE)
TASK_TRANSITIONS: dict[str, frozenset[str]] = {
    TASK_OPEN: frozenset({TASK_DOING, TASK_DONE}),
    TASK_DOING: frozenset({TASK_DONE}),
    TASK_DONE: frozenset(),
}


class TaskError(ValueError):
    """A task status change that is not allowed (message in Chinese)."""


def check_task_transition(current: str, new: str) -> None:
    if new not in TASK_TRANSITIONS:
        raise TaskError(f"未知状态：{new}（可选：{'、'.join(TASK_STATUSES)}）")
    if current == new:
        raise TaskError(f"任务已是“{current}”状态")
    if new not in TASK_TRANSITIONS.get(current, frozenset()):
        if not TASK_TRANSITIONS.get(current):
            raise TaskError("任务已办结，不能再次变更")
        raise TaskError(f"不能从“{current}”变更为“{new}”")


def task_id(quarter: str, household_id: str, rule_id: str) -> str:
    """Stable id of the task for (quarter, household, rule): re-runs keep it."""
    digest = hashlib.sha256(f"task|{quarter}|{household_id}|{rule_id}".encode()).hexdigest()
    return "T" + digest[:19]


class TaskRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    kind: Literal["保障缺口"] = KIND
    quarter: str
    county: str
    township: str
    village: str
    household_id: str
    head_name: str | None = None
    id_masked: str | None = None
    rule_id: str
    gap: str  # 缺口, e.g. 住房安全
    department: str  # 责任部门
    measure: str  # 措施
    detail: str  # the rule hit's sentence with the household's figures
    ruleset_version: str
    created_at: datetime
    deadline: date
    status: TaskStatus = TASK_OPEN

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @field_validator("head_name", "id_masked", "detail", "household_id")
    @classmethod
    def _no_full_id(cls, v):
        if v is not None and contains_full_id(v):
            raise ValueError("a task must never contain a full ID number")
        return v

    def is_overdue(self, today: date | None = None) -> bool:
        today = today or local_date(datetime.now(UTC))
        return self.status != TASK_DONE and today > self.deadline


def routed(hits: Sequence[Mapping] | None, routes: Mapping) -> list[dict]:
    """The tasks of one household's rule hits: ``{rule_id, gap, department, measure, detail,
    days}`` for every hit whose rule has a route (in rule order)."""
    out = []
    for h in hits or ():
        r = routes.get(h["rule_id"])
        if r is not None:
            out.append({"rule_id": h["rule_id"], "gap": r.gap, "department": r.department, "measure": r.measure,
                        "detail": h["text"], "days": r.days})
    return out


def task_deadline(start: date, days: int, params) -> date:
    w = params.warnings
    return deadline(start, days, w.working_days, w.holiday_country)


def task_schema():
    import pyarrow as pa

    return pa.schema([(name, pa.string()) for name in (
        "id", "kind", "quarter", "county", "township", "village", "household_id", "head_name", "id_masked",
        "rule_id", "gap", "department", "measure", "detail", "ruleset_version", "created_at", "deadline",
        "status")])


def task_table(rows: Sequence[Mapping], params, created_at: datetime):
    """Tasks as an Arrow table of :func:`task_schema` from rows ``{quarter, county, township,
    village, household_id, head_name, id_masked, ruleset_version, hits}`` (``hits``: the
    household's rule hits), checked with :class:`TaskRecord`'s rules."""
    import pyarrow as pa

    schema = task_schema()
    start = local_date(created_at)
    ts = (created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at.astimezone(UTC))
    stamp = ts.isoformat().replace("+00:00", "Z")
    dues: dict[int, str] = {}
    out: dict[str, list] = {n: [] for n in schema.names}
    for row in rows:
        for t in routed(row["hits"], params.tasks.routes):
            due = dues.get(t["days"])
            if due is None:
                due = dues[t["days"]] = task_deadline(start, t["days"], params).isoformat()
            rec = {"id": task_id(row["quarter"], row["household_id"], t["rule_id"]), "kind": KIND,
                   "quarter": row["quarter"], "county": row["county"], "township": row["township"],
                   "village": row["village"], "household_id": row["household_id"], "head_name": row.get("head_name"),
                   "id_masked": row.get("id_masked"), "rule_id": t["rule_id"], "gap": t["gap"],
                   "department": t["department"], "measure": t["measure"], "detail": t["detail"],
                   "ruleset_version": row["ruleset_version"], "created_at": stamp, "deadline": due,
                   "status": TASK_OPEN}
            for k, v in rec.items():
                out[k].append(v)
    table = pa.table({k: pa.array(v, pa.string()) for k, v in out.items()}, schema=schema)
    validate_tasks(table)
    return table


def validate_tasks(table) -> None:
    """Every row of a task table would pass :class:`TaskRecord` (checked row by row: tasks are
    a few per cent of the households)."""
    for i, row in enumerate(table.to_pylist()):
        try:
            TaskRecord.model_validate(row)
        except ValueError as exc:
            raise ValueError(f"task row {i} (household {row.get('household_id')}): {exc}") from None


def records(table) -> list[TaskRecord]:
    return [TaskRecord.model_validate(r) for r in table.to_pylist()]


def sort_key(t: TaskRecord) -> tuple:
    """Cadre order: earliest deadline first, then department, then household."""
    return (t.deadline, t.department, t.household_id, t.rule_id)


def by_department(tasks: Sequence) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tasks:
        d = t["department"] if isinstance(t, Mapping) else t.department
        out[d] = out.get(d, 0) + 1
    return dict(sorted(out.items()))
