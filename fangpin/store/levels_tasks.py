"""Store functions for level cut-offs and 保障缺口 tasks (tables ``level_thresholds`` and ``tasks``).

- ``write_thresholds`` and :class:`TaskWrite` run inside the transaction of
  :meth:`fangpin.store.Store.write_quarter_tables` (one batch run: warnings, tasks and cut-offs
  commit together or not at all).
- Cut-offs are keyed by (quarter, county, township, model version): raw scores of another model
  version mean something else. A re-run replaces the cut-offs of its quarter, model version and
  counties. ``read_thresholds`` gives the API every township's cut-offs of its model version.
- Tasks are keyed by (quarter, household, rule): a re-run refreshes their content but keeps id,
  creation time, deadline and status; open (待办理) tasks of the quarter in the run's counties that
  the run no longer produces are removed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, func, select, update

from fangpin.store.schema import LevelThresholdRow, TaskRow
from fangpin.tasks import TASK_OPEN, TASK_STATUSES, TaskError, TaskRecord, check_task_transition

_TASK_REFRESHED = ("county", "township", "village", "head_name", "id_masked", "gap", "department", "measure",
                   "detail", "ruleset_version", "updated_at", "run_id", "kind")
CUTS = ("t_red", "t_yellow", "t_blue", "t_capacity")
COUNTS = ("n_in_scope", "n_red_wanted", "n_red", "n_yellow", "n_blue", "shortfall", "capacity")


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _db_cut(v) -> float | None:
    """±inf (and NaN) → NULL: t_red / t_yellow / t_blue NULL mean +inf, t_capacity NULL −inf."""
    v = float(v)
    return v if math.isfinite(v) else None


# ------------------------------------------------------------------------------- cut-offs


def write_thresholds(conn, rows: Iterable[dict], quarter: str, model_version: str, scope: list[str],
                     run_id: str) -> int:
    """Replace the quarter's cut-offs of ``model_version`` in the counties of ``scope`` with
    ``rows`` (models.levels.group_thresholds rows, one per township)."""
    now = _now()
    out = []
    for r in rows:
        if r["quarter"] != quarter:
            raise ValueError(f"level cut-offs for {r['quarter']} in a run for {quarter}")
        out.append({"quarter": quarter, "county": r["county"], "township": r["township"],
                    "model_version": model_version, **{c: _db_cut(r[c]) for c in CUTS},
                    **{c: int(r[c]) for c in COUNTS}, "run_id": run_id, "computed_at": now})
    counties = sorted(set(scope) | {r["county"] for r in out})
    if counties:
        conn.execute(delete(LevelThresholdRow).where(
            LevelThresholdRow.quarter == quarter, LevelThresholdRow.model_version == model_version,
            LevelThresholdRow.county.in_(counties)))
    if out:
        conn.execute(LevelThresholdRow.__table__.insert(), out)
    return len(out)


def read_thresholds(engine: Engine, model_version: str) -> dict[tuple[str, str, str], list[float]]:
    """{(quarter, county, township): [t_red, t_yellow, t_blue, t_capacity]} for one model version
    (NULL back to ±inf)."""
    with engine.connect() as conn:
        rows = conn.execute(select(LevelThresholdRow).where(
            LevelThresholdRow.model_version == str(model_version))).mappings()
        out = {}
        for r in rows:
            out[(r["quarter"], r["county"], r["township"])] = [
                math.inf if r["t_red"] is None else r["t_red"], math.inf if r["t_yellow"] is None else r["t_yellow"],
                math.inf if r["t_blue"] is None else r["t_blue"],
                -math.inf if r["t_capacity"] is None else r["t_capacity"]]
        return out


def read_workload(engine: Engine, quarter: str, model_version: str | None = None, scope=None) -> list[dict]:
    stmt = select(LevelThresholdRow).where(LevelThresholdRow.quarter == quarter)
    if model_version is not None:
        stmt = stmt.where(LevelThresholdRow.model_version == str(model_version))
    if scope is not None:
        stmt = stmt.where(*scope.conditions(LevelThresholdRow))
    with engine.connect() as conn:
        rows = conn.execute(stmt.order_by(LevelThresholdRow.county, LevelThresholdRow.township)).mappings()
        return [{k: r[k] for k in ("quarter", "county", "township", "model_version", *COUNTS)} for r in rows]


# ---------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Tasks:
    """An item of :meth:`fangpin.store.Store.write_quarter_tables`'s stream that is a table of
    tasks (fangpin.tasks.task_schema), not of warnings: written where it arrives."""

    table: object


class TaskWrite:
    """One run's tasks, written table by table inside the run's transaction (batch scoring adds
    each chunk's tasks as the chunk finishes): :meth:`add` checks a table (every row would pass
    :class:`TaskRecord`, fangpin.tasks.validate_tasks; the run's quarter; no task twice) and
    upserts it; :meth:`finish` removes the open tasks of the quarter in the run's counties that
    the run no longer produces (module doc)."""

    def __init__(self, quarter: str, run_id: str):
        self.quarter, self.run_id = quarter, run_id
        self.now = _now()
        self.n = 0
        self.seen: set[tuple[str, str]] = set()
        self.counties: set[str] = set()

    def add(self, conn, table) -> int:
        import pyarrow.compute as pc

        from fangpin.store.bulk import bulk_insert, first_repeat
        from fangpin.tasks import task_columns, validate_tasks

        if table.num_rows == 0:
            return 0
        validate_tasks(table)
        quarters = table.column("quarter")
        other = pc.not_equal(quarters, self.quarter).to_numpy(zero_copy_only=False)
        if other.any():
            i = int(other.nonzero()[0][0])
            raise ValueError(f"task for household {table.column('household_id')[i].as_py()} is for "
                             f"{quarters[i].as_py()}, not {self.quarter}")
        twice = first_repeat(list(zip(table.column("household_id").to_pylist(), table.column("rule_id").to_pylist(),
                                      strict=True)), self.seen)
        if twice is not None:
            raise ValueError(f"task {twice[1]} of household {twice[0]} appears twice in the run")
        self.counties.update(pc.unique(table.column("county")).to_pylist())
        n = bulk_insert(conn, TaskRow, [task_columns(table)], {"updated_at": self.now, "run_id": self.run_id},
                        update=(["quarter", "household_id", "rule_id"], _TASK_REFRESHED),
                        convert=("created_at", "deadline"))
        self.n += n
        return n

    def finish(self, conn, scope: Iterable[str]) -> int:
        counties = sorted(set(scope) | self.counties)
        if counties:
            conn.execute(delete(TaskRow).where(TaskRow.quarter == self.quarter, TaskRow.county.in_(counties),
                                               TaskRow.run_id != self.run_id, TaskRow.status == TASK_OPEN))
        return self.n


def _record(r) -> TaskRecord:
    return TaskRecord(id=r.id, kind=r.kind, quarter=r.quarter, county=r.county, township=r.township,
                      village=r.village, household_id=r.household_id, head_name=r.head_name, id_masked=r.id_masked,
                      rule_id=r.rule_id, gap=r.gap, department=r.department, measure=r.measure, detail=r.detail,
                      ruleset_version=r.ruleset_version, created_at=_utc(r.created_at), deadline=r.deadline,
                      status=r.status)


def query_tasks(engine: Engine, *, county: str | None = None, township: str | None = None,
                village: str | None = None, quarter: str | None = None, department: str | None = None,
                status=None, household_id: str | None = None, scope=None, limit: int = 50, offset: int = 0):
    """Tasks matching every given filter, earliest deadline first, then department and household.
    ``scope`` restricts to a key's scope. Returns a :class:`fangpin.store.Page`."""
    from sqlalchemy.orm import Session

    from fangpin.store.repo import Page

    if limit < 1 or offset < 0:
        raise ValueError("limit must be >= 1 and offset >= 0")
    conds = []
    for col, val in ((TaskRow.county, county), (TaskRow.township, township), (TaskRow.village, village),
                     (TaskRow.quarter, quarter), (TaskRow.department, department),
                     (TaskRow.household_id, household_id)):
        if val is not None:
            conds.append(col == val)
    if status is not None:
        vals = [status] if isinstance(status, str) else list(status)
        bad = [v for v in vals if v not in TASK_STATUSES]
        if bad:
            raise ValueError(f"unknown status {bad}; allowed: {list(TASK_STATUSES)}")
        conds.append(TaskRow.status.in_(vals))
    if scope is not None:
        conds += scope.conditions(TaskRow)
    with engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(TaskRow).where(*conds))
    stmt = (select(TaskRow).where(*conds)
            .order_by(TaskRow.deadline, TaskRow.department, TaskRow.household_id, TaskRow.rule_id)
            .limit(limit).offset(offset))
    with Session(engine) as s:
        items = [_record(r) for r in s.scalars(stmt)]
    return Page(items, int(total or 0), limit, offset)


def get_task(engine: Engine, task_id: str) -> TaskRecord | None:
    from sqlalchemy.orm import Session

    with Session(engine) as s:
        row = s.get(TaskRow, task_id)
        return _record(row) if row is not None else None


def set_task_status(engine: Engine, task_id: str, status: str) -> TaskRecord:
    """Change a task's status (待办理 → 办理中 → 已办结), with a guarded UPDATE."""
    with engine.begin() as conn:
        current = conn.scalar(select(TaskRow.status).where(TaskRow.id == task_id))
        if current is None:
            raise KeyError(task_id)
        check_task_transition(current, status)
        changed = conn.execute(update(TaskRow).where(TaskRow.id == task_id, TaskRow.status == current)
                               .values(status=status, updated_at=_now())).rowcount
        if changed != 1:
            raise TaskError("该任务状态已被他人更新，请刷新后重试")
    return get_task(engine, task_id)
