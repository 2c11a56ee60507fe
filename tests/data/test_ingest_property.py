"""Property-based: random malformed rows never make ingest raise, counts always add up, and every
quarantined row names a column and a reason."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_fixtures import H, household, make_id, write_csv, write_xlsx
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from fangpin.config import load_params
from fangpin.ingest import ingest, load_tables

PARAMS = load_params()  # the project's params.yaml, as `fangpin ingest` reads it

KEY = b"test-key"
HEADERS = list(household("520122001000001", 1)[0]) + [H("birth_date"), H("school_status"), H("farmland_mu")]

garbage = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "—", "-", " ", "NULL", "nan", "1,2,3", "１２", "2023-13-45", "202313", "9" * 30,
                     "男", "3", "是", "否", "户主", "X", "0", "-5", "1e309", "\u3000", "\"", "'", "\n"]),
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.dates().map(lambda d: d.strftime("%Y/%m/%d")),
    st.integers(0, 999).map(lambda s: make_id("19800101", s, valid=s % 2 == 0)),
    st.integers(0, 999).map(lambda s: make_id("19800101", s)[:-2]),  # truncated ID
)


@st.composite
def ledgers(draw):
    n_hh = draw(st.integers(1, 4))
    rows = []
    for h in range(n_hh):
        rows += household(f"5201220010000{h:02d}", draw(st.integers(1, 4)))
    for r in rows:
        for h in draw(st.lists(st.sampled_from(HEADERS), max_size=4)):
            r[h] = draw(garbage)
    if draw(st.booleans()):  # a duplicated person
        rows.append(dict(draw(st.sampled_from(rows))))
    return rows


def _check(rep, out: Path):
    assert rep.rows_read == rep.rows_accepted + rep.rows_quarantined
    for f in rep.files:
        assert f["status"] == "ok", f
        assert f["rows_read"] == f["rows_accepted"] + f["rows_quarantined"]
    t = load_tables(out)
    assert len(t.persons) == rep.rows_accepted
    q = pd.read_csv(out / "quarantine.csv", encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert q.drop_duplicates(["file", "row"]).shape[0] == rep.rows_quarantined
    assert (q["column"] != "").all() and (q["reason"] != "").all() and (q["code"] != "").all()
    assert rep.duplicate_person_rows == (q["code"] == "duplicate").sum()
    assert rep.invalid_id_numbers == int((~t.persons["id_valid"]).sum())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ledgers(), encoding=st.sampled_from(["utf-8", "utf-8-sig", "gb18030"]))
def test_random_malformed_csv_rows(rows, encoding):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        try:
            f = write_csv(d / "l.csv", rows, encoding=encoding, headers=HEADERS)
        except UnicodeEncodeError:  # text GB18030 cannot represent cannot occur in such a file
            f = write_csv(d / "l.csv", rows, encoding="utf-8", headers=HEADERS)
        rep = ingest([f], None, d / "out", PARAMS, key=KEY)
        _check(rep, d / "out")
        assert rep.rows_read == len(rows) - sum(all(not str(r.get(h, "")).strip() for h in HEADERS) for r in rows)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ledgers())
def test_random_malformed_xlsx_rows(rows):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        # control characters cannot be stored in an xlsx cell at all (openpyxl refuses them): drop them
        clean = [{k: (ILLEGAL_CHARACTERS_RE.sub("", v) if isinstance(v, str) else v) for k, v in r.items()}
                 for r in rows]
        f = write_xlsx(d / "export_20240628.xlsx", clean, headers=HEADERS)
        rep = ingest([f], None, d / "out", PARAMS, key=KEY)
        _check(rep, d / "out")
