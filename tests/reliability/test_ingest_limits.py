"""Oversized and malformed ingest inputs, generated here (small, but over the configured limits):
each is refused or quarantined with the file, row and column named, quickly, and nothing is left
half-written."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from ingest_fixtures import H, household, write_csv, write_xlsx

from fangpin.config import load_params
from fangpin.ingest import ingest

pytestmark = pytest.mark.reliability


def _params(**ingest_over):
    p = load_params()
    return p.model_copy(update={"ingest": p.ingest.model_copy(update=ingest_over)})


def _rows(n_households: int = 3) -> list[dict]:
    return [r for i in range(n_households) for r in household(f"5201220010000{i:02d}", 2)]


def _quarantine(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")


def _no_staging_left(out: Path) -> None:
    assert not [p for p in out.parent.rglob(".ingest-*")], "a staging folder was left behind"


def test_a_header_wider_than_the_limit_is_refused_naming_the_file(tmp_path):
    rows = _rows()
    headers = list(rows[0]) + [f"附加{j}" for j in range(600)]
    (tmp_path / "in").mkdir()
    write_csv(tmp_path / "in" / "wide.csv", rows, headers=headers)
    t = time.perf_counter()
    rep = ingest([tmp_path / "in"], [], tmp_path / "out", _params(max_columns=100))
    took = time.perf_counter() - t
    err = rep.errors[0]
    assert err["code"] == "too_many_columns" and err["file"] == "wide.csv"
    assert "wide.csv" in err["message"] and "100" in err["message"]
    assert took < 30  # refused from the header, before the data (generous: the machine is shared)
    _no_staging_left(tmp_path)


def _sheet_bomb(path: Path, payload_bytes: int) -> Path:
    """A valid ledger .xlsx whose sheet XML carries ``payload_bytes`` of one repeated character in
    an XML comment: tiny compressed, large unpacked (a decompression bomb)."""
    write_xlsx(path, _rows())
    src = zipfile.ZipFile(path)
    items = {i.filename: src.read(i.filename) for i in src.infolist()}
    src.close()
    sheet = "xl/worksheets/sheet1.xml"
    xml = items[sheet].decode("utf-8")
    i = xml.index("<sheetData")
    items[sheet] = (xml[:i] + "<!--" + " " * payload_bytes + "-->" + xml[i:]).encode("utf-8")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in items.items():
            z.writestr(name, data)
    return path


def test_xlsx_decompression_bomb_is_refused_before_parsing(tmp_path):
    (tmp_path / "in").mkdir()
    bomb = _sheet_bomb(tmp_path / "in" / "bomb.xlsx", 20_000_000)  # 20 MB of XML in ~20 KB
    assert bomb.stat().st_size < 200_000
    rep = ingest([tmp_path / "in"], [], tmp_path / "out", _params())
    assert [e["code"] for e in rep.errors] == ["xlsx_bomb"] and rep.errors[0]["file"] == "bomb.xlsx"
    # over the absolute size limit (ratio allowed)
    rep = ingest([tmp_path / "in"], [], tmp_path / "out2", _params(max_xlsx_sheet_bytes=5_000_000,
                                                                    max_xlsx_ratio=1e9))
    assert [e["code"] for e in rep.errors] == ["xlsx_too_large"] and "bomb.xlsx" in rep.errors[0]["message"]
    _no_staging_left(tmp_path)


def test_xlsx_with_more_rows_than_the_limit_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    write_xlsx(tmp_path / "in" / "long.xlsx", _rows(30))
    rep = ingest([tmp_path / "in"], [], tmp_path / "out", _params(max_xlsx_rows=40))
    assert [e["code"] for e in rep.errors] == ["xlsx_too_many_rows"]
    assert "long.xlsx" in rep.errors[0]["message"]


def test_oversized_cells_are_quarantined_with_a_bounded_prefix(tmp_path):
    rows = _rows(4)
    rows[0][H("name")] = "名" * 350_000  # the whole cell must not reach quarantine.csv
    rows[2][H("village")] = "x" * 1_000_000
    rows[4][H("name")] = "长" * 300  # under the cell limit, over the contract's text limit (200)
    (tmp_path / "in").mkdir()
    write_csv(tmp_path / "in" / "l.csv", rows)
    out = tmp_path / "out"
    rep = ingest([tmp_path / "in"], [], out, _params(max_cell_chars=1000, quarantine_value_chars=50))
    assert rep.ok and rep.rows_read == 8
    assert rep.rows_accepted + rep.rows_quarantined == rep.rows_read
    q = _quarantine(out)
    by_row = {int(r): g for r, g in q.groupby("row")}
    assert set(by_row) == {2, 4, 6}
    assert set(by_row[2]["code"]) == {"cell_too_long"} and set(by_row[2]["column"]) == {H("name")}
    assert set(by_row[4]["code"]) == {"cell_too_long"} and set(by_row[4]["column"]) == {H("village")}
    assert set(by_row[6]["code"]) == {"too_long"} and "200" in by_row[6]["reason"].iloc[0]
    assert q["value"].str.len().max() <= 51
    assert (out / "quarantine.csv").stat().st_size < 10_000
    assert "1000" in by_row[2]["reason"].iloc[0]


def test_a_line_in_another_encoding_is_named_by_its_line_number(tmp_path):
    from ingest_fixtures import csv_text

    rows = _rows(3)
    text = csv_text(rows)
    lines = text.split("\r\n")
    data = "\r\n".join(lines[:4]).encode("utf-8") + b"\r\n" + "\r\n".join(lines[4:]).encode("gbk")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "mixed.csv").write_bytes(data)
    rep = ingest([tmp_path / "in"], [], tmp_path / "out", _params())
    err = rep.errors[0]
    assert err["code"] == "encoding" and err["file"] == "mixed.csv"
    assert "第 5 行" in err["message"]
    # and the other way round: GBK first, then UTF-8 (line 5 again)
    data = "\r\n".join(lines[:4]).encode("gbk") + b"\r\n" + "\r\n".join(lines[4:]).encode("utf-8")
    (tmp_path / "in" / "mixed.csv").write_bytes(data)
    rep = ingest([tmp_path / "in"], [], tmp_path / "out2", _params())
    assert "第 5 行" in rep.errors[0]["message"]


def test_a_header_only_file_is_reported_and_fails_alone(tmp_path):
    from typer.testing import CliRunner

    from fangpin.cli import app

    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "empty.csv").write_text(",".join(_rows()[0]) + "\r\n", encoding="utf-8")
    rep = ingest([tmp_path / "only"], [], tmp_path / "out", _params())
    assert not rep.ok and rep.errors[0]["code"] == "header_only" and "empty.csv" in rep.errors[0]["message"]
    assert rep.finding("header_only_files")["examples"] == [{"file": "empty.csv"}]
    res = CliRunner().invoke(app, ["ingest", "--ledger", str(tmp_path / "only"), "--out", str(tmp_path / "o2")])
    assert res.exit_code != 0 and "empty.csv" in res.output
    # beside a file with rows it is a finding, not an error
    write_csv(tmp_path / "only" / "full.csv", _rows())
    rep = ingest([tmp_path / "only"], [], tmp_path / "out3", _params())
    assert rep.ok and rep.rows_accepted == 6
    assert rep.finding("header_only_files")["count"] == 1
    assert [f["header_only"] for f in rep.files if f["file"] == "empty.csv"] == [True]


def test_a_formula_without_a_cached_value_is_quarantined_not_read_as_zero(tmp_path):
    rows = _rows()
    rows[1][H("income_per_capita")] = "=B7*0"  # openpyxl writes the formula and no cached value
    rows[3][H("village")] = "=A1"
    (tmp_path / "in").mkdir()
    write_xlsx(tmp_path / "in" / "f.xlsx", rows)
    rep = ingest([tmp_path / "in"], [], tmp_path / "out", _params())
    assert rep.ok and rep.rows_quarantined == 2
    q = _quarantine(tmp_path / "out")
    assert set(q["code"]) == {"formula_no_value"}
    assert set(q["column"]) == {H("income_per_capita"), H("village")}
    assert sorted(q["row"].astype(int)) == [5, 7]  # two title rows, the header on row 3
    assert len(pd.read_parquet(tmp_path / "out" / "persons.parquet")) == 4  # the two formula rows are out
    hh = pd.read_parquet(tmp_path / "out" / "households.parquet")
    assert (hh["income_per_capita"] != 0).all()


def test_values_out_of_the_contract_ranges_are_quarantined(tmp_path):
    rows = _rows(3)
    for r in rows:
        r[H("farmland_mu")] = "2.5"
    rows[0][H("income_per_capita")] = "-1e308"
    rows[2][H("wage_income")] = "1e300"
    rows[4][H("farmland_mu")] = "inf"
    (tmp_path / "in").mkdir()
    write_csv(tmp_path / "in" / "l.csv", rows)
    assert ingest([tmp_path / "in"], [], tmp_path / "out", _params()).ok
    q = _quarantine(tmp_path / "out")
    got = {(int(r.row), r.column, r.code) for r in q.itertuples()}
    assert (2, H("income_per_capita"), "out_of_range") in got
    assert (4, H("wage_income"), "out_of_range") in got
    assert (6, H("farmland_mu"), "bad_number") in got
    assert "至" in q.loc[q["code"] == "out_of_range", "reason"].iloc[0]
    hh = pd.read_parquet(tmp_path / "out" / "households.parquet")
    assert hh["income_per_capita"].abs().max() < 1e7


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_a_failed_ingest_leaves_the_previous_outputs_and_no_temp_files(tmp_path, monkeypatch):
    from fangpin.ingest import tables as tb

    (tmp_path / "in").mkdir()
    write_csv(tmp_path / "in" / "a.csv", _rows())
    out = tmp_path / "out"
    assert ingest([tmp_path / "in"], [], out, _params()).ok
    before = _snapshot(out)
    write_csv(tmp_path / "in" / "b.csv", _rows(5))

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tb, "build_lines", boom)  # after persons/households were written
    with pytest.raises(RuntimeError):
        ingest([tmp_path / "in"], [], out, _params())
    assert _snapshot(out) == before
    _no_staging_left(tmp_path)
    # a first ingest that fails leaves no output folder at all
    with pytest.raises(RuntimeError):
        ingest([tmp_path / "in"], [], tmp_path / "new", _params())
    assert not (tmp_path / "new").exists()


def test_an_ingest_killed_half_way_leaves_nothing_and_the_next_run_cleans_up(tmp_path):
    (tmp_path / "in").mkdir()
    write_csv(tmp_path / "in" / "a.csv", _rows())
    out = tmp_path / "out"
    assert ingest([tmp_path / "in"], [], out, _params()).ok
    before = _snapshot(out)
    flag = tmp_path / "reached"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from fangpin.config import load_params
        from fangpin.ingest import ingest, tables as tb
        def stall(*a, **k):
            Path({str(flag)!r}).write_text("x")
            time.sleep(600)
        tb.build_lines = stall
        ingest([Path({str(tmp_path / 'in')!r})], [], Path({str(out)!r}), load_params())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the ingest did not reach the stall"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _snapshot(out) == before  # nothing published
    assert list(out.glob(".ingest-*")), "the killed run's staging folder is expected here"
    assert ingest([tmp_path / "in"], [], out, _params()).ok
    _no_staging_left(tmp_path)


def test_quarantine_csv_cells_cannot_run_as_formulas(tmp_path):
    """A ledger value like =HYPERLINK(…) is kept in quarantine.csv (opened in Excel by clerks) as
    text: prefixed with an apostrophe, which Excel shows as the value itself."""
    rows = _rows()
    rows[0][H("relation")] = '=HYPERLINK("http://example.invalid","x")'
    rows[2][H("health")] = "@SUM(1)"
    (tmp_path / "in").mkdir()
    write_csv(tmp_path / "in" / "l.csv", rows)
    ingest([tmp_path / "in"], [], tmp_path / "out", _params())
    raw = (tmp_path / "out" / "quarantine.csv").read_text(encoding="utf-8-sig")
    cells = [c for row in csv.reader(io.StringIO(raw)) for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "@")]
    assert "'=HYPERLINK(\"http://example.invalid\",\"x\")" in cells
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text(encoding="utf-8"))
    assert report["rows_quarantined"] == 2
