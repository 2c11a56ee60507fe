"""Levels by measured risk (models/levels.py): risk bands of each township and quarter, rule
floors, the capacity cap with ties, and the same levels from stored cut-offs as from the rows."""

import math

import numpy as np
import pytest

from fangpin.config import LevelParams, Params
from models import levels as lv
from models.rules import rule_ids

P = LevelParams(red_share=0.1, yellow_share=0.2, blue_share=0.3, capacity_per_township=3,
                rule_floors={"R01_INCOME_BELOW_LINE": "红", "R02_INCOME_NEAR_LINE": "黄", "R09_SEVERE_EVENT": "蓝"})


def hits(*ids):
    return [{"rule_id": r, "level": "红", "text": "x", "threshold": "y"} for r in ids]


def test_bands_are_shares_of_the_townships_ranking_whatever_the_probabilities():
    rng = np.random.default_rng(0)
    for scale in (0.0, -3.0):  # a county with a much higher base rate: the same shares are warned
        raw = rng.normal(-5, 1, 100) - scale
        a = lv.assign(raw, [[]] * 100, np.ones(100, bool), ["甲"] * 100, ["东镇"] * 100, ["2024Q1"] * 100, P)
        assert (a.band == 3).sum() == 10 and (a.band == 2).sum() == 20 and (a.band == 1).sum() == 30
        assert (a.combined == 3).sum() == 3  # capacity
        # the most likely first: every 红 outranks every 黄 outranks every 蓝
        for hi, lo in ((3, 2), (2, 1), (1, 0)):
            assert raw[a.band == hi].min() > raw[a.band == lo].max()


def test_floors_lift_rule_hits_and_capacity_keeps_the_highest_risk():
    raw = np.array([-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0, -10.0])
    rh = [[], [], hits("R01_INCOME_BELOW_LINE"), hits("R01_INCOME_BELOW_LINE"), hits("R01_INCOME_BELOW_LINE"),
          [], [], hits("R02_INCOME_NEAR_LINE"), hits("R09_SEVERE_EVENT"), hits("R04_UNSAFE_HOUSING")]
    a = lv.assign(raw, rh, np.ones(10, bool), ["甲"] * 10, ["东镇"] * 10, ["2024Q1"] * 10, P)
    # bands: top 10% (1) red, next 20% (2) yellow, next 30% (3) blue
    assert a.band.tolist() == [3, 2, 2, 1, 1, 1, 0, 0, 0, 0]
    assert a.floor.tolist() == [0, 0, 3, 3, 3, 0, 0, 2, 1, 0]  # R04 has no floor: a task
    # 红 candidates: rows 0, 2, 3, 4 → the top 3 by risk stay, row 4 is deferred to 黄
    assert lv.from_rank(a.combined).tolist() == ["红", "黄", "红", "红", "黄", "蓝", None, "黄", "蓝", None]
    assert a.deferred.tolist() == [False] * 4 + [True] + [False] * 5
    g = a.groups.iloc[0]
    assert (g.n_red_wanted, g.n_red, g.shortfall, g.capacity) == (4, 3, 1, 3)


def test_capacity_never_exceeded_by_ties():
    raw = np.array([-1.0, -2.0, -2.0, -2.0, -3.0])
    a = lv.assign(raw, [hits("R01_INCOME_BELOW_LINE")] * 5, np.ones(5, bool), ["甲"] * 5, ["东镇"] * 5,
                  ["2024Q1"] * 5, P)
    assert (a.combined == 3).sum() == 1  # the three tied at -2 cannot all fit with -1: all move
    assert a.deferred.sum() == 4
    assert lv.capacity_cutoff(np.array([-2.0] * 4), 3) == math.inf


def test_each_township_and_quarter_is_its_own_group_and_out_of_scope_rows_do_not_count():
    raw = np.concatenate([np.linspace(-1, -5, 10), np.linspace(-6, -9, 10)])
    tw = ["东镇"] * 10 + ["西镇"] * 10
    ins = np.ones(20, bool)
    ins[0] = False  # an already monitored household: not ranked, not counted
    a = lv.assign(raw, [[]] * 20, ins, ["甲"] * 20, tw, ["2024Q1"] * 20, P)
    assert (a.band[10:] == 3).sum() == 1  # 西镇 has its own 红, though all its scores are lower
    assert a.groups.set_index("township").loc["东镇", "n_in_scope"] == 9


def test_stored_cut_offs_give_the_same_levels_as_the_rows():
    rng = np.random.default_rng(3)
    n = 400
    raw = rng.normal(-5, 1.2, n)
    rh = [hits("R01_INCOME_BELOW_LINE") if rng.random() < 0.05 else [] for _ in range(n)]
    tw = rng.choice(["东镇", "西镇", "南镇"], n)
    ins = rng.random(n) > 0.1
    batch = lv.assign(raw, rh, ins, ["甲"] * n, tw, ["2024Q1"] * n, P)
    stored = {(r.county, r.township, r.quarter): [getattr(r, c) for c in lv.CUTS]
              for r in batch.groups.itertuples()}
    one_by_one = [lv.assign(raw[i:i + 1], rh[i:i + 1], ins[i:i + 1], ["甲"], tw[i:i + 1], ["2024Q1"], P,
                            lookup=lambda c, t, q: stored.get((c, t, q))) for i in range(n)]
    assert [int(o.combined[0]) for o in one_by_one] == batch.combined.tolist()
    # unknown township: no risk band, floors still apply
    unknown = lv.assign(raw[:1], [hits("R01_INCOME_BELOW_LINE")], [True], ["乙"], ["北镇"], ["2024Q1"], P,
                        lookup=lambda c, t, q: None)
    assert unknown.combined.tolist() == [3] and unknown.band.tolist() == [0]
    # the model's carried cut-offs: JSON-safe, back to ±inf
    carried = lv.fallback_thresholds(batch.groups, "2024Q1")
    got = lv.carried_lookup(carried)("甲", "东镇", "2030Q1")
    assert got == pytest.approx([float(x) for x in stored[("甲", "东镇", "2024Q1")]])
    assert lv.carried_lookup(carried)("乙", "北镇", "2030Q1") is not None  # the overall median


def test_every_rule_is_a_warning_or_a_task_by_default_and_gaps_are_refused():
    p = Params()
    lv.check_coverage(p.levels, p.tasks.routes, rule_ids())
    bad = p.levels.model_copy(update={"rule_floors": {**p.levels.rule_floors, "R04_UNSAFE_HOUSING": None}})
    routes = {k: v for k, v in p.tasks.routes.items() if k != "R04_UNSAFE_HOUSING"}
    with pytest.raises(lv.CoverageError, match="R04_UNSAFE_HOUSING"):
        lv.check_coverage(bad, routes, rule_ids())
    with pytest.raises(lv.CoverageError, match="unknown"):
        lv.check_coverage(p.levels, {**p.tasks.routes, "R99": p.tasks.routes["R04_UNSAFE_HOUSING"]}, rule_ids())


def test_shares_must_leave_room():
    with pytest.raises(ValueError, match="below 1"):
        LevelParams(red_share=0.5, yellow_share=0.3, blue_share=0.3)


def test_rank_of_levels():
    assert lv.rank(["红", None, "蓝", "黄", float("nan")]).tolist() == [3, 0, 1, 2, 0]
