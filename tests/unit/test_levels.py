import numpy as np

from fangpin.config import LevelParams
from models import levels as lv


def test_cutoffs():
    p = LevelParams(red=0.3, yellow=0.1, blue=0.04)
    r = lv.model_rank(np.array([0.5, 0.3, 0.2, 0.05, 0.01]), p)
    assert lv.from_rank(r).tolist() == ["红", "红", "黄", "蓝", None]


def test_capacity_per_township():
    p = LevelParams(mode="capacity", capacity_per_township=2)
    prob = np.array([0.01, 0.02, 0.5, 0.03, 0.001, 0.002])
    twp = np.array(["a", "a", "a", "b", "b", "b"])
    r = lv.model_rank(prob, p, twp, np.zeros(6))
    # top two of each township get a warning, at least 蓝; the rest none
    assert lv.from_rank(r).tolist() == [None, "蓝", "红", "蓝", None, "蓝"]


def test_combined_is_max_so_a_rule_hit_is_always_a_warning():
    rule = np.array([3, 2, 0, 0, 1])
    model = np.array([0, 3, 2, 0, 0])
    c = lv.combine(rule, model)
    assert c.tolist() == [3, 3, 2, 0, 1]
    assert ((c >= rule) & (c >= model)).all()


def test_rank_of_levels():
    assert lv.rank(["红", None, "蓝", "黄", float("nan")]).tolist() == [3, 0, 1, 2, 0]
