"""Ingest's route step (fangpin.ingest.tasks 3a-3c): duplicates by hash bucket of person_key,
parts by household_id range, every task bounded by one piece or one bucket, against pandas on
the whole quarter at once."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
from pandas.testing import assert_frame_equal

import fangpin.ingest.stream as st
from fangpin.ingest import tables as tb
from fangpin.ingest import tasks as tk


def _key(i: int) -> str:
    return hashlib.md5(str(i).encode()).hexdigest()  # 32 hex characters, as person_key


def _pieces(tmp_path, n_pieces=6, rows=40, seed=3):
    """Pieces of one quarter in row order: persons drawn from a small pool (duplicates within and
    across pieces), households spread over several pieces."""
    rng = np.random.default_rng(seed)
    frames, paths = [], []
    for j in range(n_pieces):
        person = rng.integers(0, 150, rows)
        f = pd.DataFrame({
            "person_key": [_key(p) for p in person],
            "_seq": j * tk.SEQ_FILE // 4 + np.arange(rows, dtype=np.int64) * 3,
            "source_file": f"台账_{j // 2}.csv",
            "source_row": np.arange(rows, dtype=np.int64) + 2 + (j % 2) * 1000,
            "id_masked": [f"5201****{p:04d}" for p in person],
            "household_id": [f"52012200{p // 3:07d}" for p in person],
            "payload": rng.normal(size=rows),
        })
        path = tmp_path / f"piece_{j}.arrow"
        feather.write_feather(f, path, compression="lz4")
        frames.append(f)
        paths.append(str(path))
    return pd.concat(frames, ignore_index=True), paths


def _route(tmp_path, paths, buckets, part_rows, every):
    scans = [tk.scan_piece(("2024Q1", j, p, str(tmp_path / f"b_{j}.arrow"), buckets), every)
             for j, p in enumerate(paths)]
    found = [tk.find_duplicates(("2024Q1", b, [str(tmp_path / f"b_{j}.arrow") for j in range(len(paths))]))
             for b in range(buckets)]
    dup_seq = np.sort(np.concatenate([f["dup_seq"] for f in found]))
    bounds = st.part_bounds([s for r in scans for s in r["sample"]], part_rows, every)
    routed = [tk.route_piece(("2024Q1", j, p, str(tmp_path / "parts"), bounds, dup_seq)) for j, p in enumerate(paths)]
    parts = sorted({v for r in routed for v in r["parts"]})
    frames = [pd.concat([feather.read_table(r["parts"][v]).to_pandas() for r in routed if v in r["parts"]],
                        ignore_index=True) for v in parts]
    return found, dup_seq, frames


def test_duplicates_and_parts_equal_pandas_on_the_whole_quarter(tmp_path):
    whole, paths = _pieces(tmp_path)
    found, dup_seq, parts = _route(tmp_path, paths, buckets=5, part_rows=30, every=4)

    dup = whole.duplicated("person_key", keep="first").to_numpy()  # first in row order
    pieces_of_key = whole.groupby("person_key")["_seq"].apply(lambda s: len(set(s // (tk.SEQ_FILE // 4))))
    assert (pieces_of_key > 1).any()  # the fixture has duplicates across pieces
    assert np.array_equal(dup_seq, whole.loc[dup, "_seq"].to_numpy())
    # every bucket task saw only its bucket: together all rows, each less than the quarter
    assert sum(f["rows"] for f in found) == len(whole) and max(f["rows"] for f in found) < len(whole)
    assert sum(1 for f in found if f["dq"] is not None) > 1  # duplicates found in several buckets
    dq = pd.concat([f["dq"] for f in found if f["dq"] is not None]).sort_values("_seq").reset_index(drop=True)
    ref = tb.duplicate_quarantine(whole[dup].assign(quarter="2024Q1"), whole[~dup].assign(quarter="2024Q1"))
    assert_frame_equal(dq, ref.reset_index(drop=True))

    assert len(parts) > 2
    hh = [set(p["household_id"]) for p in parts]
    assert sum(len(h) for h in hh) == len(set().union(*hh))  # a household in one part only
    assert all(max(a) < min(b) for a, b in zip(hh, hh[1:], strict=False))  # parts in household_id order
    assert all(p["_seq"].is_monotonic_increasing for p in parts)  # rows of a part in row order
    pieces_of_hh = whole[~dup].groupby("household_id")["_seq"].apply(lambda s: len(set(s // (tk.SEQ_FILE // 4))))
    assert (pieces_of_hh > 1).any()  # households spread over several pieces, each landed whole
    got = pd.concat(parts, ignore_index=True).sort_values(["household_id", "_seq"], ignore_index=True)
    want = whole[~dup].sort_values(["household_id", "_seq"], ignore_index=True)
    assert_frame_equal(got, want)


def test_one_bucket_and_one_part(tmp_path):
    whole, paths = _pieces(tmp_path, n_pieces=2, rows=10)
    found, dup_seq, parts = _route(tmp_path, paths, buckets=1, part_rows=10_000, every=256)
    dup = whole.duplicated("person_key", keep="first").to_numpy()
    assert np.array_equal(dup_seq, whole.loc[dup, "_seq"].to_numpy())
    assert len(parts) == 1 and len(parts[0]) == (~dup).sum()


def test_part_bounds_follow_the_samples():
    s = [f"h{i:03d}" for i in range(100)]
    b = st.part_bounds(s, part_rows=40, every=4)  # every sample stands for 4 rows: a cut every 10 samples
    assert b == [f"h{i:03d}" for i in range(10, 100, 10)]
    assert st.part_bounds(["a"] * 50, part_rows=8, every=2) == ["a"]  # one household is never cut
    parts = st.parts_of(pa.array(["h000", "h009", "h010", None, "h099"]), b)
    assert parts.tolist() == [0, 0, 1, len(b), len(b)]


def test_oracle_streamed_keeps_the_last_row_of_a_household_quarter(tmp_path, monkeypatch):
    """oracle.parquet written piece by piece, the household-quarters given twice (in one file and
    across files) decided per hash bucket: the table of tables.build_oracle on all rows at once,
    row groups included."""
    import pyarrow.parquet as pq
    from ingest_fixtures import household, write_csv

    import fangpin.ingest.read as rd
    from fangpin.cluster import Executor
    from fangpin.config import load_params
    from fangpin.ingest import ingest
    from fangpin.ingest.read import read_table

    d = tmp_path / "in"
    d.mkdir()
    write_csv(d / "台账.csv", [r for i in range(3) for r in household(f"5201220010{i:05d}")])
    head = ["户编号", "统计季度", "真实风险概率"]
    a = [{"户编号": f"5201220010{i % 40:05d}", "统计季度": f"2024Q{1 + i // 40}", "真实风险概率": f"{i / 1000:.3f}"}
         for i in range(120)]
    a += [dict(a[3], 真实风险概率="0.999"), dict(a[50], 真实风险概率="0.998")]  # again in the same file
    b = [dict(a[7], 真实风险概率="0.5"), dict(a[3], 真实风险概率="0.25")]  # and in a later file
    write_csv(d / "oracle.csv", a, headers=head)
    (d / "z_later").mkdir()
    write_csv(d / "z_later" / "oracle.csv", b, headers=head)
    monkeypatch.setattr("fangpin.ingest.core.ROW_GROUP_ROWS", 16)
    monkeypatch.setattr(rd, "CHUNK_ROWS", 25)
    monkeypatch.setattr(st, "BUCKET_ROWS", 10)
    ingest([d], None, tmp_path / "out", load_params(), key=b"k", executor=Executor())
    prepared = []
    for f in (d / "oracle.csv", d / "z_later" / "oracle.csv"):
        raw = read_table(f)
        prepared.append(tb.prepare(raw.frame, raw.headers, raw.kind, f.name, rows=raw.rows,
                                   extra_fields=raw.extra_fields))
    want = tb.build_oracle(prepared)
    assert len(want) == 120 and (want["true_probability"] == 0.25).sum() == 1  # the last row kept
    got = pq.ParquetFile(tmp_path / "out" / "oracle.parquet")
    assert got.metadata.num_row_groups == -(-120 // 16)
    assert_frame_equal(got.read().to_pandas(), want)
