"""Streaming ingest: reading in chunks and building persons/households in parts of whole
households gives the same tables, quarantine and report as doing it all at once."""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow.parquet as pq
from ingest_fixtures import event, household, make_id, person, write_csv, write_xlsx
from pandas.testing import assert_frame_equal

import fangpin.ingest.read as rd
import fangpin.ingest.stream as st
from fangpin.config import load_params
from fangpin.ingest import ingest

PARAMS = load_params()  # the project's params.yaml, as `fangpin ingest` reads it

KEY = b"test-key"


def _inputs(d):
    """Two quarters in one file, one quarter split over a CSV and an xlsx, and the findings that
    span files and parts: duplicates across files, household fields that differ, invalid ID check
    characters, unknown birth dates, an income mismatch, a bad row, a column carried by one file."""
    d.mkdir()
    a, b = [], []
    for i in range(30):
        hh = f"5201220010{i:05d}"
        rows = household(hh, n=1 + i % 4)
        for r in rows:
            r["备注"] = f"a{i}"
        a += rows
        a += household(hh, n=1 + i % 4, quarter="2023Q4")
    a[3]["户类型"] = "一般农户"  # member disagrees with the head's household field
    a[5]["证件号码"] = make_id(seq=7, valid=False)
    a[8]["证件号码"] = make_id(birth="19801301", seq=1, valid=False)  # month 13: no birth date from the ID
    a[0]["人均纯收入（元）"] = "1.0"  # a household of one: income parts disagree
    a[12]["健康状况"] = "很好"  # not an allowed value: quarantined
    for i in range(30, 45):
        b += household(f"5201220010{i:05d}", n=2)
    b += [dict(a[0]), dict(a[20])]  # the same persons again in the same quarter: duplicates
    b[-1]["户编号"] = "520122001099999"
    b.append(person("520122001000003", 9, quarter="2024Q1"))
    write_csv(d / "台账_a.csv", a)
    write_xlsx(d / "台账_b.xlsx", b[:20])
    write_csv(d / "台账_c.csv", b[20:], encoding="gb18030")
    write_csv(d / "部门预警数据.csv", [event(a[0]["证件号码"]), event(make_id(seq=99), date="2023-11-02"),
                                       event(b[5]["证件号码"], date="2024-03-01")])
    return d


def _run(d, out, monkeypatch=None, chunk=None, part=None):
    if monkeypatch is not None:
        monkeypatch.setattr(rd, "CHUNK_ROWS", chunk)
        monkeypatch.setattr(st, "PART_ROWS", part)
        monkeypatch.setattr(st, "BUCKET_ROWS", 7)  # duplicates decided in many hash buckets
    return ingest([d], None, out, PARAMS, key=KEY)


def test_chunks_and_parts_change_nothing(tmp_path, monkeypatch):
    """Chunks of 30 rows, every household its own part, duplicates in buckets of ~7 rows, 16-row
    row groups, against one chunk, one bucket and one part (the whole input at once, as before streaming)."""
    monkeypatch.setattr("fangpin.ingest.core.ROW_GROUP_ROWS", 16)
    d = _inputs(tmp_path / "in")
    whole = _run(d, tmp_path / "whole")
    _run(d, tmp_path / "small", monkeypatch, 30, 1)
    assert whole.rows_read == whole.rows_accepted + whole.rows_quarantined
    codes = {f["code"] for f in whole.findings}
    assert {"duplicate_person_rows", "household_field_disagreement", "invalid_id_numbers",
            "birth_date_unknown", "income_mismatch", "quarantined_rows"} <= codes
    assert whole.duplicate_person_rows == 2 and whole.rows_quarantined == 3
    for t in ("persons", "households", "events"):
        assert_frame_equal(pd.read_parquet(tmp_path / "whole" / f"{t}.parquet"),
                           pd.read_parquet(tmp_path / "small" / f"{t}.parquet"), check_exact=True)
        f = pq.ParquetFile(tmp_path / "small" / f"{t}.parquet")
        sizes = [f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)]
        assert sizes[:-1] == [16] * (len(sizes) - 1) and 0 < sizes[-1] <= 16
    p = pd.read_parquet(tmp_path / "small" / "persons.parquet")
    assert "备注" in p.columns and p["备注"].notna().any() and p["备注"].isna().any()  # carried by one file only
    assert (tmp_path / "whole" / "quarantine.csv").read_bytes() == (tmp_path / "small" / "quarantine.csv").read_bytes()
    rw, rs = (json.loads((tmp_path / x / "ingest_report.json").read_text()) for x in ("whole", "small"))
    for r in (rw, rs):
        r.pop("created"), r.pop("out_dir")
    assert rw == rs


def test_streamed_ledger_equals_the_in_memory_build(tmp_path, monkeypatch):
    """The streamed persons/households (duplicates decided per quarter on disk, households built
    in parts) equal tables.build_ledger on the whole files in memory (what the API path uses)."""
    from fangpin.config import load_params
    from fangpin.ingest.read import read_table
    from fangpin.ingest.tables import build_ledger, prepare

    d = _inputs(tmp_path / "in")
    _run(d, tmp_path / "small", monkeypatch, 30, 1)
    prepared = []
    for f in sorted(d.glob("台账_*")):
        raw = read_table(f)
        prepared.append(prepare(raw.frame, raw.headers, raw.kind, f.name, rows=raw.rows,
                                extra_fields=raw.extra_fields))
    lb = build_ledger(prepared, KEY, load_params().ingest.income_mismatch_tolerance)
    kept = lb.persons[lb.persons.duplicated(["quarter", "person_key"], keep=False)]
    assert kept.empty and set(lb.quarantine["file"]) == {"台账_c.csv"}
    for name, frame in (("persons", lb.persons), ("households", lb.households)):
        as_written = pd.read_parquet(io.BytesIO(frame.to_parquet(index=False)))  # Parquet has no datetime64[s]
        assert_frame_equal(as_written, pd.read_parquet(tmp_path / "small" / f"{name}.parquet"), check_exact=True)
    q = pd.read_csv(tmp_path / "small" / "quarantine.csv", encoding="utf-8-sig", dtype=str, keep_default_na=False)
    dq = q[q["code"] == "duplicate"].reset_index(drop=True)
    assert_frame_equal(dq, lb.quarantine.astype(str), check_dtype=False)


class _SplittingExecutor:
    """Runs the tasks here but as a 2-worker cluster would see them: every file larger than its
    share is cut into row-chunk tasks, and tasks finish in reverse order."""

    distributed = True
    workers = 2

    def share(self, obj):
        return obj

    def map_unordered(self, fn, items, *args, **kw):
        for it in reversed(list(items)):
            yield fn(it, *args, **kw)


def test_files_and_row_chunks_as_tasks_change_nothing(tmp_path, monkeypatch):
    """Files cut into 30-row chunks that run as tasks, quarters and parts as tasks, finishing in
    any order: the same tables (row groups too), quarantine and report as one pass."""
    from fangpin.config import load_params

    monkeypatch.setattr("fangpin.ingest.core.ROW_GROUP_ROWS", 16)
    d = _inputs(tmp_path / "in")
    _run(d, tmp_path / "whole")
    monkeypatch.setattr(rd, "CHUNK_ROWS", 30)
    monkeypatch.setattr(st, "PART_ROWS", 20)
    monkeypatch.setattr(st, "BUCKET_ROWS", 7)
    ingest([d], None, tmp_path / "tasks", load_params(), key=KEY, executor=_SplittingExecutor())
    for t in ("persons", "households", "events"):
        a, b = (pq.ParquetFile(tmp_path / x / f"{t}.parquet") for x in ("whole", "tasks"))
        assert a.read().equals(b.read()) and a.metadata.num_row_groups == b.metadata.num_row_groups
    assert (tmp_path / "whole" / "quarantine.csv").read_bytes() == (tmp_path / "tasks" / "quarantine.csv").read_bytes()
    rw, rs = (json.loads((tmp_path / x / "ingest_report.json").read_text()) for x in ("whole", "tasks"))
    for r in (rw, rs):
        r.pop("created"), r.pop("out_dir")
    assert rw == rs
    assert not list((tmp_path / "tasks").glob(".ingest-*"))  # scratch removed
