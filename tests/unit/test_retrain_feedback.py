"""Cadres' verification outcomes as the retrain command reports them."""

import pandas as pd

from fangpin.warnings import STATUS_EXCLUDED, STATUS_INCLUDED, STATUS_OPEN
from pipelines.retrain import feedback_frame, feedback_summary


def _df():
    return pd.DataFrame({
        "quarter": ["2024Q1"] * 6 + ["2024Q2"] * 2,
        "level": ["红", "红", "黄", "黄", "蓝", "蓝", "红", "黄"],
        "status": [STATUS_INCLUDED, STATUS_EXCLUDED, STATUS_INCLUDED, STATUS_EXCLUDED, STATUS_EXCLUDED, STATUS_OPEN,
                   STATUS_OPEN, STATUS_INCLUDED],
        "status_reason": [None, "收入已稳定超过监测线", None, "收入已稳定超过监测线", "已享受低保", None, None, None],
    })


def test_counts_by_level_status_and_reason():
    s = feedback_summary(_df())
    assert (s["warnings"], s["confirmed"], s["excluded"], s["open"]) == (8, 3, 3, 2)
    assert list(s["by_level"]) == ["红", "黄", "蓝"]
    assert s["by_level"]["红"] == {"warnings": 3, "confirmed": 1, "excluded": 1, "open": 1}
    assert s["by_level"]["蓝"] == {"warnings": 2, "confirmed": 0, "excluded": 1, "open": 1}
    assert s["excluded_by_reason"] == {"收入已稳定超过监测线": 2, "已享受低保": 1}
    assert s["by_quarter"]["2024Q2"] == {"warnings": 2, "confirmed": 1, "excluded": 0}
    assert s["confirmed_share_of_verified"] == 0.5


def test_feedback_file_exported_with_the_ledger(tmp_path):
    p = tmp_path / "feedback.csv"
    _df().to_csv(p, index=False, encoding="utf-8-sig")
    assert feedback_summary(feedback_frame(None, p))["excluded"] == 3


def test_no_store_yet_is_reported_not_created(tmp_path, monkeypatch):
    from fangpin.config import Params

    monkeypatch.setenv("FANGPIN_STORE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    assert feedback_frame(Params()) is None
    assert not (tmp_path / "none.db").exists()
    assert feedback_summary(None) == {"available": False}
