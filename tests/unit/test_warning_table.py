"""The bulk warning check (fangpin.warnings.validate_table) refuses what WarningRecord refuses."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from pydantic import ValidationError

from fangpin.config import Params
from fangpin.ids import check_char, mask
from fangpin.warnings import WarningRecord, record_schema, validate_table


def _full_id(i: int) -> str:
    first17 = f"41010219800101{i:03d}"[:17]
    return first17 + check_char(first17)


def _good() -> dict:
    return WarningRecord.create(
        params=Params(), created_at=datetime(2025, 10, 1, tzinfo=UTC), quarter="2025Q3", county="甲县",
        township="东镇", village="一村", household_id="H-1", head_name="户主", id_masked=mask(_full_id(1)),
        level="红", probability=0.42,
        rule_hits=[{"rule_id": "R01", "level": "红", "text": "人均纯收入5,200元", "threshold": "低于监测线"}],
        reasons=[{"factor": "income", "text": "人均纯收入5,200元", "direction": "up", "logodds": 0.5, "prob_pp": 3.0}],
        measures=[{"type": "就业帮扶", "text": "公益岗位"}], model_version="1", ruleset_version="r1",
    ).model_dump(mode="json")


def _table(*rows):
    return pa.Table.from_pylist(list(rows), schema=record_schema())


def _set(d: dict, path: tuple, value) -> dict:
    d = copy.deepcopy(d)
    target = d
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return d


BAD = [
    (("id_masked",), "full", "id_masked"),
    (("id_masked",), "410102", "id_masked"),
    (("probability",), 1.01, "probability"),
    (("probability",), -0.1, "probability"),
    (("level",), "绿", "level"),
    (("status",), "已完成", "status"),
    (("quarter",), "2025Q5", "quarter"),
    (("head_name",), "full", "full ID"),
    (("household_id",), "full", "full ID"),
    (("reasons", 0, "text"), "full", "full ID"),
    (("rule_hits", 0, "text"), "full", "full ID"),
    (("measures", 0, "text"), "full", "full ID"),
    (("reasons", 0, "direction"), "sideways", "direction"),
    (("rule_hits", 0, "level"), "紫", "rule hit level"),
    (("reasons", 0, "factor"), None, "reasons.factor"),
    (("village",), None, "village"),
    (("deadline",), "2025-13-40", "deadline"),
    (("created_at",), "2025-10-01 at noon", "created_at"),
]


def test_a_good_table_passes_and_matches_the_record():
    good = _good()
    validate_table(_table(good, _set(good, ("household_id",), "H-2")))
    WarningRecord.model_validate(good)


@pytest.mark.parametrize("path,value,what", BAD, ids=[f"{'.'.join(map(str, p))}={v}" for p, v, _ in BAD])
def test_what_the_record_refuses_the_table_refuses(path, value, what):
    good = _good()
    bad = _set(good, path, _full_id(7) if value == "full" else value)
    with pytest.raises(ValidationError):
        WarningRecord.model_validate(bad)
    with pytest.raises(ValueError, match=rf"warning row 1 \(household .*\): .*{what}") as exc:
        validate_table(_table(good, bad))
    assert _full_id(7) not in str(exc.value)  # never the full ID number, not even as a household id


def test_at_most_four_reasons():
    good = _good()
    bad = _set(good, ("reasons",), good["reasons"] * 5)
    with pytest.raises(ValidationError):
        WarningRecord.model_validate(bad)
    with pytest.raises(ValueError, match="more than 4 reasons"):
        validate_table(_table(bad))
