"""The rule guardrail: each rule fires on the household's own figures, thresholds come from params,
one household and a whole frame give the same hits."""

import numpy as np
import pytest
from canonical_frames import LINES, make_frames

from fangpin.config import Params, RuleParams
from models.features import build_features, frames_from_records
from models.levels import RANK
from models.rules import RULE_LEVELS, Ruleset

RULES = Ruleset.from_params(RuleParams())


def _member(**kw):
    m = {"relation": "户主", "health": "健康", "labor_skill": "普通劳动力", "age": 45, "work_status": "县内务工",
         "medical_insured": True, "school_status": "非在校生"}
    m.update(kw)
    return m


def household(**kw):
    rec = {"household_id": "H1", "quarter": "2024Q2", "county": "甲县", "township": "甲镇", "village": "甲村",
           "household_type": "一般农户", "income_per_capita": 20000.0, "medical_out_of_pocket": 0.0,
           "unsafe_housing": False, "safe_water": True, "members": [_member(), _member(relation="配偶")],
           "events": []}
    rec.update(kw)
    return rec


def hits(rec, rules=RULES):
    fr, _ = frames_from_records([rec], LINES)
    feats = build_features(fr, population=False)
    return rules.evaluate(feats, fr.events).iloc[0]


def ids(rec, rules=RULES):
    return {h["rule_id"] for h in hits(rec, rules)["rule_hits"]}


def test_a_comfortable_household_has_no_hit():
    r = hits(household())
    assert r["rule_hits"] == [] and r["rule_rank"] == 0 and r["rule_level"] is None


def test_income_below_line_names_the_figures():
    r = hits(household(income_per_capita=6120.0))
    (h,) = r["rule_hits"]
    assert h == {"rule_id": "R01_INCOME_BELOW_LINE", "level": "红",
                 "text": "人均纯收入6,120元，低于2024年监测线7,300元", "threshold": "2024年监测线7,300元"}
    assert r["rule_level"] == "红"


def test_income_margin_comes_from_params():
    rec = household(income_per_capita=8000.0)  # 2024 line 7,300; +20% = 8,760
    (h,) = hits(rec)["rule_hits"]
    assert h["rule_id"] == "R02_INCOME_NEAR_LINE" and h["level"] == "黄"
    assert "8,000元" in h["text"] and "8,760元" in h["threshold"]
    narrow = Ruleset.from_params(RuleParams(income_margin=0.05))  # +5% = 7,665 → no hit
    assert ids(rec, narrow) == set()


def test_rigid_spending_share_of_income():
    rec = household(income_per_capita=15000.0, medical_out_of_pocket=18000.0)  # 2 members: 30,000/yr
    (h,) = hits(rec)["rule_hits"]
    assert h["rule_id"] == "R03_RIGID_SPENDING"
    assert "18,000元" in h["text"] and "30,000元" in h["text"] and "60%" in h["text"]
    assert ids(rec, Ruleset.from_params(RuleParams(rigid_spending_share=0.7))) == set()


@pytest.mark.parametrize("change, rule", [
    ({"unsafe_housing": True}, "R04_UNSAFE_HOUSING"),
    ({"safe_water": False}, "R05_NO_SAFE_WATER"),
    ({"members": [_member(), _member(relation="配偶", medical_insured=False, health="长期慢性病")]},
     "R06_NO_MEDICAL_INSURANCE"),
    ({"members": [_member(), _member(relation="之子", age=12, school_status="非在校生")]}, "R07_OUT_OF_SCHOOL"),
    ({"members": [_member(labor_skill="丧失劳动力", age=80)]}, "R08_NO_LABOUR_NO_SUPPORT"),
])
def test_sanbaozhang_water_and_labour_rules(change, rule):
    r = hits(household(**change))
    assert {h["rule_id"] for h in r["rule_hits"]} == {rule}
    assert r["rule_level"] == RULE_LEVELS[rule]


def test_a_healthy_uninsured_member_is_not_a_hit():
    assert ids(household(members=[_member(), _member(relation="配偶", medical_insured=False)])) == set()


def test_no_labour_with_dibao_is_not_a_hit():
    assert ids(household(members=[_member(labor_skill="丧失劳动力", age=80)], dibao="农村低保")) == set()


def test_severe_event_within_the_look_back():
    ev = [{"event_date": "2024-05-10", "event_type": "重大疾病", "department": "卫健", "amount": 23400.0},
          {"event_date": "2024-05-20", "event_type": "住院", "department": "医保", "amount": 900.0}]
    (h,) = hits(household(events=ev))["rule_hits"]
    assert h["rule_id"] == "R09_SEVERE_EVENT" and "重大疾病1次（23,400元）" in h["text"] and "住院" not in h["text"]
    old = [{"event_date": "2023-11-10", "event_type": "房屋受损", "amount": 5000.0}]
    assert ids(household(events=old)) == set()  # last quarter only by default
    two = Ruleset.from_params(RuleParams(severe_event_quarters=3))
    assert ids(household(events=old), two) == {"R09_SEVERE_EVENT"}
    big = Ruleset.from_params(RuleParams(severe_event_min_amount=30000))
    assert ids(household(events=ev), big) == set()


def test_rule_level_is_the_highest_hit():
    r = hits(household(income_per_capita=8000.0, unsafe_housing=True))
    assert {h["level"] for h in r["rule_hits"]} == {"红", "黄"} and r["rule_level"] == "红" and r["rule_rank"] == 3


def test_frame_and_single_household_agree():
    fr = make_frames(200, 5, seed=2)
    feats = build_features(fr)
    whole = RULES.evaluate(feats, fr.events)
    assert (whole["rule_rank"] > 0).any()
    for i in np.flatnonzero(whole["rule_rank"].to_numpy() > 0)[:25]:
        one = RULES.evaluate(feats.iloc[[i]].reset_index(drop=True), fr.events).iloc[0]
        assert one["rule_hits"] == whole["rule_hits"].iloc[i]
    ranks = [max((RANK[h["level"]] for h in hs), default=0) for hs in whole["rule_hits"]]
    assert ranks == whole["rule_rank"].tolist()


def test_ruleset_round_trips_with_its_version():
    p = Params()
    rs = Ruleset.from_params(p.rules)
    assert Ruleset.from_json(rs.to_json()) == rs and rs.version == p.rules.version


def test_severe_events_are_counted_and_summed_per_type_in_sorted_order():
    ev = [{"event_date": "2024-05-10", "event_type": "重大疾病", "amount": 23400.0},
          {"event_date": "2024-06-01", "event_type": "重大疾病", "amount": 1000.0},
          {"event_date": "2024-04-20", "event_type": "房屋受损", "amount": None}]
    (h,) = hits(household(events=ev))["rule_hits"]
    types = sorted(["重大疾病", "房屋受损"])  # the groups appear in sorted type order
    parts = {"重大疾病": "重大疾病2次（24,400元）", "房屋受损": "房屋受损1次"}
    assert h["text"] == "本季度部门推送：" + "、".join(parts[t] for t in types)


def test_table_and_dataframe_features_give_the_same_rule_columns():
    from models.features import feature_table

    fr = make_frames(200, 5, seed=2)
    table = RULES.evaluate_columns(feature_table(fr), fr.events)
    frame = RULES.evaluate(build_features(fr), fr.events)
    assert (frame["rule_hits"].apply(lambda hs: any(h["rule_id"] == "R09_SEVERE_EVENT" for h in hs))).any()
    assert list(table["rule_hits"]) == frame["rule_hits"].tolist()
    assert table["rule_rank"].tolist() == frame["rule_rank"].tolist()
    assert list(table["rule_level"]) == frame["rule_level"].tolist()
