"""fangpin.contract helpers: header lookup with aliases, required columns, canonical names."""

from __future__ import annotations

from fangpin import contract


def test_header_map_aliases_and_strip():
    assert contract.LEDGER.get("县").name == "county"
    assert contract.LEDGER.get("县(市、区、旗)").name == "county"
    assert contract.LEDGER.get(" 村 ").name == "village"
    assert contract.LEDGER.get("no such header") is None
    assert contract.EVENTS.get("事件类型").name == "event_type"


def test_required_columns_match_the_contract():
    req = {c.header for c in contract.LEDGER.required}
    assert req == {"统计季度", "县(市、区、旗)", "乡(镇)", "行政村", "户编号", "证件号码", "与户主关系", "健康状况",
                   "劳动技能", "户类型", "监测对象类别", "人均纯收入（元）"}
    assert {c.header for c in contract.EVENTS.required} == {"证件号码", "事件日期", "来源部门", "事件类型"}


def test_names_unique_and_header_for_roundtrip():
    for table in (contract.LEDGER, contract.EVENTS):
        names = [c.name for c in table.columns]
        assert len(names) == len(set(names))
        for c in table.columns:
            assert contract.header_for(c.name, table) == c.header
            assert table.by_name(c.name) is c


def test_levels_and_personal_columns():
    assert "income_per_capita" in contract.HOUSEHOLD_FIELDS and "health" in contract.PERSON_FIELDS
    assert contract.RISK_FIELDS == tuple(f"risk_{i}" for i in range(1, 6))
    personal = {c.name for c in contract.LEDGER_COLUMNS if c.personal}
    assert {"id_number", "name", "health"} <= personal
    assert set(contract.LABOR_CLASS) == set(contract.LABOR_SKILL)
