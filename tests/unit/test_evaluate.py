"""Evaluation: the four rankings as issue 3 defines them, metrics at the rules' workload, the exact
keys of reports/metrics.json."""

import numpy as np
import pandas as pd
import pytest

from fangpin.config import Params
from pipelines.evaluate import at_k, calibration_error, compute_metrics, system_orders

SYSTEM_KEYS = {"auc", "pr_auc", "brier", "recall_at_rules_workload", "precision_at_rules_workload",
               "recall_at_2x_rules_workload", "recall_at_5pct"}


def frame():
    # 6 households: two rule hits (one red with low prob, one yellow with high prob)
    return pd.DataFrame({
        "rule_rank": [3, 2, 0, 0, 0, 0],
        "income_ratio": [1.5, 0.9, 1.1, 3.0, 1.05, 2.0],
        "probability": [0.01, 0.5, 0.2, 0.3, 0.02, 0.03],
        "raw_score": [-4.0, 0.0, -1.0, -0.5, -3.5, -3.0],
        "oracle": [0.1, 0.2, 0.3, 0.4, 0.05, 0.06],
    })


def test_system_orders_follow_the_issue():
    o = system_orders(frame())
    # rules: hits first by level (red before yellow), then the rest by income relative to the line
    assert o["rules"].tolist() == [0, 1, 4, 2, 5, 3]
    # model: by probability alone
    assert o["model"].tolist() == [1, 3, 2, 5, 4, 0]
    # combined: every rule hit first, ordered by the model, then the rest by the model
    assert o["combined"].tolist() == [1, 0, 3, 2, 5, 4]
    assert o["oracle"].tolist() == [3, 2, 1, 0, 5, 4]


def test_ties_in_calibrated_probability_are_broken_by_raw_score():
    f = frame().assign(probability=0.1)
    assert system_orders(f)["model"].tolist() == [1, 3, 2, 5, 4, 0]


def test_recall_and_precision_at_k():
    y = np.array([1, 0, 1, 0, 0, 1.0])
    order = np.array([0, 1, 2, 3, 4, 5])
    assert at_k(order, y, 2) == (pytest.approx(1 / 3), pytest.approx(0.5))
    assert at_k(order, y, 6) == (pytest.approx(1.0), pytest.approx(0.5))


def test_calibration_error():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, 200_000)
    y = (rng.random(len(p)) < p).astype(float)
    assert calibration_error(p, y) < 0.003
    assert calibration_error(np.clip(p * 2, 0, 1), y) > 0.04


def test_metrics_json_has_exactly_the_issue_keys():
    rng = np.random.default_rng(1)
    n = 2000
    f = pd.DataFrame({
        "quarter_idx": np.repeat([8096, 8097], n // 2), "in_scope": True, "labelled": True,
        "rule_rank": rng.choice([0, 0, 0, 2, 3], n), "income_ratio": rng.uniform(0.5, 4, n),
        "probability": rng.uniform(0, 0.2, n), "oracle": rng.uniform(0, 0.2, n),
        "county": rng.choice(["甲县", "乙县"], n), "township": "甲镇", "household_type": "一般农户",
        "labor_class": "有劳动力", "head_ethnicity": "汉族", "head_sex": rng.choice(["男", "女"], n),
        "rule_level": None, "model_level": None,
        "combined_level": rng.choice(np.array(["红", "黄", "蓝", None], dtype=object), n, p=[0.02, 0.04, 0.06, 0.88]),
        "deferred": False,
    })
    f["raw_score"] = np.log(f["probability"] / (1 - f["probability"]))
    f["label"] = (rng.random(n) < f["probability"]).astype(float)
    m, d, _ = compute_metrics(f, [8096, 8097], Params())
    assert set(m) == {"test_quarters", "n_test", "positives", "rules_workload", "systems", "slices", "levels",
                      "workload"}
    lv = f["combined_level"].to_numpy(dtype=object)
    for name in ("红", "黄", "蓝"):
        assert set(m["levels"][name]) == {"households", "share", "precision"}
        assert m["levels"][name]["households"] == int((lv == name).sum())
        assert m["levels"][name]["share"] == pytest.approx((lv == name).mean())
        assert m["levels"][name]["precision"] == pytest.approx(f["label"][lv == name].mean())
    red_lists = f[lv == "红"].groupby(["county", "township", "quarter_idx"]).size()
    assert m["workload"] == {"warned_share": pytest.approx(f["combined_level"].notna().mean()),
                             "visits_per_township_max": int(red_lists.max()),
                             "capacity_per_township": Params().levels.capacity_per_township}
    assert m["test_quarters"] == ["2024Q1", "2024Q2"] and m["n_test"] == n
    assert m["rules_workload"] == int((f["rule_rank"] > 0).sum())
    assert set(m["systems"]) == {"rules", "model", "combined", "oracle"}
    for s in m["systems"].values():
        assert set(s) == SYSTEM_KEYS
    assert m["systems"]["rules"]["brier"] is None and m["systems"]["model"]["brier"] > 0
    # at k, combined and rules select the same households by construction
    assert m["systems"]["combined"]["recall_at_rules_workload"] == m["systems"]["rules"]["recall_at_rules_workload"]
    assert {"county", "township", "household_type", "labor_class", "ethnicity_audit", "head_sex_audit"} <= set(m["slices"])
    assert d["systems"]["model"]["calibration_error"] is not None
