"""The bulk task check (fangpin.tasks.validate_tasks) refuses what TaskRecord refuses, names the
row, and reads the timestamps TaskRecord reads; task_columns gives the store its values."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pytest
from pydantic import ValidationError

from fangpin.ids import check_char, mask
from fangpin.tasks import TaskRecord, task_columns, task_schema, validate_tasks


def _full_id(i: int) -> str:
    first17 = f"41010219800101{i:03d}"[:17]
    return first17 + check_char(first17)


def _good(i: int = 0) -> dict:
    return {"id": f"T{i:019d}", "kind": "保障缺口", "quarter": "2025Q3", "county": "甲县", "township": "东镇",
            "village": "一村", "household_id": f"H-{i}", "head_name": "户主", "id_masked": mask(_full_id(1)),
            "rule_id": "R04_UNSAFE_HOUSING", "gap": "住房安全", "department": "住建", "measure": "危房改造",
            "detail": "住房为危房（是否危房户：是）", "ruleset_version": "r1",
            "created_at": "2025-10-10T02:00:00Z", "deadline": "2026-01-08", "status": "待办理"}


def _table(rows):
    return pa.Table.from_pylist(rows, schema=task_schema())


BAD = [
    ("kind", "走访", "kind"),
    ("status", "已完成", "status"),
    ("detail", "full", "full ID"),
    ("head_name", "full", "full ID"),
    ("household_id", "full", "full ID"),
    ("department", None, "department"),
    ("created_at", "yesterday", "created_at"),
    ("deadline", "2026-13-01", "deadline"),
]


@pytest.mark.parametrize(("field", "value", "why"), BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_the_bulk_check_refuses_what_task_record_refuses_and_names_the_row(field, value, why):
    bad = {**_good(7), field: _full_id(2) if value == "full" else value}
    with pytest.raises(ValidationError):
        TaskRecord.model_validate(bad)
    with pytest.raises(ValueError, match=r"(?s)task row 7 \(household .*\): .*" + why) as exc:
        validate_tasks(_table([_good(i) for i in range(7)] + [bad] + [_good(9)]))
    assert _full_id(2) not in str(exc.value)  # the field and the rule, never a full ID


def test_good_rows_pass_and_a_naive_timestamp_is_utc_as_task_record_reads_it():
    rows = [_good(i) for i in range(3)]
    rows[1]["created_at"] = "2025-10-10T02:00:00"  # naive: UTC (TaskRecord._aware)
    rows[2]["head_name"] = None
    validate_tasks(_table(rows))
    t = task_columns(_table(rows))
    assert t.column("created_at").to_pylist() == [datetime(2025, 10, 10, 2, 0, tzinfo=UTC)] * 3
    assert t.column("deadline").to_pylist() == [date(2026, 1, 8)] * 3
    assert [TaskRecord.model_validate(r).created_at for r in rows] == [datetime(2025, 10, 10, 2, 0, tzinfo=UTC)] * 3


def test_a_table_with_other_columns_is_refused():
    t = _table([_good()]).append_column("extra", pa.array(["x"]))
    with pytest.raises(ValueError, match="columns"):
        validate_tasks(t)
