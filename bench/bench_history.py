"""The online history: a store table (SQLite, PostgreSQL) against a memory-mapped Arrow file.

What `/v1/score` and `/v1/events` need per request is the history rows of the posted households
(fangpin.store.history). This writes N households' rows of the demo's real size (the history and
snapshot of households of the demo ledger, reused round-robin under new keys, in history blocks
as ``fangpin score`` writes them) once to each backend and times a request's lookup — 1
household, 256 households at random and 256 neighbours (one village's list: few blocks) —
``--n`` times:

- ``sqlite`` / ``postgresql``: ``fangpin.store.history.histories`` (primary-key lookup of the
  rows, decoding of their blocks, plus the department events received for them), as the API runs it;
- ``mmap``: an Arrow IPC file of (key, JSON) memory-mapped, a key → row dict built at open, rows
  taken and parsed per lookup (what a file the API maps into memory would cost; it could not take
  the events ``/v1/events`` writes, nor a new level, without a second mechanism).

    flock /tmp/fangpin-bench.lock .venv/bin/python bench/bench_history.py [--households 50000] [--n 500]
        [--ingested data/ingested] [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]

Prints JSON (write seconds, lookup p50/p99 ms, file sizes, load); docs/benchmarks.md records it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def sample_rows(ingested: Path, k: int = 2000):
    """History rows of ``k`` households of the ledger's latest quarter: their places, history and
    snapshot tables (models.features), and their JSON form."""
    sys.path.insert(0, str(REPO))
    import pandas as pd

    from fangpin.config import load_params
    from models.features import Frames, feature_table, history_table, record_of, snapshot_table

    p = load_params()
    fr = Frames.from_dir(ingested, lines=p.lines)
    q = int(fr.households["quarter_idx"].max())
    feats = feature_table(fr, quarters=[q])
    rows = np.arange(min(k, len(feats)))
    ids = [str(feats["household_id"][i]) for i in rows]
    hist, snaps = history_table(feats, rows), snapshot_table(fr, q, ids)
    places = pd.DataFrame({c: [str(feats[c][i]) for i in rows] for c in ("county", "township", "village")})
    places["household_id"] = ids
    data = [{"history": h, "snapshot": record_of(sn)} for h, sn in zip(hist.to_pylist(), snaps.to_pylist(), strict=True)]
    return places, hist, snaps, data


def timed(fn, n: int) -> dict:
    fn()
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    t = np.array(t) * 1000
    return {"p50_ms": round(float(np.percentile(t, 50)), 3), "p99_ms": round(float(np.percentile(t, 99)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--households", type=int, default=50_000)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--ingested", type=Path, default=REPO / "data" / "ingested")
    ap.add_argument("--pg", default=os.environ.get("FANGPIN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = ap.parse_args()
    import orjson
    import pyarrow as pa
    import pyarrow.compute as pc
    from sqlalchemy import create_engine, text

    from fangpin.store import Store
    from fangpin.store import history as hs

    places0, hist0, snaps0, base = sample_rows(args.ingested)
    take = pa.array(np.arange(args.households) % len(base))
    keys = [uuid.uuid4().hex for _ in range(args.households)]
    places = places0.iloc[take.to_numpy()].reset_index(drop=True)
    places["household_id"] = [f"{h}-{i}" for i, h in enumerate(places["household_id"])]
    t0 = time.perf_counter()
    enc = hs.encode_blocks(places, hist0.take(take), snaps0.take(take), "bench", "2024Q4")
    encode_s = time.perf_counter() - t0
    order = enc["order"]
    stored = pa.table({"household_key": pc.take(pa.array(keys), pa.array(order)),
                       "household_id": places["household_id"].to_numpy()[order],
                       **{c: places[c].to_numpy()[order] for c in ("county", "township", "village")},
                       "block_key": enc["block_key"], "block_row": enc["block_row"]})
    rows = [{"household_key": k, "data": base[i % len(base)]} for i, k in enumerate(keys)]
    rng = np.random.default_rng(0)
    one = [[keys[i]] for i in rng.integers(0, len(keys), args.n + 1)]
    many = [list(rng.choice(keys, 256, replace=False)) for _ in range(args.n + 1)]
    in_order = stored.column("household_key").to_pylist()
    near = [in_order[s:s + 256] for s in rng.integers(0, len(keys) - 256, args.n + 1)]
    county_of = dict(zip(in_order, stored.column("county").to_pylist(), strict=True))
    out = {"households": args.households, "json_bytes_per_household": round(float(np.mean(
        [len(orjson.dumps(d)) for d in base]))), "block_households": hs.BLOCK_HOUSEHOLDS,
        "block_bytes_per_household": round(sum(map(len, enc["blocks"]["payload"])) / args.households),
        "encode_s": round(encode_s, 2), "load_before": os.getloadavg(), "backends": {}}

    with tempfile.TemporaryDirectory() as d:
        backends = {"sqlite": f"sqlite:///{d}/h.db"}
        dbname = f"fangpin_bench_{uuid.uuid4().hex[:8]}"
        try:
            admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{dbname}"'))
            backends["postgresql"] = args.pg.rsplit("/", 1)[0] + f"/{dbname}"
        except Exception as exc:  # noqa: BLE001 - PostgreSQL is optional for this benchmark
            out["postgresql_skipped"] = f"{type(exc).__name__}: {exc}"[:200]
        try:
            for name, url in backends.items():
                store = Store(url, b"bench-secret", migrate=True)
                t0 = time.perf_counter()
                hs.write_history(store, "2024Q4", sorted(set(places["county"])), stored.to_batches(50_000), iter([]),
                                 iter([]), pa.table(enc["blocks"]).to_batches(5000), [pa.table(enc["schema"])])
                w = time.perf_counter() - t0
                it1, it2, it3, it4, it5 = iter(one), iter(many), iter(near), iter(one), iter(near)

                def in_county(keys, s=store):  # the API's lookups name the households' counties
                    return hs.histories(s, keys, {county_of[k] for k in keys})

                out["backends"][name] = {"write_s": round(w, 1),
                                         "lookup_1": timed(lambda it=it1, s=store: hs.histories(s, next(it)), args.n),
                                         "lookup_256": timed(lambda it=it2, s=store: hs.histories(s, next(it)), args.n),
                                         "lookup_256_neighbours": timed(lambda it=it3, s=store: hs.histories(
                                             s, next(it)), args.n),
                                         "lookup_1_in_county": timed(lambda it=it4: in_county(next(it)), args.n),
                                         "lookup_256_neighbours_in_county": timed(lambda it=it5: in_county(next(it)),
                                                                                  args.n)}
                if name == "sqlite":
                    out["backends"][name]["file_mib"] = round(Path(url[len("sqlite:///"):]).stat().st_size / 2**20)
                store.dispose()
                print(name, out["backends"][name], flush=True)
            # the alternative: a memory-mapped Arrow file of (key, JSON)
            path = Path(d) / "history.arrow"
            t0 = time.perf_counter()
            table = pa.table({"key": keys, "data": [orjson.dumps(r["data"]) for r in rows]})
            with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, table.schema) as wr:
                wr.write_table(table)
            w = time.perf_counter() - t0
            t0 = time.perf_counter()
            mapped = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
            index = {k: i for i, k in enumerate(mapped.column("key").to_pylist())}
            opened = time.perf_counter() - t0
            data = mapped.column("data")

            def look(ks):
                return {k: orjson.loads(data[index[k]].as_py()) for k in ks if k in index}

            it1, it2 = iter(one), iter(many)
            out["backends"]["mmap"] = {"write_s": round(w, 1), "open_s": round(opened, 2),
                                       "file_mib": round(path.stat().st_size / 2**20),
                                       "lookup_1": timed(lambda: look(next(it1)), args.n),
                                       "lookup_256": timed(lambda: look(next(it2)), args.n)}
            print("mmap", out["backends"]["mmap"], flush=True)
        finally:
            if "postgresql" in backends:
                with admin.connect() as c:
                    c.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
