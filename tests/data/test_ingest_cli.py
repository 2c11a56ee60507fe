"""`fangpin ingest` through typer's CliRunner: good files are ingested, bad ones are named with the
column to fix, and the exit code is non-zero when any file failed."""

from __future__ import annotations

import json

from ingest_fixtures import event, household, write_csv, write_xlsx
from typer.testing import CliRunner

from fangpin.cli import app

runner = CliRunner()


def test_cli_good_and_bad_files(tmp_path):
    src = tmp_path / "exports"
    src.mkdir()
    rows = household("520122001000001", 3)
    write_csv(src / "户成员台账_2024Q1.csv", rows, encoding="gb18030")
    write_xlsx(src / "防止返贫监测对象信息_20240628.xlsx",
               [{k: v for k, v in r.items() if k != "统计季度"} for r in household("520122001000002", 2)])
    write_csv(src / "缺列.csv", [{k: v for k, v in r.items() if k != "健康状况"} for r in rows])
    (src / "其他.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    evf = write_csv(tmp_path / "部门预警数据_2024.csv", [event(rows[0]["证件号码"])])
    out = tmp_path / "out"
    res = runner.invoke(app, ["ingest", "--ledger", str(src), "--events", str(evf), "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert "缺列.csv" in res.output and "健康状况" in res.output and "其他.csv" in res.output
    assert "2 个文件无法导入" in res.output
    rep = json.loads((out / "ingest_report.json").read_text(encoding="utf-8"))
    assert rep["rows_read"] == rep["rows_accepted"] + rep["rows_quarantined"] == 6
    assert rep["events_read"] == 1 and rep["events_unmatched"] == 0
    assert rep["quarters"] == ["2024Q1", "2024Q2"]
    assert {e["file"]: e["column"] for e in rep["errors"]} == {"缺列.csv": "健康状况", "其他.csv": "户编号"}
    for name in ("households.parquet", "persons.parquet", "events.parquet", "lines.json", "quarantine.csv"):
        assert (out / name).exists(), name


def test_cli_all_good_exits_zero(tmp_path):
    f = write_csv(tmp_path / "l.csv", household("520122001000001", 2))
    res = runner.invoke(app, ["ingest", "--ledger", str(f), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "导入 2 行" in res.output


def test_cli_missing_path_others_still_ingested(tmp_path):
    f = write_csv(tmp_path / "l.csv", household("520122001000001", 2))
    res = runner.invoke(app, ["ingest", "--ledger", str(tmp_path / "nope.csv"), "--ledger", str(f),
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "nope.csv" in res.output and "找不到文件" in res.output
    assert "导入 2 行" in res.output


def test_cli_empty_folder_is_an_error_naming_it(tmp_path):
    """A folder with nothing to read (a wrong path, an export not copied yet) is never '0 rows, done'."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "说明.txt").write_text("x", encoding="utf-8")
    res = runner.invoke(app, ["ingest", "--ledger", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "文件夹中没有 CSV 或 xlsx 文件" in res.output and "empty" in res.output
