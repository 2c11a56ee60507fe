"""The tasks of ``ingest()`` (fangpin.cluster runs them in worker processes, or in this process).

1. :func:`read_file`, one task per input file: open it (encoding, header row, kind) and go
   through its data rows chunk by chunk (``read.CHUNK_ROWS``; a CSV that needs the slow parser is
   read again with it, as before), preparing each chunk (step 2) in the task — or, for a file
   large enough to hold up the others (``split``), writing each chunk as a raw text chunk (Arrow
   IPC) for step 2 to run as its own task;
2. :func:`prepare_chunk` (a split file's chunk) or the same work inside step 1: normalise +
   validate (``tables.prepare``), then for the ledger ``tables.ledger_rows`` (hashes, masks, birth
   dates, ages) spilled per quarter as ``ledger/<quarter>/<file>_<chunk>.arrow``, the oracle rows
   as ``oracle/<file>_<chunk>.arrow`` (:func:`oracle_scan` and :func:`oracle_duplicates` then find
   the household-quarters given twice per hash bucket); events and 监测线 rows and the quarantine
   lines are returned (they are small);
3. the route step, in three kinds of tasks, none of which holds more than one piece or one
   bucket (a quarter's keys are never in one process):

   a. :func:`scan_piece`, one task per piece (a chunk's rows of one quarter): the rows'
      person_key with ``_seq`` (row order over all files) and what a duplicate's quarantine line
      needs, hash-partitioned into the quarter's buckets (``stream.BUCKET_ROWS`` rows each) in one
      Arrow IPC file per piece (record batch ``b`` = bucket ``b``), and every
      ``stream.SAMPLE_EVERY``-th of the piece's sorted household_ids;
   b. :func:`find_duplicates`, one task per bucket: every row of a person_key is in its bucket, so
      the duplicated person rows (keep the first in file and row order) and their quarantine lines
      are decided there; their quarantine lines and ``_seq`` go back to the calling process;
   c. :func:`route_piece`, one task per piece: the piece's rows without the duplicated ones, routed
      into parts of whole households by household_id range (boundaries cut from the samples,
      ``stream.part_bounds``: parts of about ``stream.PART_ROWS`` rows, in household_id order);
4. :func:`build_part`, one task per part: ``LedgerAgg.add`` on the part's rows, the persons and
   households of the part written as Arrow files, the part's findings returned (merged in part
   order by ``LedgerAgg.merge``).

The calling process (fangpin.ingest.core) puts the results together in file / chunk / quarter /
part order, so the outputs, the report and the quarantine are those of one pass over the files.
Errors travel as data (:func:`error_dict`), not as exceptions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from fangpin.ingest import stream as st
from fangpin.ingest import tables as tb
from fangpin.ingest.errors import FileError
from fangpin.ingest.read import SlowPath, open_table


def error_dict(exc: FileError) -> dict:
    return {"path": str(exc.path), "message": exc.message, "column": exc.column, "code": exc.code}


def file_error(d: dict) -> FileError:
    return FileError(d["path"], d["message"], column=d["column"], code=d["code"])


SEQ_FILE = 1 << 40  # _seq = file number * SEQ_FILE + row within the file: row order over all files


def read_file(item: tuple[int, str, str, bool], raw_dir: str, key: bytes, spill_root: str, limits=None) -> dict:
    """Task 1 (module doc). ``item``: (file number, path, label, split). Opens the file (kind, encoding,
    header row, headers) and goes through its chunks: with ``split`` each chunk is written as a
    raw text chunk for :func:`prepare_chunk` tasks (``chunks``: raw path, rows, blank rows, seq0);
    else each is prepared here (``prepared``: the results of :func:`prepare_chunk`). ``limits``:
    IngestParams bounding the file (fangpin.ingest.read)."""
    i, path, label, split = item
    out: dict = {"i": i, "kind": None, "chunks": [], "prepared": [], "error": None}
    try:
        t = open_table(Path(path), limits=limits)
        out.update(kind=t.kind, encoding=t.encoding, header_row=t.header_row, headers=t.headers)
        base = {"i": i, "kind": t.kind, "headers": t.headers, "label": label, "path": path, "limits": t.limits}
        try:
            _go_through(t, base, out, Path(raw_dir), key, spill_root, split, slow=False)
        except SlowPath:
            _go_through(t, base, out, Path(raw_dir), key, spill_root, split, slow=True)
        if not out["chunks"] and not out["prepared"]:
            # no data rows: still check the header (a missing required column is an error)
            empty = pd.DataFrame({f"c{j}": pd.Series(dtype="str") for j in range(len(t.headers))})
            res = _prepare({**base, "c": 0, "seq0": i * SEQ_FILE}, empty, np.array([], dtype=np.int64), None, None,
                           key, spill_root)
            out["prepared"].append({**res, "n": 0, "blank": 0})
    except FileError as exc:
        _discard(out)
        out["error"] = error_dict(exc)
    return out


def _discard(out: dict) -> None:
    for raw, *_ in out["chunks"]:
        Path(raw).unlink(missing_ok=True)
    for res in out["prepared"]:
        for _, p, _ in res["pieces"]:
            Path(p).unlink(missing_ok=True)
    out["chunks"], out["prepared"] = [], []


def _go_through(t, base: dict, out: dict, raw_dir: Path, key: bytes, spill_root: str, split: bool,
                slow: bool) -> None:
    _discard(out)  # what a first (fast-parser) attempt left
    row = 0
    failed = False
    try:
        for c, ch in enumerate(t.chunks(slow=slow)):
            seq0 = base["i"] * SEQ_FILE + row
            row += len(ch.frame)
            if split:
                p = raw_dir / f"{base['i']:05d}_{c:06d}.arrow"
                df = ch.frame.copy()
                df["_row"] = ch.rows
                df["_extra"] = ch.extra_fields.to_numpy(dtype=bool)
                feather.write_feather(df, p, compression="lz4")
                out["chunks"].append((str(p), len(ch.frame), ch.blank_rows, seq0, ch.cell_errors))
            elif failed:  # after a file-level error the rows are only counted
                out["prepared"].append({"c": c, "n": len(ch.frame), "blank": ch.blank_rows, "error": None,
                                        "pieces": [], "skipped": True})
            else:
                res = _prepare({**base, "c": c, "seq0": seq0}, ch.frame, ch.rows, ch.extra_fields, ch.cell_errors, key,
                               spill_root)
                res.update(n=len(ch.frame), blank=ch.blank_rows)
                failed = res["error"] is not None
                out["prepared"].append(res)
    except BaseException:
        _discard(out)
        raise


def prepare_chunk(item: dict, key: bytes, spill_root: str) -> dict:
    """Task 2 (module doc). ``item``: file number ``i``, chunk number ``c``, raw chunk path (None:
    a file without data rows, its header still checked), kind, headers, label, path, ``seq0``
    (the chunk's first row in the row order over all files), the reader's ``cell_errors`` and the
    file's ``limits``."""
    if item["raw"] is None:
        frame = pd.DataFrame({f"c{j}": pd.Series(dtype="str") for j in range(len(item["headers"]))})
        rows, extra = np.array([], dtype=np.int64), None
    else:
        frame = pd.read_feather(item["raw"])
        rows = frame.pop("_row").to_numpy(dtype=np.int64)
        extra = frame.pop("_extra").astype(bool)
        Path(item["raw"]).unlink(missing_ok=True)
    return _prepare(item, frame, rows, extra, item.get("cell_errors"), key, spill_root)


def _prepare(item: dict, frame, rows, extra, cell_errors, key: bytes, spill_root: str) -> dict:
    kind, label = item["kind"], item["label"]
    out: dict = {"i": item["i"], "c": item["c"], "error": None, "quarantine": None, "accepted": 0,
                 "events": None, "prepared": None, "pieces": [], "extras": [], "quarter_from_name": None}
    try:
        p = tb.prepare(frame, item["headers"], kind, label, rows=rows, extra_fields=extra, path=Path(item["path"]),
                       cell_errors=cell_errors, limits=item.get("limits"))
    except FileError as exc:
        out["error"] = error_dict(exc)
        return out
    out["quarter_from_name"], out["extras"] = p.quarter_from_name, p.extras
    out["quarantine"] = p.quarantine
    if kind == "ledger":
        rows_ = tb.ledger_rows(p, item["i"], key, seq0=item["seq0"])
        out["accepted"] = len(rows_)
        for q, part in rows_.groupby("quarter", sort=False):
            d = Path(spill_root) / "ledger" / str(q)
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"{item['i']:05d}_{item['c']:06d}.arrow"
            feather.write_feather(part.reset_index(drop=True), path, compression="lz4")
            out["pieces"].append((str(q), str(path), len(part)))
    elif kind == "events":
        ev = tb.build_events([p], key)
        out["accepted"] = len(ev)
        out["events"] = ev if len(ev) else None
    elif kind == "lines":
        out["prepared"] = p
        out["accepted"] = len(p.accepted)
    elif kind == "oracle":  # spilled like the ledger (one row per household-quarter: a province's worth)
        acc = p.accepted[["household_id", "quarter", "true_probability"]].reset_index(drop=True)
        out["accepted"] = len(acc)
        if len(acc):
            d = Path(spill_root) / "oracle"
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"{item['i']:05d}_{item['c']:06d}.arrow"
            acc["_seq"] = np.arange(item["seq0"], item["seq0"] + len(acc), dtype=np.int64)
            feather.write_feather(acc, path, compression="lz4")
            out["pieces"].append(("oracle", str(path), len(acc)))
    return out


DUP_COLUMNS = ["person_key", "_seq", "source_file", "source_row", "id_masked"]


def scan_piece(item: tuple[str, int, str, str, int], every: int) -> dict:
    """Task 3a (module doc), one per piece of a quarter: the rows' person_key (with what a
    duplicate's quarantine line needs) hash-partitioned into ``buckets`` buckets, written as one
    Arrow IPC file holding record batch ``b`` for bucket ``b`` (``bucket_path``); returns a sample
    of the piece's sorted household_ids (every ``every``-th) and its ``_seq`` range. ``item``:
    quarter, piece number, piece path, bucket file, buckets."""
    q, j, path, bucket_path, buckets = item
    t = feather.read_table(path, columns=DUP_COLUMNS + ["household_id"])
    _write_buckets(t.select(DUP_COLUMNS), st.buckets_of(t["person_key"], buckets), buckets, bucket_path)
    seq = t["_seq"]
    return {"q": q, "j": j, "sample": st.household_sample(t["household_id"], every),
            "seq": (pc.min(seq).as_py(), pc.max(seq).as_py()) if len(t) else None}


def find_duplicates(item: tuple[str, int, list[str]]) -> dict:
    """Task 3b (module doc), one per bucket of a quarter: the bucket's rows of every piece (in
    piece order, i.e. row order), the duplicated person rows (keep the first occurrence of a
    person_key in row order: every row of a key is in this bucket), their quarantine lines and
    their ``_seq`` (what the routing drops)."""
    q, b, paths = item
    t = _read_bucket(paths, b)
    empty = {"q": q, "b": b, "dq": None, "dup_seq": np.array([], dtype=np.int64), "rows": len(t) if t is not None else 0}
    if t is None or not len(t):
        return empty
    dup = st._duplicated(t["person_key"])
    if not dup.any():
        return empty
    d = t.filter(pa.array(dup))
    kept = t.filter(pc.and_(pa.array(~dup), pc.is_in(t["person_key"], value_set=d["person_key"].unique())))
    d, kept = (x.to_pandas().assign(quarter=q) for x in (d, kept))
    dq = tb.duplicate_quarantine(d, kept)
    return {"q": q, "b": b, "dq": dq, "dup_seq": d["_seq"].to_numpy(dtype=np.int64), "rows": len(t)}


def _write_buckets(t: pa.Table, bucket: np.ndarray, buckets: int, path: str) -> None:
    """``t``'s rows as one Arrow IPC file holding record batch ``b`` for bucket ``b`` (empty ones
    too), each in ``t``'s row order."""
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(buckets + 1))
    s = t.take(pa.array(order))
    with pa.ipc.new_file(path, t.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as w:
        for k in range(buckets):
            part = s.slice(bounds[k], bounds[k + 1] - bounds[k])
            w.write_batch(pa.RecordBatch.from_arrays([c.combine_chunks() for c in part.columns], schema=t.schema))


def _read_bucket(paths: list[str], b: int) -> pa.Table | None:
    """Bucket ``b`` of every piece's bucket file (:func:`_write_buckets`), in ``_seq`` order."""
    batches = []
    for p in paths:
        with pa.OSFile(p) as src:
            batches.append(pa.ipc.open_file(src).get_batch(b))
    if not batches:
        return None
    t = pa.Table.from_batches(batches)
    seq = t["_seq"].to_numpy()
    if len(seq) > 1 and not (np.diff(seq) > 0).all():
        t = t.take(pc.sort_indices(t["_seq"]))
    return t


def oracle_scan(item: tuple[str, str, int]) -> None:
    """One task per oracle piece: its (household_id, quarter, _seq) hash-partitioned on household_id
    into ``buckets`` (:func:`_write_buckets`). ``item``: piece path, bucket file, buckets."""
    path, bucket_path, buckets = item
    t = feather.read_table(path, columns=["household_id", "quarter", "_seq"])
    _write_buckets(t, st.buckets_of(t["household_id"], buckets), buckets, bucket_path)


def oracle_duplicates(item: tuple[int, list[str]]) -> np.ndarray:
    """One task per oracle bucket: ``_seq`` of the rows of a household-quarter given again later
    (``tables.build_oracle`` keeps the last)."""
    b, paths = item
    t = _read_bucket(paths, b)
    if t is None or not len(t):
        return np.array([], dtype=np.int64)
    df = t.to_pandas()
    return df.loc[df.duplicated(["household_id", "quarter"], keep="last"), "_seq"].to_numpy(dtype=np.int64)


def route_piece(item: tuple[str, int, str, str, list[str], np.ndarray]) -> dict:
    """Task 3c (module doc), one per piece: the piece's rows without the duplicated ones
    (``dup_seq``: their ``_seq``) routed into the quarter's parts by household_id range (``bounds``,
    stream.part_bounds) as ``<work>/<part>_<piece>.arrow``. ``item``: quarter, piece number, piece
    path, work folder, bounds, dup_seq. Returns the part files written, by part number."""
    q, j, path, work, bounds, dup_seq = item
    work_p = Path(work)
    work_p.mkdir(parents=True, exist_ok=True)
    t = feather.read_table(path)
    if len(dup_seq):
        t = t.filter(pc.invert(pc.is_in(t["_seq"], value_set=pa.array(dup_seq, pa.int64()))))
    part = st.parts_of(t["household_id"], bounds)
    routed: dict[int, str] = {}
    for v in np.unique(part):
        dest = work_p / f"{v:07d}_{j:07d}.arrow"
        feather.write_feather(t.take(pa.array(np.flatnonzero(part == v))), dest, compression="lz4")
        routed[int(v)] = str(dest)
    Path(path).unlink()
    return {"q": q, "j": j, "parts": routed}


def build_part(item: tuple[str, int, list[str]], tolerance: float, extras: list[str], lookup_keys,
               out_dir: str) -> dict:
    """Task 4 (module doc): persons and households of one part of whole households
    (``<out_dir>/<quarter>_<part>_{persons,households}.arrow``), the part's findings (a LedgerAgg
    holding only this part) and the person rows the department events need."""
    q, v, paths = item
    df = pa.concat_tables([feather.read_table(p) for p in paths], promote_options="default").to_pandas()
    for p in paths:
        Path(p).unlink()
    agg = tb.LedgerAgg(tolerance, extras)
    p_out, h_out = agg.add(df)
    del df
    base = Path(out_dir) / f"{q}_{v:07d}"
    persons, households = f"{base}_persons.arrow", f"{base}_households.arrow"
    feather.write_feather(pa.Table.from_pandas(p_out, preserve_index=False), persons, compression="lz4")
    feather.write_feather(pa.Table.from_pandas(h_out, preserve_index=False), households, compression="lz4")
    lookup = None
    if lookup_keys is not None and len(lookup_keys):
        import pyarrow.compute as pc

        hit = pc.is_in(pa.array(p_out["person_key"]), value_set=lookup_keys).to_numpy(zero_copy_only=False)
        if hit.any():
            lookup = p_out.loc[hit, ["person_key", "quarter_idx", "household_id"]]
    return {"q": q, "v": v, "agg": agg, "persons": persons, "households": households, "lookup": lookup}
