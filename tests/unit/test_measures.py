"""Suggested support: the measures table is consistent, covers every factor key and rule id, and
the lookup follows the drivers and the family's labour capacity."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from fangpin.config import Params
from fangpin.contract import LABOR_CLASSES
from models.measures import (
    DEFAULT_TABLE,
    FACTOR_KEYS,
    UnknownDriver,
    drivers_of,
    load_table,
    normalise_labour_class,
    suggest,
    table_for,
)


@pytest.fixture(scope="module")
def table():
    return load_table()


def types(measures):
    return [m.type for m in measures]


def test_packaged_table_covers_every_factor_and_rule(table):
    from models.rules import RULE_LEVELS

    for key in (*FACTOR_KEYS, *RULE_LEVELS):
        for cls in LABOR_CLASSES:
            assert table.measure_ids(key, cls), (key, cls)
    # every measure type of domain.md is reachable
    reachable = {table.catalogue[m].type for by in table.map.values() for ids in by.values() for m in ids}
    assert {"健康帮扶", "教育帮扶", "就业帮扶", "公益岗位帮扶", "产业帮扶", "综合保障", "金融帮扶",
            "防贫保险", "住房安全保障", "饮水安全保障"} <= reachable


def test_feature_groups_of_the_model_resolve(table):
    from models.features import FEATURES

    for g in {f.group for f in FEATURES}:
        assert table.knows(g), g


def test_labour_capacity_shapes_the_support(table):
    none = types(suggest(["income"], "无劳动力", table=table))
    weak = types(suggest(["income"], "弱劳动力", table=table))
    full = types(suggest(["income"], "有劳动力", table=table))
    assert none[0] == "综合保障" and "就业帮扶" not in none and "产业帮扶" not in none
    assert weak[0] == "公益岗位帮扶" and "综合保障" in weak
    assert full[0] == "就业帮扶" and "综合保障" not in full and "金融帮扶" in full


def test_drivers_pick_matching_measures(table):
    assert types(suggest(["schooling"], "有劳动力", table=table)) == ["教育帮扶", "教育帮扶"]
    assert "雨露计划" in suggest(["schooling"], "无劳动力", table=table)[1].text
    assert types(suggest(["housing_water"], "弱劳动力", table=table)) == ["住房安全保障", "饮水安全保障"]
    med = suggest(["medical"], "无劳动力", table=table)
    assert types(med)[0] == "健康帮扶" and "大病" in med[0].text and "综合保障" in types(med)


def test_round_robin_cap_and_dedup(table):
    out = suggest(["R03_RIGID_SPENDING", "income", "medical"], "有劳动力", table=table, max_measures=4)
    assert len(out) == 4
    assert [m.text for m in out][:2] == [table.measure("serious_illness").text,
                                         table.measure("employment_services").text]
    assert len({m.text for m in out}) == 4
    assert len(suggest(["income", "medical", "schooling", "housing", "water"], "弱劳动力", table=table,
                       max_measures=2)) == 2


def test_defaults_when_no_driver_and_unknown_driver_is_an_error(table):
    assert types(suggest([], "无劳动力", table=table)) == ["综合保障", "社会帮扶"]
    with pytest.raises(UnknownDriver, match="nope"):
        suggest(["nope"], "有劳动力", table=table)


def test_warning_drivers_order():
    hits = [{"rule_id": "R09_SEVERE_EVENT", "level": "黄", "text": "", "threshold": ""},
            {"rule_id": "R05_NO_SAFE_WATER", "level": "红", "text": "", "threshold": ""}]
    reasons = [{"factor": "income", "direction": "down"}, {"factor": "medical", "direction": "up"},
               {"factor": "schooling", "direction": "up"}]
    assert drivers_of(hits, reasons) == ["R05_NO_SAFE_WATER", "R09_SEVERE_EVENT", "medical", "schooling"]
    p = Params()  # as RiskModel.measures_of looks them up: drivers, then the table with the cap
    ms = suggest(drivers_of(hits, reasons), "普通劳动力", table=table_for(p), max_measures=p.warnings.max_measures)
    assert types(ms)[0] == "饮水安全保障" and len(ms) == 4


def test_labour_class_normalisation():
    assert normalise_labour_class("技能劳动力") == "有劳动力"
    assert normalise_labour_class("丧失劳动力") == "无劳动力"
    assert normalise_labour_class(np.int64(1)) == "弱劳动力"
    assert normalise_labour_class(2) == "无劳动力"
    for bad in ("壮劳力", 3, None, True, 1.5):
        with pytest.raises(ValueError):
            normalise_labour_class(bad)


def test_table_path_from_params_and_validation(tmp_path):
    raw = yaml.safe_load(DEFAULT_TABLE.read_text(encoding="utf-8"))
    raw["catalogue"]["water_repair"]["text"] = "县水务局上门维修"
    own = tmp_path / "my_measures.yaml"
    own.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    p = Params.model_validate({"warnings": {"measures_table": str(own)}})
    assert suggest(["water"], "无劳动力", table=table_for(p))[0].text == "县水务局上门维修"

    broken = dict(raw, map={k: v for k, v in raw["map"].items() if k != "schooling"})
    broken["map"]["housing"] = {"无劳动力": ["no_such_measure"]}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(broken, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ValueError) as exc:
        load_table(bad)
    msg = str(exc.value)
    assert "schooling" in msg and "no_such_measure" in msg and "map.housing: no measure for 有劳动力" in msg
    assert str(bad) in msg
