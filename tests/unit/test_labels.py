"""Labels exactly as the contract defines them (../shared/ledger-contract.md, "The outcome to predict")."""

import numpy as np
import pandas as pd
import pytest

from fangpin import quarters as fq
from pipelines.labels import identification_quarter, in_scope, make_labels


def _hh(rows):
    """rows: (household_id, quarter, monitor_category, risk_eliminated, monitor_since)."""
    df = pd.DataFrame(rows, columns=["household_id", "quarter", "monitor_category", "risk_eliminated",
                                     "monitor_since"])
    df["quarter_idx"] = df["quarter"].map(fq.to_index)
    df["risk_eliminated"] = df["risk_eliminated"].astype("boolean")
    df["monitor_since"] = df["monitor_since"].astype("Int32")
    return df


Q = fq.span("2023Q1", 5)


def test_in_scope_definition():
    df = _hh([
        ("a", Q[0], None, None, None),                 # never monitored: in scope
        ("b", Q[0], "边缘易致贫户", False, 202201),     # unresolved monitoring object: out
        ("c", Q[0], "脱贫不稳定户", True, 202201),      # risk eliminated: in scope (返贫 risk)
    ])
    assert in_scope(df).tolist() == [True, False, True]


def test_positive_when_newly_identified_within_horizon():
    rows = []
    # a: identified in Q[2] (month 202307 is in 2023Q3) → positive at Q[0] (H=2) and Q[1]
    for i, q in enumerate(Q):
        rows.append(("a", q, "突发严重困难户" if i >= 2 else None, False if i >= 2 else None,
                     202307 if i >= 2 else None))
    # b: monitored since before the window, never in scope → label NA
    rows += [("b", q, "边缘易致贫户", False, 202201) for q in Q]
    # c: eliminated, then identified again (返贫) in Q[3] with a new 识别监测时间
    for i, q in enumerate(Q):
        rows.append(("c", q, "脱贫不稳定户", i < 3, 202310 if i >= 3 else 202201))
    # d: later snapshot shows monitoring with an OLD identification time: not newly identified
    rows += [("d", q, None if i < 2 else "边缘易致贫户", None if i < 2 else False,
              None if i < 2 else 202212) for i, q in enumerate(Q)]
    lab = make_labels(_hh(rows), horizon=2)
    get = lambda h, q: lab[(lab.household_id == h) & (lab.quarter == q)].iloc[0]  # noqa: E731
    assert get("a", Q[0]).label == 1 and get("a", Q[1]).label == 1
    assert pd.isna(get("a", Q[2]).label)  # out of scope once identified
    assert all(pd.isna(get("b", q).label) for q in Q)
    assert get("c", Q[0]).label == 0  # identification in Q[3] is beyond t+2
    assert get("c", Q[1]).label == 1 and get("c", Q[2]).label == 1
    assert get("d", Q[0]).label == 0 and get("d", Q[1]).label == 0


def test_last_h_quarters_are_unlabelled_and_horizon_is_respected():
    rows = [("a", q, None, None, None) for q in Q]
    lab2 = make_labels(_hh(rows), horizon=2)
    assert lab2["labelled"].tolist() == [True, True, True, False, False]
    assert lab2["label"].isna().tolist() == [False, False, False, True, True]
    lab1 = make_labels(_hh(rows), horizon=1)
    assert lab1["labelled"].tolist() == [True, True, True, True, False]


@pytest.mark.parametrize("h", [1, 2, 3])
def test_labels_match_brute_force_on_generated_frames(h):
    from canonical_frames import make_frames

    hh = make_frames(300, 7, seed=h).households
    lab = make_labels(hh, h).set_index(["household_id", "quarter_idx"])
    last = hh["quarter_idx"].max()
    by = {k: g.set_index("quarter_idx") for k, g in hh.groupby("household_id")}
    for (hid, t), row in lab.sample(400, random_state=1).iterrows():
        g = by[hid]
        cur = g.loc[t]
        scope = pd.isna(cur.monitor_category) or (pd.notna(cur.risk_eliminated) and bool(cur.risk_eliminated))
        if t + h > last or not scope:
            assert pd.isna(row.label)
            continue
        pos = False
        for s in range(t + 1, t + h + 1):
            if s in g.index:
                r = g.loc[s]
                unresolved = pd.isna(r.risk_eliminated) or not bool(r.risk_eliminated)
                if pd.notna(r.monitor_category) and unresolved and pd.notna(r.monitor_since):
                    pos |= fq.to_index(fq.of_yyyymm(int(r.monitor_since))) > t
        assert row.label == int(pos), (hid, t)


def test_identification_quarter_lists_each_new_identification_once():
    rows = [("a", q, "边缘易致贫户" if i >= 1 else None, False if i >= 1 else None, 202305 if i >= 1 else None)
            for i, q in enumerate(Q)]
    ident = identification_quarter(_hh(rows))
    assert len(ident) == 1 and ident.iloc[0].quarter_idx == fq.to_index(Q[1])
    assert np.isclose(ident.iloc[0].ident_q, fq.to_index("2023Q2"))


def test_annual_ledger_counts_calendar_quarters_not_snapshots():
    """One snapshot a year (each year's Q4): the window of 2022Q4 with H = 4 is 2023Q1 … 2023Q4 and
    is read from the 2023Q4 snapshot; with H = 2 no window ends on a snapshot, so nothing is
    labelled (rather than every label silently 0)."""
    from pipelines.labels import snapshot_cadence

    years = ["2022Q4", "2023Q4", "2024Q4"]
    rows = [("a", years[0], None, None, None),
            ("a", years[1], "突发严重困难户", False, 202305),  # identified in 2023Q2, seen in 2023Q4
            ("a", years[2], "突发严重困难户", False, 202305),
            ("b", years[0], None, None, None), ("b", years[1], None, None, None), ("b", years[2], None, None, None)]
    lab = make_labels(_hh(rows), horizon=4)
    got = {(r.household_id, r.quarter): (r.labelled, r.label) for r in lab.itertuples()}
    assert got[("a", "2022Q4")] == (True, 1)
    assert got[("b", "2022Q4")][0] and got[("b", "2022Q4")][1] == 0 and got[("b", "2023Q4")][1] == 0
    assert not got[("a", "2024Q4")][0]  # the last snapshot has no window yet
    short = make_labels(_hh(rows), horizon=2)
    assert not short["labelled"].any() and short["label"].isna().all()
    cad = snapshot_cadence(_hh(rows)["quarter_idx"])
    assert cad["spacing_quarters"] == 4 and len(cad["missing_quarters"]) == 6
    assert cad["missing_quarters"][0] == "2023Q1"


def test_a_missing_quarter_in_a_quarterly_ledger_leaves_only_its_window_end_unlabelled():
    qs = [q for q in fq.span("2023Q1", 6) if q != "2023Q4"]  # 2023Q4's export is missing
    lab = make_labels(_hh([("a", q, None, None, None) for q in qs]), horizon=2)
    labelled = dict(zip(lab["quarter"], lab["labelled"], strict=True))
    # 2023Q2's window ends at the missing 2023Q4: not labelled; 2023Q3's ends at 2024Q1: labelled
    assert labelled == {"2023Q1": True, "2023Q2": False, "2023Q3": True, "2024Q1": False, "2024Q2": False}
