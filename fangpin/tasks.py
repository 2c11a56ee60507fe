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

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

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


_TASK_REQUIRED = ("id", "kind", "quarter", "county", "township", "village", "household_id", "rule_id", "gap",
                  "department", "measure", "detail", "ruleset_version", "created_at", "deadline", "status")


def validate_tasks(table) -> None:
    """Raise ``ValueError("task row i (household h): …")`` unless every row of a task table would
    pass :class:`TaskRecord`: the columns of :func:`task_schema`, required fields present, kind
    and status in their sets, created_at an ISO timestamp (naive = UTC), deadline an ISO date,
    no full ID number in head name, masked ID, detail or household id. Vectorised (Arrow compute,
    as fangpin.warnings.validate_table); a row the vector checks reject, or a timestamp they cannot
    read, is checked by TaskRecord itself, which names the row and the field."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from fangpin.ids import ID_IN_TEXT, redact_numbers

    if table.num_rows == 0:
        return
    schema = task_schema()
    if set(table.column_names) != set(schema.names):
        raise ValueError(f"task table columns {sorted(table.column_names)} != {sorted(schema.names)}")
    table = table.select(schema.names).cast(schema)
    bad = np.zeros(table.num_rows, dtype=bool)
    for c in _TASK_REQUIRED:
        bad |= pc.is_null(table.column(c)).to_numpy(zero_copy_only=False)
    bad |= ~pc.fill_null(pc.equal(table.column("kind"), KIND), True).to_numpy(zero_copy_only=False)
    bad |= ~pc.is_in(table.column("status"), pa.array(TASK_STATUSES)).to_numpy(zero_copy_only=False)
    for c in ("head_name", "id_masked", "detail", "household_id"):
        bad |= pc.fill_null(pc.match_substring_regex(table.column(c), ID_IN_TEXT), False).to_numpy(
            zero_copy_only=False)
    try:
        table.column("created_at").cast(pa.timestamp("us", tz="UTC"))
        table.column("deadline").cast(pa.date32())
        rows = np.flatnonzero(bad)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        rows = np.arange(table.num_rows)  # a form Arrow does not read (a naive timestamp): row by row
    for i in rows.tolist():
        row = table.slice(i, 1).to_pylist()[0]
        try:
            TaskRecord.model_validate(row)
        except ValidationError as exc:  # the fields and rules, never the values (a full ID stays out of logs)
            what = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors(include_url=False, include_input=False, include_context=False))
            raise ValueError(f"task row {i} (household {redact_numbers(str(row.get('household_id')))}): {what}") from None
    if bad.any():  # pragma: no cover - the vector checks restate TaskRecord's rules
        raise AssertionError("task rows failed the vector checks but passed TaskRecord")


def task_columns(table):
    """A checked task table (:func:`validate_tasks`) with ``created_at`` as UTC timestamps and
    ``deadline`` as dates (what the store writes)."""
    import pyarrow as pa

    table = table.select(task_schema().names)
    try:
        created = table.column("created_at").cast(pa.timestamp("us", tz="UTC"))
        due = table.column("deadline").cast(pa.date32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        recs = [TaskRecord.model_validate(r) for r in table.to_pylist()]
        created = pa.array([r.created_at for r in recs], pa.timestamp("us", tz="UTC"))
        due = pa.array([r.deadline for r in recs], pa.date32())
    table = table.set_column(table.schema.get_field_index("created_at"), "created_at", created)
    return table.set_column(table.schema.get_field_index("deadline"), "deadline", due)


def records(table) -> list[TaskRecord]:
    return [TaskRecord.model_validate(r) for r in table.to_pylist()]


def sort_key(t: TaskRecord) -> tuple:
    """Cadre order: earliest deadline first, then department, then household."""
    return (t.deadline, t.department, t.household_id, t.rule_id)


def by_department(tasks) -> dict[str, int]:
    """Tasks per department, by department name: of records, dicts or an Arrow table of
    :func:`task_schema` (counted in Arrow)."""
    if hasattr(tasks, "column_names"):
        import pyarrow.compute as pc

        return dict(sorted((d["values"], d["counts"]) for d in pc.value_counts(tasks.column("department")).to_pylist()))
    out: dict[str, int] = {}
    for t in tasks:
        d = t["department"] if isinstance(t, Mapping) else t.department
        out[d] = out.get(d, 0) + 1
    return dict(sorted(out.items()))
