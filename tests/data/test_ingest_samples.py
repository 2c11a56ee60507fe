"""The three sample exports in ../shared/samples ingest correctly and every row is accounted for."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from fangpin.config import load_params
from fangpin.ingest import ingest, load_tables

PARAMS = load_params()  # the project's params.yaml, as `fangpin ingest` reads it

pytestmark = pytest.mark.xdist_group("ingest_samples")

XLSX = "防止返贫监测对象信息_20240628.xlsx"
CSV = "户成员台账_2024Q1.csv"
EVENTS = "部门预警数据_2024_gbk.csv"


@pytest.fixture(scope="module")
def ingested(samples_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ingested")
    report = ingest([samples_dir], None, out, PARAMS, key=b"test-key")
    return report, load_tables(out), out


def _file(report, name):
    return next(f for f in report.files if f["file"] == name)


def test_counts_add_up(ingested):
    report, t, _ = ingested
    assert report.ok
    assert report.rows_read == report.rows_accepted + report.rows_quarantined
    for f in report.files:
        assert f["rows_read"] == f["rows_accepted"] + f["rows_quarantined"], f["file"]
    assert _file(report, CSV)["rows_read"] == 535 and _file(report, CSV)["rows_quarantined"] == 0
    x = _file(report, XLSX)
    assert (x["rows_read"], x["rows_accepted"], x["rows_quarantined"]) == (536, 533, 3)
    assert len(t.persons) == 535 + 533
    assert report.persons == len(t.persons)
    assert report.rows_read == 535 + 536 + 78


def test_file_kinds_encodings_and_header_rows(ingested):
    report, _, _ = ingested
    assert _file(report, CSV)["kind"] == "ledger" and _file(report, CSV)["encoding"] == "utf-8"
    assert _file(report, EVENTS)["kind"] == "events" and _file(report, EVENTS)["encoding"] == "gb18030"
    x = _file(report, XLSX)
    assert x["kind"] == "ledger" and x["header_row"] == 3
    assert x["quarter_from_file_name"] == "2024Q2"
    assert [s["file"].endswith("README.md") for s in report.skipped] == [True]


def test_xlsx_quarter_from_file_name(ingested):
    _, t, _ = ingested
    src = t.persons.groupby("source_file")["quarter"].unique()
    assert list(src[XLSX]) == ["2024Q2"] and list(src[CSV]) == ["2024Q1"]
    assert set(t.persons["quarter_idx"]) == {2024 * 4 + 0, 2024 * 4 + 1}


def test_xlsx_values_normalised_like_the_csv(ingested):
    """The xlsx (1/2 sex, 2023-02 dates, 12,345.6 incomes, trailing spaces) gives the same values
    as the clean CSV for the same people."""
    _, t, _ = ingested
    p = t.persons
    a = p[p.source_file == CSV].set_index("person_key")
    b = p[p.source_file == XLSX].set_index("person_key")
    common = a.index.intersection(b.index)
    assert len(common) > 500
    assert set(b["sex"].dropna()) == {"男", "女"}
    assert (a.loc[common, "sex"] == b.loc[common, "sex"]).all()
    assert (a.loc[common, "birth_date"] == b.loc[common, "birth_date"]).all()
    h = t.households
    ha = h[h.source_file == CSV].set_index("household_id")
    hb = h[h.source_file == XLSX].set_index("household_id")
    both = ha.index.intersection(hb.index)
    assert (ha.loc[both, "income_per_capita"] == hb.loc[both, "income_per_capita"]).all()
    assert hb["income_per_capita"].max() > 10_000  # "15,376.02" was read as a number
    assert not hb["village"].str.contains(r"\s$").any()
    assert set(hb["village"]) <= set(ha["village"])
    monitored = hb["monitor_since"].dropna()
    assert set(monitored) <= {202302, 202305, 202308, 202311, 202402}
    assert len(monitored) == len(ha["monitor_since"].dropna())


def test_dash_is_null_and_no_placeholder_survives(ingested):
    _, t, _ = ingested
    for df in (t.persons, t.households):
        for c in df.columns:
            if df[c].dtype == "str" or df[c].dtype == object:
                assert not df[c].isin(["—", "-", ""]).any(), c
    h = t.households
    xl = h[h.source_file == "防止返贫监测对象信息_20240628.xlsx"]
    assert xl["eliminated_at"].isna().sum() > 0
    assert xl["eliminated_at"].dropna().isin([202308, 202311, 202402, 202405]).all()


def test_xlsx_defects_found(ingested):
    report, _, out = ingested
    assert report.duplicate_person_rows == 3
    assert report.invalid_id_numbers == 5
    q = pd.read_csv(out / "quarantine.csv", encoding="utf-8-sig", dtype=str)
    assert len(q) == 3 and set(q["code"]) == {"duplicate"} and set(q["file"]) == {XLSX}
    assert set(q["column"]) == {"证件号码"}
    assert q["value"].str.fullmatch(r"\d{4}\*{10}[\dX]{4}").all()
    assert report.finding("income_mismatch")["count"] > 0


def test_events_joined_and_unmatched_reported(ingested):
    report, t, _ = ingested
    assert report.events_read == 78 and len(t.events) == 78
    assert report.events_unmatched == 4
    assert t.events["household_id"].isna().sum() == 4
    ex = report.finding("events_unmatched")["examples"]
    assert len(ex) == 4 and all(re.fullmatch(r"\d{4}\*{10}[\dX]{4}", e["id_masked"]) for e in ex)
    assert set(t.events["quarter"]) <= {"2024Q1", "2024Q2", "2024Q3", "2024Q4"}
    matched = t.events.dropna(subset=["household_id"])
    joined = matched.merge(t.persons[["person_key", "household_id"]].drop_duplicates(), on="person_key")
    assert (joined["household_id_x"] == joined["household_id_y"]).all()


def test_derived_person_fields(ingested):
    _, t, _ = ingested
    p = t.persons
    assert p["birth_date"].notna().all()
    assert ((p["age"] >= 0) & (p["age"] < 110)).all()
    mid = p[p["school_status"] == "初中"]
    assert len(mid) == 50 and set(mid["school_grade"]) == {7}
    assert not p["school_status"].isin(["七年级", "中职一年级", "高中一年级"]).any()


def test_full_ids_never_written(ingested, samples_dir):
    _, t, out = ingested
    ids = set(pd.read_csv(samples_dir / CSV, dtype=str)["证件号码"])
    text = b"".join(f.read_bytes() for f in out.iterdir() if f.suffix in (".csv", ".json"))
    assert not any(i.encode() in text for i in ids)
    for df in (t.persons, t.households, t.events):
        assert "id_number" not in df.columns
        for c in df.columns:
            if df[c].dtype == "str" and c != "person_key":  # a hex hash may hold 17 digits in a row
                assert not df[c].dropna().str.contains(r"\d{17}[\dX]").any(), c
