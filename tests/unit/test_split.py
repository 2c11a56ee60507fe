"""The split (models/train.py): purging by label windows, short ledgers (villages held out inside the
training quarters), a village test when nothing can be tested forward in time, forced modes."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from fangpin import quarters as fq
from fangpin.config import ModelParams
from fangpin.errors import UserError
from models.train import NotEnoughQuarters, Split, draw_villages, row_roles, time_split, village_key

Q0 = fq.to_index("2022Q1")


def _mp(**kw) -> ModelParams:
    return ModelParams(**kw)


def _check_purge(s: Split) -> None:
    """The honest rule: every fitting row's label window ends by the first test quarter (forward
    test), every training row's by the first validation quarter (split by quarter)."""
    H = s.horizon
    if s.test_mode == "quarters":
        assert all(q + H <= s.test[0] for q in (*s.train, *s.valid, *s.calib))
    if s.fit_mode == "quarters":
        assert all(q + H <= s.valid[0] for q in s.train)
        assert max(s.valid) < min(s.calib)
    else:
        assert s.train == s.valid == s.calib


def test_quarterly_ledger_uses_quarters_and_purges_only_what_overlaps():
    qs = range(Q0, Q0 + 10)  # 12 snapshots, H = 2: quarters 0 … 9 labelled
    s = time_split(qs, 2, _mp())
    assert (s.fit_mode, s.test_mode) == ("quarters", "quarters")
    assert s.test == (Q0 + 8, Q0 + 9)
    # calibration 6: window (6, 8] ends at the first test quarter; 7 would reach into it (purged)
    assert s.calib == (Q0 + 6,) and s.valid == (Q0 + 5,)
    # training t + 2 ≤ 5: quarter 3 is kept (the old rule t + H < v dropped it)
    assert s.train == tuple(range(Q0, Q0 + 4))
    assert s.purged == (Q0 + 4, Q0 + 7)
    _check_purge(s)


def test_every_split_of_auto_is_honest():
    for n, H, nv, nc, nt in itertools.product((1, 2, 3, 4, 6, 9), (1, 2, 4), (0, 1, 2), (1, 2), (1, 2)):
        qs = list(range(Q0, Q0 + n))
        s = time_split(qs, H, _mp(validation_quarters=nv, calibration_quarters=nc, test_quarters=nt))
        _check_purge(s)
        assert s.train and s.test
        assert set(s.purged).isdisjoint({*s.train, *s.valid, *s.calib, *s.test})
        assert s.reason and s.reason_zh
        # a village test only when no quarter can be tested forward in time
        assert (s.test_mode == "villages") == (qs[0] + H > qs[-1])


def test_annual_ledger_three_snapshots_one_training_and_one_test_quarter():
    # snapshots 2022Q4, 2023Q4, 2024Q4 with H = 4: the first two are labelled
    s = time_split([fq.to_index("2022Q4"), fq.to_index("2023Q4")], 4, _mp())
    assert s.test == (fq.to_index("2023Q4"),) and s.test_mode == "quarters"
    # 2022Q4's window (2022Q4, 2023Q4] ends exactly at the test quarter: allowed, as in deployment
    assert s.train == (fq.to_index("2022Q4"),) and s.fit_mode == "grouped"
    assert "villages" in s.reason and "村" in s.reason_zh


def test_two_snapshots_test_on_held_out_villages_and_say_so():
    s = time_split([fq.to_index("2023Q4")], 4, _mp())
    assert (s.fit_mode, s.test_mode) == ("grouped", "villages")
    zh, en = s.describe()
    assert "not to the future" in en and "不能代表对未来季度的预测效果" in zh


def test_forced_modes_refuse_a_short_ledger_with_sentences():
    with pytest.raises(NotEnoughQuarters) as exc:
        time_split([fq.to_index("2022Q4"), fq.to_index("2023Q4")], 4, _mp(split="quarters"))
    assert isinstance(exc.value, UserError) and "model.split" in exc.value.en and "model.split" in exc.value.zh
    with pytest.raises(NotEnoughQuarters):
        time_split([fq.to_index("2023Q4")], 4, _mp(test_split="quarters"))
    with pytest.raises(NotEnoughQuarters) as exc:
        time_split([], 2, _mp())
    assert "labels.horizon_quarters" in exc.value.en
    # grouped on request even with quarters to spare; quarters count 0 means grouped too
    assert time_split(range(Q0, Q0 + 10), 2, _mp(split="grouped")).fit_mode == "grouped"
    assert time_split(range(Q0, Q0 + 10), 2, _mp(calibration_quarters=0)).fit_mode == "grouped"
    with pytest.raises(ValueError):
        _mp(split="quarters", validation_quarters=0)


def _rows(n_villages=30, per=10, quarters=(Q0,)):
    vil = np.repeat([f"县|镇{i % 3}|村{i}" for i in range(n_villages)], per)
    hh = np.arange(len(vil)).astype(str)
    q = np.concatenate([np.full(len(vil), x) for x in quarters])
    return np.tile(vil, len(quarters)), q, np.tile(hh, len(quarters))


def test_villages_are_disjoint_deterministic_and_roles_follow_them():
    vil, q, hh = _rows()
    mp = _mp()
    s = draw_villages(time_split([Q0], 4, mp), vil, q, mp)
    assert s == draw_villages(time_split([Q0], 4, mp), vil, q, mp)  # seeded
    sets = [set(s.valid_villages), set(s.calib_villages), set(s.test_villages)]
    assert all(a and a.isdisjoint(b) for a, b in itertools.combinations(sets, 2))
    roles, moved = row_roles(s, q, vil, hh, np.ones(len(q), bool))
    assert moved == 0
    for role, villages in (("valid", s.valid_villages), ("calib", s.calib_villages), ("test", s.test_villages)):
        assert set(vil[roles == role]) == set(villages)
    assert set(vil[roles == "train"]).isdisjoint(set().union(*sets))
    # round trip through train_info.json
    assert Split.from_dict(s.to_dict()) == s
    frame = pd.DataFrame({"quarter_idx": q, "county": [v.split("|")[0] for v in vil],
                          "township": [v.split("|")[1] for v in vil], "village": [v.split("|")[2] for v in vil]})
    assert (village_key(frame) == vil).all()
    assert (s.test_rows(frame) == (roles == "test")).all()


def test_a_household_that_moved_village_is_not_on_two_sides():
    vil, q, hh = _rows(quarters=(Q0, Q0 + 4))
    mp = _mp()
    s = draw_villages(time_split([Q0, Q0 + 4], 4, mp), vil, q, mp)  # forward test, grouped fit
    assert s.test_mode == "quarters" and s.fit_mode == "grouped"
    # household "0" lives in a training village in Q0 and moves into a calibration village in Q0+4
    train_v = next(v for v in np.unique(vil) if v not in (*s.valid_villages, *s.calib_villages))
    s2 = Split(train=(Q0, Q0 + 4), valid=(Q0, Q0 + 4), calib=(Q0, Q0 + 4), test=(Q0 + 8,), horizon=4,
               fit_mode="grouped", valid_villages=s.valid_villages, calib_villages=s.calib_villages)
    vil2 = vil.copy()
    first = np.flatnonzero(hh == "0")
    vil2[first[0]] = train_v
    vil2[first[1]] = s.calib_villages[0]
    roles, moved = row_roles(s2, q, vil2, hh, np.ones(len(q), bool))
    assert moved == 1 and (roles[first] == "").all()
    # a household seen in a later test quarter is expected in a forward test: not dropped
    roles, moved = row_roles(s, q, vil, hh, np.ones(len(q), bool))
    assert moved == 0
