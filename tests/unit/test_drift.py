"""PSI and the drift report (pipelines/drift.py) on generic frames."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from fangpin.config import Params
from pipelines.drift import STATUS_ALARM, STATUS_KNOWN, STATUS_OK, bin_shares, drift_report, psi


def test_psi_matches_the_formula_on_discrete_values():
    ref = np.array([0] * 50 + [1] * 50)
    cur = np.array([0] * 80 + [1] * 20)
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi(ref, cur) == pytest.approx(expected, rel=1e-12)


def test_missing_values_and_unseen_values_get_their_own_bins():
    e, a, nb = bin_shares([1.0, 2.0, np.nan, np.nan], [1.0, 3.0, 3.0, np.nan], bins=10)
    # bins: value 1, value 2, unseen, missing
    assert nb == 4
    np.testing.assert_allclose(e, [0.25, 0.25, 0.0, 0.5])
    np.testing.assert_allclose(a, [0.25, 0.0, 0.5, 0.25])


def test_same_distribution_is_stable_and_a_shift_is_an_alarm():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=20_000)
    assert psi(ref, rng.normal(size=20_000)) < 0.01
    # a one-sd shift of a normal has PSI ≈ 1 (the exact Jeffreys divergence is 1.0)
    assert psi(ref, rng.normal(1.0, 1.0, size=20_000)) > 0.8


def _frames(line_ref: float, line_cur: float, ratio_shift: float = 1.0, n: int = 8000):
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"quarter": np.repeat(["2023Q3", "2023Q4"], n // 2),
                        "income_ratio": rng.lognormal(0.3, 0.4, n), "n_members": rng.integers(1, 6, n)})
    ref["income_per_capita"] = ref["income_ratio"] * line_ref
    cur = pd.DataFrame({"income_ratio": rng.lognormal(0.3, 0.4, n) * ratio_shift,
                        "n_members": rng.integers(1, 6, n)})
    cur["income_per_capita"] = cur["income_ratio"] * line_cur
    return ref, cur


def _report(ref, cur, lines, current="2024Q1"):
    p = Params(lines=lines)
    return drift_report(ref, cur, ["income_per_capita", "income_ratio", "n_members"], params=p,
                        scores={"score": (ref["income_ratio"].to_numpy(), cur["income_ratio"].to_numpy())},
                        reference_quarters=["2023Q3", "2023Q4"], current_quarter=current)


def test_new_monitoring_line_is_a_known_shift_not_an_alarm():
    ref, cur = _frames(6000, 8000)
    rep = _report(ref, cur, {2023: 6000, 2024: 8000})
    t = rep.table.set_index("column")
    assert t.at["income_per_capita", "psi"] >= 0.25  # raw income moved with the line …
    assert t.at["income_per_capita", "psi_line_adjusted"] < 0.02  # … and the line explains it
    assert t.at["income_per_capita", "status"] == STATUS_KNOWN
    assert "2024年监测线8,000元" in t.at["income_per_capita", "note"]
    assert t.at["income_ratio", "status"] == STATUS_OK
    assert rep.line.changed and rep.counts()["known"] == 1


def test_raw_income_drift_without_a_line_change_is_an_alarm():
    ref, cur = _frames(6000, 8000)
    rep = _report(ref, cur, {2023: 6000, 2024: 6000})
    t = rep.table.set_index("column")
    assert not rep.line.changed
    assert t.at["income_per_capita", "status"] == STATUS_ALARM


def test_drift_beyond_the_line_change_stays_an_alarm():
    ref, cur = _frames(6000, 8000, ratio_shift=0.6)  # incomes fell relative to the line as well
    rep = _report(ref, cur, {2023: 6000, 2024: 8000})
    t = rep.table.set_index("column")
    assert t.at["income_per_capita", "status"] == STATUS_ALARM
    assert t.at["income_ratio", "status"] == STATUS_ALARM
    assert t.at["score", "kind"] == "score" and t.at["score", "status"] == STATUS_ALARM


def test_a_year_without_a_line_is_an_error():
    from fangpin.config import MissingLineError

    ref, cur = _frames(6000, 8000)
    with pytest.raises(MissingLineError):
        _report(ref, cur, {2023: 6000})


def test_report_files_render_chinese(tmp_path):
    ref, cur = _frames(6000, 8000)
    rep = _report(ref, cur, {2023: 6000, 2024: 8000})
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*[Gg]lyph.*missing.*")
        paths = rep.write(tmp_path)
    import json

    d = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert d["current_quarter"] == "2024Q1" and d["monitoring_line"]["changed"] is True
    assert {c["column"] for c in d["columns"]} == {"income_per_capita", "income_ratio", "n_members", "score"}
    assert "已知变化" in paths["md"].read_text(encoding="utf-8")
    assert paths["png"].stat().st_size > 5000


def test_a_column_missing_in_the_whole_reference_is_measured():
    e, a, nb = bin_shares([np.nan] * 4, [1.0, np.nan], bins=10)
    assert nb == 2
    np.testing.assert_allclose(e, [0.0, 1.0])
    np.testing.assert_allclose(a, [0.5, 0.5])
    assert psi([np.nan] * 4, [np.nan] * 3) == 0.0


def test_a_seasonal_pattern_is_known_when_the_same_quarter_matches():
    rng = np.random.default_rng(3)
    n = 4000
    q = np.repeat(["2023Q1", "2023Q2", "2023Q3", "2023Q4"], n)
    # a column that is only non-zero in the fourth quarter (yearly income verification)
    x = np.where(np.char.endswith(q.astype(str), "Q4"), rng.normal(0.1, 0.05, 4 * n), 0.0)
    ref = pd.DataFrame({"quarter": q, "income_change": x})
    cur = pd.DataFrame({"income_change": rng.normal(0.1, 0.05, n)})
    rep = drift_report(ref, cur, ["income_change"], params=Params(lines={2023: 6900, 2024: 7300}),
                       reference_quarters=["2023Q1", "2023Q4"], current_quarter="2024Q4")
    row = rep.table.set_index("column").loc["income_change"]
    assert row["psi"] >= 0.25 and row["psi_same_season"] < 0.1
    assert row["status"] == STATUS_KNOWN and "季节性" in row["note"]
    # the same values in a first quarter are a real alarm
    rep1 = drift_report(ref, cur, ["income_change"], params=Params(lines={2023: 6900, 2024: 7300}),
                        reference_quarters=["2023Q1", "2023Q4"], current_quarter="2024Q1")
    assert rep1.table.set_index("column").at["income_change", "status"] == STATUS_ALARM
