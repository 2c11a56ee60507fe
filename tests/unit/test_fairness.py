"""Fairness audit (pipelines/fairness.py) on generic frames, and sensitive attributes out of the model."""

import warnings

import numpy as np
import pandas as pd

from fangpin.config import Params
from pipelines.fairness import audit


def _frame(n: int = 30_000, recall_c: float = 0.6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "label": (rng.random(n) < 0.05).astype(int),
        "county": rng.choice(["甲县", "乙县", "丙县"], n),
        "head_ethnicity": rng.choice(["汉族", "彝族"], n, p=[0.9, 0.1]),
        "head_sex": rng.choice(["男", "女"], n, p=[0.8, 0.2]),
    })
    hit = rng.random(n) < np.where(df["county"] == "丙县", recall_c, 0.6)
    df["warning"] = (df["label"].astype(bool) & hit) | (rng.random(n) < 0.04)
    return df


def test_group_metrics_match_a_direct_count_and_intervals_cover_them():
    df = _frame()
    rep = audit(df, Params())
    t = rep.tables["county"]
    g = df[df["county"] == "乙县"]
    y, w = g["label"].astype(bool), g["warning"]
    assert t.at["乙县", "n"] == len(g)
    assert t.at["乙县", "recall"] == (y & w).sum() / y.sum()
    assert t.at["乙县", "precision"] == (y & w).sum() / w.sum()
    assert t.at["乙县", "fpr"] == (~y & w).sum() / (~y).sum()
    for m in ("recall", "precision", "fpr"):
        assert (t[f"{m}_lo"] <= t[m]).all() and (t[m] <= t[f"{m}_hi"]).all()
        assert (t[f"{m}_hi"] - t[f"{m}_lo"] > 0).all()
    assert rep.overall["n"] == len(df)


def test_a_planted_recall_gap_is_flagged_and_equal_groups_are_not():
    rep = audit(_frame(recall_c=0.25), Params())
    recall_flags = [f for f in rep.flags if f["metric"] == "recall" and f["attribute"] == "county"]
    assert len(recall_flags) == 1
    f = recall_flags[0]
    assert f["worst_group"] == "丙县" and f["gap"] > 0.25 and f["separated"]
    assert "丙县" in f["text_zh"] and "召回率" in f["text_zh"]
    fair = audit(_frame(recall_c=0.6), Params())
    assert not [f for f in fair.flags if f["attribute"] == "county"]


def test_small_groups_are_reported_but_not_flagged():
    df = _frame(n=3000)
    df.loc[df.index[:20], "county"] = "丁县"
    df.loc[df.index[:20], "warning"] = False
    df.loc[df.index[:20], "label"] = 1  # recall 0 in a 20-row group
    rep = audit(df, Params())
    assert "丁县" in rep.tables["county"].index
    assert not [f for f in rep.flags if "丁县" in (f["worst_group"], f["best_group"])]


def test_report_files(tmp_path):
    rep = audit(_frame(recall_c=0.25), Params(), quarters=["2024Q1"])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*[Gg]lyph.*missing.*")
        paths = rep.write(tmp_path)
    md = paths["md"].read_text(encoding="utf-8")
    assert "户主民族（仅用于审计）" in md and "丙县" in md
    assert paths["png"].stat().st_size > 5000


def test_sensitive_attributes_are_not_model_features():
    from models.features import FEATURES, FeatureSpec

    names = set(FeatureSpec.default().names)
    assert names == {f.name for f in FEATURES}
    for forbidden in ("ethnicity", "head_ethnicity", "民族", "name", "head_name", "姓名", "id_number", "证件号码",
                      "person_key", "id_masked", "sex", "head_sex", "性别"):
        assert forbidden not in names
        assert not any(forbidden in n for n in names if forbidden not in ("sex",)), forbidden
    # the audit attributes stay outside the model's inputs
    from pipelines.fairness import ATTRIBUTES

    audit_only = {a for a, (_, _, only) in ATTRIBUTES.items() if only}
    assert audit_only == {"head_sex", "head_ethnicity"} and not audit_only & names
