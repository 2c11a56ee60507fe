"""Each quirk of the ledger contract, fed through a small generated file, ends in a correct read or
a clear row-level (or file-level) error."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from ingest_fixtures import H, event, household, make_id, person, write_csv, write_xlsx

from fangpin import contract
from fangpin.config import load_params
from fangpin.ingest import FileError, ingest, load_tables

PARAMS = load_params()  # the project's params.yaml, as `fangpin ingest` reads it

KEY = b"test-key"


def run(tmp_path, *paths, events=None, **kw):
    out = tmp_path / "out"
    rep = ingest(list(paths), events, out, PARAMS, key=KEY, **kw)
    return rep, load_tables(out), out


def quarantine(out) -> pd.DataFrame:
    return pd.read_csv(out / "quarantine.csv", encoding="utf-8-sig", dtype=str, keep_default_na=False)


def assert_balanced(rep):
    assert rep.rows_read == rep.rows_accepted + rep.rows_quarantined
    for f in rep.files:
        if f["status"] == "ok":
            assert f["rows_read"] == f["rows_accepted"] + f["rows_quarantined"], f


# ---- encodings -------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding,expect", [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"),
                                             ("gb18030", "gb18030"), ("gbk", "gb18030")])
def test_csv_encodings_detected(tmp_path, encoding, expect):
    rows = household("520122001000001", 3, village="康沟村")
    f = write_csv(tmp_path / "台账.csv", rows, encoding=encoding)
    rep, t, _ = run(tmp_path, f)
    assert rep.files[0]["encoding"] == expect
    assert rep.rows_accepted == 3
    assert set(t.households["village"]) == {"康沟村"} and set(t.persons["relation"]) == {"户主", "之子"}


def test_unreadable_encoding_is_a_file_error(tmp_path):
    good = write_csv(tmp_path / "good.csv", household("520122001000001", 2))
    bad = tmp_path / "bad.csv"
    bad.write_bytes("户编号,证件号码\n1,2\n".encode("utf-16"))
    rep, t, _ = run(tmp_path, good, bad)
    assert not rep.ok and len(t.persons) == 2
    err = rep.errors[0]
    assert err["file"] == "bad.csv" and err["code"] == "encoding" and "bad.csv" in err["message"]


# ---- xlsx header row ---------------------------------------------------------------------------

@pytest.mark.parametrize("title_rows", [0, 1, 2])
def test_xlsx_header_found_wherever_it_is(tmp_path, title_rows):
    rows = household("520122001000001", 2) + [person("520122001000002", 1, health="很好")]
    f = write_xlsx(tmp_path / "export.xlsx", rows, title_rows=title_rows)
    rep, t, out = run(tmp_path, f)
    assert rep.files[0]["header_row"] == title_rows + 1
    assert len(t.persons) == 2
    q = quarantine(out)
    # the bad row is the 3rd data row: spreadsheet row = header row + 3
    assert q["row"].tolist() == [str(title_rows + 1 + 3)]
    assert q["column"].tolist() == ["健康状况"] and q["code"].tolist() == ["not_allowed"]


def test_xlsx_real_number_and_date_cells(tmp_path):
    """Cells typed as numbers / dates in Excel (not text) read as the same values."""
    rows = household("520122001000001", 2, monitor_category="边缘易致贫户", risk_eliminated="否")
    for r in rows:
        r[H("monitor_since")] = dt.datetime(2023, 2, 1)
        r[H("income_per_capita")] = 10000.0
        r[H("work_months")] = 10
        r[H("farmland_mu")] = 2.5
    f = write_xlsx(tmp_path / "export.xlsx", rows, headers=[*rows[0]])
    rep, t, _ = run(tmp_path, f)
    assert rep.rows_accepted == 2, rep.quarantine_by_reason
    h = t.households.iloc[0]
    assert h["monitor_since"] == 202302 and h["income_per_capita"] == 10000.0 and h["farmland_mu"] == 2.5
    assert set(t.persons["work_months"]) == {10}


# ---- text cells ----------------------------------------------------------------------------------

def test_thousands_separators_fullwidth_digits_and_spaces(tmp_path):
    rows = household("520122001000001", 2)
    rows[0][H("income_per_capita")] = rows[1][H("income_per_capita")] = "10,000.00"
    rows[0][H("wage_income")] = rows[1][H("wage_income")] = "２０，０００"
    rows[0][H("village")] = "康沟村  "
    rows[1][H("village")] = "\u3000康沟村"
    rows[0][H("township")] = rows[1][H("township")] = " 兴兴镇\t"
    f = write_csv(tmp_path / "l.csv", rows)
    rep, t, _ = run(tmp_path, f)
    assert rep.rows_accepted == 2
    h = t.households.iloc[0]
    assert h["income_per_capita"] == 10000.0 and h["wage_income"] == 20000.0
    assert h["village"] == "康沟村" and h["township"] == "兴兴镇"
    assert rep.finding("household_field_disagreement") is None


def test_unquoted_thousands_separator_in_csv_is_a_row_error(tmp_path):
    rows = household("520122001000001", 2)
    f = write_csv(tmp_path / "l.csv", rows)
    text = f.read_text(encoding="utf-8").splitlines()
    text[2] = text[2].replace(",10000.00,", ",10,000.00,")  # shifts every later cell by one
    f.write_text("\n".join(text) + "\n", encoding="utf-8")
    rep, t, out = run(tmp_path, f)
    assert_balanced(rep)
    assert rep.rows_quarantined == 1 and len(t.persons) == 1
    q = quarantine(out)
    assert "extra_fields" in set(q["code"]) and set(q["row"]) == {"3"}


@pytest.mark.parametrize("blank", ["—", "-", "", "  ", "——", "－"])
def test_missing_markers_become_null(tmp_path, blank):
    rows = household("520122001000001", 2, farmland_mu=blank, eliminated_at=blank, dibao=blank)
    rep, t, _ = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    assert rep.rows_accepted == 2
    h = t.households.iloc[0]
    assert pd.isna(h["farmland_mu"]) and pd.isna(h["eliminated_at"]) and pd.isna(h["dibao"])


def test_missing_marker_in_required_column_is_a_row_error(tmp_path):
    rows = household("520122001000001", 2)
    rows[1][H("health")] = "—"
    rep, t, out = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    q = quarantine(out)
    assert q[["row", "column", "code"]].values.tolist() == [["3", "健康状况", "missing"]]
    assert "必填" in q["reason"][0]
    assert q["value"][0] == "*"  # health is personal: the value is masked


@pytest.mark.parametrize("given,expected", [("1", "男"), ("2", "女"), ("男", "男"), ("女", "女"), (" 2 ", "女")])
def test_sex_codes(tmp_path, given, expected):
    rows = household("520122001000001", 1, sex=given)
    _, t, _ = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    assert t.persons["sex"].tolist() == [expected]


def test_bad_sex_code_quarantined(tmp_path):
    rows = household("520122001000001", 2)
    rows[1][H("sex")] = "3"
    rep, _, out = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    q = quarantine(out)
    assert q[["column", "code", "value"]].values.tolist() == [["性别", "not_allowed", "3"]]
    assert_balanced(rep)


@pytest.mark.parametrize("given", ["202302", "2023-02", "20230215", "2023-02-15", "2023/2/5", "2023-02-01 00:00:00",
                                   "２０２３０２", "2023年2月"])
def test_date_forms(tmp_path, given):
    rows = household("520122001000001", 1, monitor_category="边缘易致贫户", monitor_since=given,
                     risk_eliminated="否", risk_1="因病")
    rep, t, _ = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    assert rep.rows_accepted == 1
    assert t.households["monitor_since"].tolist() == [202302]


@pytest.mark.parametrize("given", ["2023-13", "2023-02-30", "23-02", "二〇二三年", "202302.5"])
def test_bad_dates_quarantined(tmp_path, given):
    rows = household("520122001000001", 2)
    rows[0][H("monitor_since")] = given
    rep, t, out = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    q = quarantine(out)
    assert q[["row", "column", "code", "value"]].values.tolist() == [["2", "识别监测时间", "bad_date", given]]
    assert len(t.persons) == 1


def test_birth_date_column_and_fallback_to_id(tmp_path):
    rows = household("520122001000001", 2)
    rows[0][H("birth_date")] = "1979/3/7"
    rows[1][H("birth_date")] = ""
    _, t, _ = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    p = t.persons.sort_values("source_row")
    assert p["birth_date"].tolist() == [pd.Timestamp("1979-03-07"), pd.Timestamp("1951-01-01")]
    assert p["age"].tolist() == [45, 73]  # completed years at 2024-03-31


# ---- IDs -----------------------------------------------------------------------------------------

def test_invalid_checksum_kept_and_counted(tmp_path):
    rows = household("520122001000001", 3)
    rows[2][H("id_number")] = make_id("19900101", 7, valid=False)
    rep, t, _ = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    assert rep.rows_accepted == 3 and rep.invalid_id_numbers == 1
    assert t.persons["id_valid"].sum() == 2
    ex = rep.finding("invalid_id_numbers")["examples"][0]
    assert ex["id_masked"].startswith("5201") and "*" * 10 in ex["id_masked"] and ex["source_row"] == 4


@pytest.mark.parametrize("bad", ["52012219900101001", "5201221990010100123", "52012219900101A01X", "6.10923E+17"])
def test_malformed_id_quarantined_with_masked_value(tmp_path, bad):
    rows = household("520122001000001", 2)
    rows[1][H("id_number")] = bad
    rep, _, out = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    q = quarantine(out)
    assert q["column"].tolist() == ["证件号码"] and q["code"].tolist() == ["bad_format"]
    assert bad not in q["value"][0] and "*" in q["value"][0]
    assert_balanced(rep)


def test_lowercase_x_check_character(tmp_path):
    for seq in range(1, 200):
        i = make_id("19900101", seq)
        if i.endswith("X"):
            break
    rows = household("520122001000001", 1, id_number=i.lower())
    rep, t, _ = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    assert rep.invalid_id_numbers == 0 and t.persons["id_valid"].all()


def test_duplicate_person_kept_once_and_reported(tmp_path):
    rows = household("520122001000001", 3)
    rows.append(dict(rows[1]))
    rep, t, out = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    assert rep.duplicate_person_rows == 1 and rep.rows_quarantined == 1 and len(t.persons) == 3
    assert t.households["n_members"].tolist() == [3]
    q = quarantine(out)
    assert q[["row", "code"]].values.tolist() == [["5", "duplicate"]] and "第 3 行" in q["reason"][0]
    assert_balanced(rep)


# ---- school grades, headers, quarters -----------------------------------------------------------

@pytest.mark.parametrize("given,stage,grade", [
    ("八年级", "初中", 8), ("七年级", "初中", 7), ("小学三年级", "小学", 3), ("小学", "小学", None),
    ("高中二年级", "高中", 2), ("中职一年级", "中职", 1), ("高职高专三年级", "高职高专", 3),
    ("本科及以上", "本科及以上", None), ("非在校生", "非在校生", None), ("", None, None),
])
def test_school_grades(tmp_path, given, stage, grade):
    rows = household("520122001000001", 1, school_status=given)
    rep, t, _ = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    p = t.persons.iloc[0]
    assert (p["school_status"] if pd.notna(p["school_status"]) else None) == stage
    assert (int(p["school_grade"]) if pd.notna(p["school_grade"]) else None) == grade


@pytest.mark.parametrize("bad", ["高中五年级", "十年级", "大学"])
def test_bad_school_value_quarantined(tmp_path, bad):
    rows = household("520122001000001", 2)
    rows[0][H("school_status")] = bad
    _, _, out = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    assert quarantine(out)[["column", "code"]].values.tolist() == [["在校生状况", "not_allowed"]]


def test_header_aliases_and_fullwidth_parentheses(tmp_path):
    rows = household("520122001000001", 2)
    rename = {H("county"): "县", H("township"): "乡", H("village"): "村", H("work_months"): "务工时间(月)",
              H("income_per_capita"): "人均纯收入(元) "}
    rows = [{rename.get(k, k): v for k, v in r.items()} for r in rows]
    rep, t, _ = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    assert rep.rows_accepted == 2
    assert t.households[["county", "township", "village"]].values.tolist() == [["青石县", "兴兴镇", "康沟村"]]


def test_quarter_from_file_name(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "统计季度"} for r in household("520122001000001", 2)]
    f = write_csv(tmp_path / "防止返贫监测对象信息_20241003.csv", rows)
    rep, t, _ = run(tmp_path, f)
    assert set(t.persons["quarter"]) == {"2024Q4"} and rep.files[0]["quarter_from_file_name"] == "2024Q4"


@pytest.mark.parametrize("given,expected", [("2024q3", "2024Q3"), (" 2024Q3 ", "2024Q3")])
def test_quarter_column_forms(tmp_path, given, expected):
    rows = household("520122001000001", 1, quarter=given)
    _, t, _ = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    assert t.households["quarter"].tolist() == [expected]


def test_quarter_absent_without_export_date_is_a_file_error(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "统计季度"} for r in household("520122001000001", 2)]
    good = write_csv(tmp_path / "good.csv", household("520122001000002", 2))
    bad = write_csv(tmp_path / "台账.csv", rows)
    rep, t, _ = run(tmp_path, good, bad)
    assert not rep.ok and len(t.persons) == 2
    e = rep.errors[0]
    assert e["file"] == "台账.csv" and e["column"] == "统计季度" and "台账.csv" in e["message"]


@pytest.mark.parametrize("drop", [c.header for c in contract.LEDGER_COLUMNS if c.required and c.name != "quarter"])
def test_missing_required_column_names_it(tmp_path, drop):
    rows = [{k: v for k, v in r.items() if k != drop} for r in household("520122001000001", 2)]
    if drop in ("户编号", "证件号码"):  # without these the file is not recognisable as a ledger
        with pytest.raises(FileError):
            from fangpin.ingest.read import read_table
            read_table(write_csv(tmp_path / "l.csv", rows))
        return
    rep, _, _ = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    assert not rep.ok and rep.errors[0]["column"] == drop and drop in rep.errors[0]["message"]


def test_not_a_ledger_reported_and_skipped(tmp_path):
    good = write_csv(tmp_path / "good.csv", household("520122001000001", 2))
    other = tmp_path / "花名册.csv"
    other.write_text("姓名,电话\n张三,123\n", encoding="utf-8")
    rep, t, _ = run(tmp_path, tmp_path)
    assert len(t.persons) == 2 and not rep.ok
    e = next(e for e in rep.errors if e["file"] == "花名册.csv")
    assert e["code"] == "no_header" and "户编号" in e["message"]
    assert next(f for f in rep.files if f["file"] == "花名册.csv")["status"] == "error"
    assert good.name in {f["file"] for f in rep.files if f["status"] == "ok"}


def test_other_columns_carried_through(tmp_path):
    rows = household("520122001000001", 2)
    for r in rows:
        r["备注"] = "已走访"
    rep, t, _ = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    assert rep.files[0]["columns_carried"] == ["备注"]
    assert set(t.persons["备注"]) == {"已走访"}


def test_blank_rows_not_counted_as_data(tmp_path):
    f = write_csv(tmp_path / "l.csv", household("520122001000001", 2))
    f.write_text(f.read_text(encoding="utf-8") + ",,,,\n\n", encoding="utf-8")
    rep, _, _ = run(tmp_path, f)
    assert rep.rows_read == 2 and rep.files[0]["blank_rows"] == 2


# ---- household-level findings ----------------------------------------------------------------------

def test_household_fields_disagree_between_members(tmp_path):
    rows = household("520122001000001", 3)
    rows[2][H("household_type")] = "一般农户"
    rep, t, _ = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    f = rep.finding("household_field_disagreement")
    assert f["count"] == 1 and "户类型" in f["message"]
    assert t.households["household_type"].tolist() == ["脱贫户"]  # the 户主 row wins


@pytest.mark.parametrize("recorded,flagged", [("10000", False), ("10900", False), ("11200", True), ("8800", True)])
def test_income_mismatch_tolerance(tmp_path, recorded, flagged):
    rows = household("520122001000001", 2, income_per_capita=recorded)  # components give 10,000
    rep, t, _ = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    assert (rep.finding("income_mismatch") is not None) == flagged
    assert t.households["income_per_capita"].tolist() == [float(recorded)]


# ---- events, lines, oracle -----------------------------------------------------------------------

def test_events_join_through_the_ledger(tmp_path):
    q1 = household("520122001000001", 2)
    q3 = household("520122001000009", 2, quarter="2024Q3")  # same people moved to another household
    for a, b in zip(q1, q3, strict=True):
        b[H("id_number")] = a[H("id_number")]
    led = write_csv(tmp_path / "l.csv", q1 + q3)
    pid = q1[0][H("id_number")]
    ev = [event(pid, "2024-05-10"), event(pid, "2023-11-01"), event(pid, "2024-08-01", amount="—"),
          event(make_id("19700101", 5), "2024-01-01"), event(pid, "2024-02-30"), event(pid, dept="宣传部")]
    evf = write_csv(tmp_path / "部门预警数据_2024.csv", ev, encoding="gb18030")
    rep, t, out = run(tmp_path, led, events=[evf])
    e = t.events.set_index("event_date")
    assert e.loc[pd.Timestamp("2024-05-10"), "household_id"] == "520122001000001"  # latest at or before
    assert e.loc[pd.Timestamp("2023-11-01"), "household_id"] == "520122001000001"  # earliest after
    assert e.loc[pd.Timestamp("2024-08-01"), "household_id"] == "520122001000009"
    assert pd.isna(e.loc[pd.Timestamp("2024-08-01"), "amount"])
    assert rep.events_read == 6 and rep.events_unmatched == 1 and len(t.events) == 4
    assert set(quarantine(out)["code"]) == {"bad_date", "not_allowed"}
    assert_balanced(rep)


def test_pipeline_runs_without_events(tmp_path):
    rep, t, _ = run(tmp_path, write_csv(tmp_path / "l.csv", household("520122001000001", 2)))
    assert rep.events_read == 0 and len(t.events) == 0 and list(t.events.columns)


def test_monitoring_lines_file_overrides_params(tmp_path):
    write_csv(tmp_path / "l.csv", household("520122001000001", 2))
    (tmp_path / "监测线.csv").write_text("年度,监测线（元）,省份\n2024,7500,某省\n2031,9000,某省\n2032,-1,某省\n",
                                      encoding="utf-8")
    rep, t, out = run(tmp_path, tmp_path)
    assert t.lines[2024] == 7500.0 and t.lines[2031] == 9000.0 and t.lines[2022] == 6500.0
    assert 2032 not in t.lines
    assert rep.monitoring_lines["2024"]["source"] == "监测线.csv"
    q = quarantine(out)
    assert q[["file", "row", "code"]].values.tolist() == [["监测线.csv", "4", "out_of_range"]]
    assert_balanced(rep)


def test_oracle_file(tmp_path):
    write_csv(tmp_path / "l.csv", household("520122001000001", 2))
    (tmp_path / "oracle.csv").write_text("户编号,统计季度,真实风险概率\n520122001000001,2024Q1,0.12\nx,2024Q1,1.5\n",
                                         encoding="utf-8")
    rep, t, _ = run(tmp_path, tmp_path)
    assert t.oracle[["household_id", "quarter", "true_probability"]].values.tolist() == [
        ["520122001000001", "2024Q1", 0.12]]
    assert_balanced(rep)


def test_append_is_idempotent(tmp_path):
    a = write_csv(tmp_path / "a.csv", household("520122001000001", 2))
    b = write_csv(tmp_path / "b.csv", household("520122001000001", 3, quarter="2024Q2"))
    evf = write_csv(tmp_path / "e.csv", [event(make_id("19510101", 1), "2024-04-02")])
    out = tmp_path / "out"
    ingest([a], None, out, PARAMS, key=KEY)
    for _ in range(2):
        ingest([b], [evf], out, PARAMS, key=KEY, append=True)
        t = load_tables(out)
        assert t.households.groupby("quarter")["n_members"].sum().to_dict() == {"2024Q1": 2, "2024Q2": 3}
        assert len(t.events) == 1 and t.events["household_id"].tolist() == ["520122001000001"]


@pytest.mark.parametrize("bad", ["1e300", "10.5", "１３.２"])
def test_work_months_must_be_a_whole_number(tmp_path, bad):
    rows = household("520122001000001", 2)
    rows[1][H("work_months")] = bad
    rep, _, out = run(tmp_path, write_csv(tmp_path / "l.csv", rows))
    assert quarantine(out)[["column", "code"]].values.tolist() == [["务工时间（月）", "bad_number"]]
    assert_balanced(rep)
