"""fangpin.quarters: YYYYQn parsing and arithmetic."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fangpin import quarters as q


def test_parse_and_format():
    assert q.parse("2024Q2") == (2024, 2) and q.parse(" 2024q3 ") == (2024, 3)
    assert q.fmt(2024, 1) == "2024Q1"
    for bad in ("2024Q5", "2024", "24Q1", "2024-Q1", ""):
        with pytest.raises(ValueError):
            q.parse(bad)


@given(st.integers(1990, 2100), st.integers(1, 4), st.integers(-40, 40))
def test_index_roundtrip_and_shift(y, n, k):
    s = q.fmt(y, n)
    assert q.from_index(q.to_index(s)) == s
    assert q.to_index(q.shift(s, k)) == q.to_index(s) + k


def test_dates_and_spans():
    assert q.start_date("2024Q1") == date(2024, 1, 1) and q.end_date("2024Q1") == date(2024, 3, 31)
    assert q.end_date("2024Q2") == date(2024, 6, 30) and q.end_date("2023Q4") == date(2023, 12, 31)
    assert q.span("2023Q4", 3) == ["2023Q4", "2024Q1", "2024Q2"]
    assert q.of_date(date(2024, 6, 28)) == "2024Q2" and q.of_yyyymm(202302) == "2023Q1"
    assert q.of_yyyymm(202312) == "2023Q4"


def test_index_of_yyyymm_vectorised():
    s = pd.Series([202302, 202312, None], dtype="Int64")
    got = q.index_of_yyyymm(s)
    assert got[0] == q.to_index("2023Q1") and got[1] == q.to_index("2023Q4") and np.isnan(got[2])
    got = q.index_of_yyyymm(np.array([np.nan, 202104.0, np.inf, 202212.0]))  # known values computed alone
    assert np.isnan(got[0]) and got[1] == q.to_index("2021Q2") and np.isnan(got[2]) and got[3] == q.to_index("2022Q4")
