"""pipelines.common.records: a frame's rows as dicts of Python values, missing values None —
equal, value and type, to ``astype(object).where(notna, None).to_dict("records")``, which it
replaces where a whole ledger is turned into rows (pipelines/readback.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.common import records


def test_records_equal_the_object_frame_rows_value_and_type():
    df = pd.DataFrame({
        "text": pd.array(["甲", None, "丙"], dtype="string"),
        "int32": np.array([1, 2, 3], dtype="int32"),
        "nullable_int": pd.array([5, None, 7], dtype="Int32"),
        "nullable_bool": pd.array([True, None, False], dtype="boolean"),
        "float": [0.5, np.nan, 2.0],
        "nullable_float": pd.array([1.5, None, 3.0], dtype="Float64"),
        "when": pd.to_datetime(["2024-01-02", None, "2024-03-04"]),
        "bool": [True, False, True],
    })
    want = df.astype(object).where(df.notna(), None).to_dict("records")
    got = records(df)
    assert got == want
    assert [[type(v) for v in r.values()] for r in got] == [[type(v) for v in r.values()] for r in want]
    assert got[1]["text"] is None and got[1]["nullable_int"] is None and got[1]["when"] is None
    assert type(got[0]["int32"]) is int and type(got[0]["bool"]) is bool
    assert records(df.iloc[:0]) == []
