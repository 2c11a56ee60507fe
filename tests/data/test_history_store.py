"""The online history in the store (fangpin/store/history.py) on SQLite and PostgreSQL: written
per county as of a quarter (never back in time), looked up per household, events stored once,
warnings raised only upwards."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime

from test_store import SECRET

from fangpin.config import Params
from fangpin.ids import event_key
from fangpin.store import Store
from fangpin.store import history as hs
from fangpin.warnings import STATUS_EXCLUDED, WarningRecord


def K(name: str) -> str:
    """A keyed-hash-like key (32 hexadecimal characters), as ingest and the history store use."""
    return hashlib.md5(name.encode()).hexdigest()


def _households(quarter: str, county: str = "甲县", n: int = 3) -> list[dict]:
    return [{"household_key": K(f"{county}-k{i}"), "household_id": f"H{i}", "county": county, "township": "东镇",
             "village": f"{i % 2}村", "level": None, "head_name": f"户主{i}", "id_masked": "5201**********0011",
             "data": json.dumps({"history": {"v": 1, "quarter": quarter}, "snapshot": {"household_id": f"H{i}",
                                                                                      "events": []}})}
            for i in range(n)]


def _places(quarter: str) -> list[dict]:
    return [{"county": "甲县", "township": "东镇", "village": "", "quarter": quarter,
             "data": json.dumps({"township_disaster_share": 0.1, "township_ident_rate_4q": 0.02})},
            {"county": "甲县", "township": "东镇", "village": "0村", "quarter": quarter,
             "data": json.dumps({"village_disaster_share": 0.25})}]


def test_history_is_written_per_county_and_never_back_in_time(db_url):  # noqa: F811
    store = Store(db_url, SECRET, migrate=True)
    try:
        persons = [{"person_key": K("p0"), "household_key": K("甲县-k0"), "county": "甲县"},
                   {"person_key": K("p1"), "household_key": K("甲县-k1"), "county": "甲县"}]
        out = hs.write_history(store, "2024Q3", ["甲县"], _households("2024Q3"), persons, _places("2024Q3"))
        assert out == {"households": 3, "persons": 2, "places": 2, "blocks": 0}
        hs.write_history(store, "2024Q3", ["乙县"], _households("2024Q3", "乙县", 1), [], [])
        rows = hs.histories(store, [K("甲县-k0"), K("乙县-k0"), "nobody"])
        assert set(rows) == {K("甲县-k0"), K("乙县-k0")}
        assert rows[K("甲县-k0")]["data"]["history"] == {"v": 1, "quarter": "2024Q3"} and rows[K("甲县-k0")]["api_events"] == []
        ctx = hs.contexts(store, [("甲县", "东镇", "0村"), ("甲县", "东镇", "1村"), ("乙县", "西镇", "1村")])
        assert ctx[("甲县", "东镇", "0村")] == {"quarter": "2024Q3", "township_disaster_share": 0.1,
                                               "township_ident_rate_4q": 0.02, "village_disaster_share": 0.25}
        assert "village_disaster_share" not in ctx[("甲县", "东镇", "1村")] and ("乙县", "西镇", "1村") not in ctx
        assert hs.households_of(store, [K("p0"), K("p1"), K("px")], "甲县") == {K("p0"): (K("甲县-k0"), "甲县"), K("p1"): (K("甲县-k1"), "甲县")}
        assert hs.households_of(store, [K("p0")], "乙县") == {}
        assert hs.households_of(store, [K("p0"), K("p1"), K("px")], None) == {K("p0"): (K("甲县-k0"), "甲县"), K("p1"): (K("甲县-k1"), "甲县")}
        # the map is keyed by county: a person scored in two counties' runs is in each; a lookup
        # of any county gives the first county by name (乙 < 甲), a county's lookup its own
        hs.write_history(store, "2024Q3", ["乙县"], _households("2024Q3", "乙县", 1),
                         [{"person_key": K("p0"), "household_key": K("乙县-k0"), "county": "乙县"}], [])
        assert hs.households_of(store, [K("p0")], "甲县") == {K("p0"): (K("甲县-k0"), "甲县")}
        assert hs.households_of(store, [K("p0"), K("p1")], None) == {K("p0"): (K("乙县-k0"), "乙县"), K("p1"): (K("甲县-k1"), "甲县")}
        # a newer quarter replaces the county's rows (households gone from the ledger go too)
        hs.write_history(store, "2024Q4", ["甲县"], _households("2024Q4", n=2), persons[:1], [])
        assert set(hs.histories(store, [K("甲县-k0"), K("甲县-k2")])) == {K("甲县-k0")}
        assert hs.households_of(store, [K("p1")], None) == {} and hs.contexts(store, [("甲县", "东镇", "0村")]) == {}
        # an older quarter never replaces a newer one; other counties are untouched
        skipped = hs.write_history(store, "2024Q3", ["甲县"], _households("2024Q3"), persons, _places("2024Q3"))
        assert "skipped" in skipped and hs.stored_quarter(store, ["甲县"]) == "2024Q4"
        assert hs.histories(store, [K("乙县-k0")])[K("乙县-k0")]["quarter"] == "2024Q3"
    finally:
        store.dispose()


def test_events_are_stored_once_and_counted(db_url):  # noqa: F811
    store = Store(db_url, SECRET, migrate=True)
    try:
        hs.write_history(store, "2024Q4", ["甲县"], _households("2024Q4"), [], [])

        def ev(pk, hk, amount):
            d = date(2024, 11, 3)
            return {"event_key": event_key(pk, d, "卫健", "重大疾病", amount), "person_key": pk,
                    "household_key": hk, "county": "甲县", "event_date": d, "department": "卫健",
                    "event_type": "重大疾病", "amount": amount, "key_id": None}

        a, b, c = ev(K("p0"), K("甲县-k0"), 50000.0), ev(K("p0"), K("甲县-k0"), 50000), ev(K("px"), None, None)
        assert a["event_key"] == b["event_key"]  # 50000 and 50000.0 are the same amount
        assert hs.add_events(store, [a, b, c]) == {a["event_key"], c["event_key"]}
        assert hs.add_events(store, [a]) == set()
        assert hs.event_counts(store, "甲县") == {"events": 2, "unmatched": 1}
        got = hs.histories(store, [K("甲县-k0")])[K("甲县-k0")]["api_events"]
        assert got == [{"person_key": K("p0"), "event_date": "2024-11-03", "department": "卫健", "event_type": "重大疾病",
                        "amount": 50000.0}]
    finally:
        store.dispose()


def test_a_warning_is_raised_only_upwards_and_never_reopened(db_url):  # noqa: F811
    store = Store(db_url, SECRET, migrate=True)
    try:
        hs.write_history(store, "2024Q4", ["甲县"], _households("2024Q4"), [], [])

        def rec(level, hid="H0"):
            return WarningRecord.create(
                params=Params(), created_at=datetime(2024, 12, 1, tzinfo=UTC), quarter="2024Q4", county="甲县",
                township="东镇", village="0村", household_id=hid, head_name="户主0", id_masked="5201**********0011",
                level=level, probability=0.2, rule_hits=[], reasons=[], measures=[], model_version="7",
                ruleset_version="r").model_dump(mode="json")

        assert hs.raise_warning(store, K("甲县-k0"), rec("蓝"), None) == "created"
        assert hs.raise_warning(store, K("甲县-k0"), rec("蓝"), None) == "not_higher"  # the stored level counts
        assert hs.raise_warning(store, K("甲县-k0"), rec("红"), "蓝") == "raised"
        w = store.get_warning(rec("红")["id"])
        assert w.level == "红" and hs.histories(store, [K("甲县-k0")])[K("甲县-k0")]["level"] == "红"
        assert hs.raise_warning(store, K("甲县-k1"), rec("黄", "H1"), "红") == "not_higher"
        hs.raise_warning(store, K("甲县-k1"), rec("蓝", "H1"), None)
        store.record_feedback(rec("蓝", "H1")["id"], STATUS_EXCLUDED, actor="王五", reason="已核实")
        assert hs.raise_warning(store, K("甲县-k1"), rec("红", "H1"), "蓝") == "kept_closed"
        assert store.get_warning(rec("蓝", "H1")["id"]).status == STATUS_EXCLUDED
    finally:
        store.dispose()


def _reference_snapshots(frames, t: int, ids: list[str]) -> list[dict]:
    """The canonical JSON record of each household, row by row (an independent reference of
    models.features.snapshot_table + record_of): household fields, members and the events of the
    last four quarters, missing values left out, dates as ISO text."""
    import pandas as pd

    from fangpin import contract
    from models.features import _PERSON_OUT

    def plain(row: pd.Series, fields) -> dict:
        out = {}
        for f in fields:
            v = row[f]
            if v is None or v is pd.NA or (isinstance(v, float) and v != v) or v is pd.NaT:
                continue
            if isinstance(v, pd.Timestamp):
                v = v.strftime("%Y-%m-%d")
            out[f] = v.item() if hasattr(v, "item") else v
        return out

    hh = frames.households[frames.households["quarter_idx"] == t].set_index("household_id", drop=False)
    pp = frames.persons[frames.persons["quarter_idx"] == t]
    ev = frames.events[(frames.events["quarter_idx"] <= t) & (frames.events["quarter_idx"] > t - 4)]
    recs = []
    for h in ids:
        rec = plain(hh.loc[h], [c for c in contract.HOUSEHOLD_FIELDS if c in hh.columns])
        rec["members"] = [plain(r, [c for c in _PERSON_OUT if c in pp.columns])
                          for _, r in pp[pp["household_id"] == h].iterrows()]
        rec["events"] = [plain(r, ["person_key", "event_date", "department", "event_type", "amount"])
                         for _, r in ev[ev["household_id"] == h].iterrows()]
        recs.append(rec)
    return recs


def test_history_blocks_give_each_household_its_own_snapshot_and_history(db_url):  # noqa: F811
    """Households written in blocks (of 64, never across counties) read back, one by one and a
    village at a time, as the JSON form of their own snapshot and history; a row written before
    blocks (JSON ``data``) still reads as it was."""
    import numpy as np
    import pandas as pd
    from canonical_frames import make_frames

    from models.features import feature_table, history_records, history_table, snapshot_table

    frames = make_frames(300, 6, seed=5)
    t = int(frames.households["quarter_idx"].max())
    feats = feature_table(frames, quarters=[t])
    ids = [str(h) for h in feats["household_id"]]
    rows = np.arange(len(ids))
    places = pd.DataFrame({c: np.asarray(feats[c]).astype(str) for c in ("county", "township", "village")})
    places["household_id"] = ids
    places.loc[: len(ids) // 3, "county"] = "乙县"  # two counties: no block holds both
    enc = hs.encode_blocks(places, history_table(feats, rows), snapshot_table(frames, t, ids), "run0", "2024Q3")
    order = enc["order"]
    assert sorted(order.tolist()) == rows.tolist()
    by_block: dict[str, set] = {}
    for i, b in zip(order.tolist(), enc["block_key"], strict=True):
        by_block.setdefault(b, set()).add(places["county"][i])
    assert all(len(c) == 1 for c in by_block.values()) and max(np.bincount(enc["block_row"])) <= len(by_block)
    assert max(enc["block_row"]) == hs.BLOCK_HOUSEHOLDS - 1
    households = [{"household_key": K(f"k{i}"), "household_id": ids[i], "county": places["county"][i],
                   "township": places["township"][i], "village": places["village"][i], "level": None,
                   "head_name": None, "id_masked": None, "data": None, "block_key": b, "block_row": r}
                  for i, b, r in zip(order.tolist(), enc["block_key"], enc["block_row"], strict=True)]
    blocks = pd.DataFrame(enc["blocks"]).to_dict("records")
    schemas = pd.DataFrame(enc["schema"]).to_dict("records")
    store = Store(db_url, SECRET, migrate=True)
    try:
        out = hs.write_history(store, "2024Q3", ["甲县", "乙县"] + sorted(set(places["county"])), households, [], [],
                               blocks, schemas + schemas)  # the same schema from two chunks: stored once
        assert out["households"] == len(ids) and out["blocks"] == len(by_block)
        ref_snap = _reference_snapshots(frames, t, ids)
        ref_hist = history_records(feats, rows)
        one = hs.histories(store, [K("k7")])[K("k7")]["data"]
        assert one == {"history": ref_hist[7], "snapshot": ref_snap[7]}
        got = hs.histories(store, [K(f"k{i}") for i in range(len(ids))])
        assert [got[K(f"k{i}")]["data"]["snapshot"] for i in range(len(ids))] == ref_snap
        assert [got[K(f"k{i}")]["data"]["history"] for i in range(len(ids))] == ref_hist
        assert any(r["events"] for r in ref_snap) and all(r["members"] for r in ref_snap)
        # rows of before the blocks (JSON data) beside them
        hs.write_history(store, "2024Q3", ["丙县"], _households("2024Q3", "丙县", 2), [], [])
        both = hs.histories(store, [K("丙县-k1"), K("k3")])
        assert both[K("丙县-k1")]["data"]["history"] == {"v": 1, "quarter": "2024Q3"}
        assert both[K("k3")]["data"]["snapshot"] == ref_snap[3]
        # blocks are stored as zstd frames; a plain message (a block of before compression) reads too
        import sqlalchemy as sa

        block = next(h["block_key"] for h in households if h["household_key"] == K("k7"))
        with store.engine.begin() as conn:
            payload = conn.scalar(sa.text("SELECT payload FROM history_blocks WHERE block_key = :b"), {"b": block})
            plain = hs._message(payload).to_pybytes()
            assert payload[:4] == hs._ZSTD_MAGIC and len(payload) < len(plain) / 2
            conn.execute(sa.text("UPDATE history_blocks SET payload = :p WHERE block_key = :b"), {"p": plain, "b": block})
        assert hs.histories(store, [K("k7")])[K("k7")]["data"] == {"history": ref_hist[7], "snapshot": ref_snap[7]}
    finally:
        store.dispose()


def test_households_in_blocks_are_found_across_chunks_and_counties(db_url):  # noqa: F811
    """Households are stored in blocks of one county, chunk and bucket of keys: every household
    of several chunks and counties is found (with and without its county), a lookup limited to
    counties sees only theirs, a key stored in two counties is given the first by name, and a
    county written again loses its households of before, its raised levels and its rows of before
    migration 0009 — other counties keep theirs."""
    import sqlalchemy as sa

    def households(county, n, tag=""):
        return [{"household_key": K(f"h{i}{tag}"), "household_id": f"H{i}", "county": county, "township": "东镇",
                 "village": f"{i % 3}村", "level": ("红", "黄", "蓝", None)[i % 4], "head_name": None,
                 "id_masked": None, "data": json.dumps({"history": {"i": i}, "snapshot": {"events": []}})}
                for i in range(n)]

    a, b = households("甲县", 900), households("乙县", 300, "乙") + households("乙县", 1, "")[:1]
    enc = [hs.encode_household_blocks(a[:500] + b[:150], "run10001"), hs.encode_household_blocks(a[500:] + b[150:],
                                                                                                "run10002")]
    for e in enc:  # a block never spans two counties or two buckets
        for r in e.to_pylist():
            got = hs._decode_households(r["payload"]).to_pylist()
            assert len(got) == r["households"] and r["households"] >= 1
            assert {int(h["household_key"][:2], 16) for h in got} == {r["bucket"]}
            assert [h["household_key"] for h in got] == sorted(h["household_key"] for h in got)
    store = Store(db_url, SECRET, migrate=True)
    try:
        with store.engine.begin() as conn:  # a household stored a row each, before migration 0009
            conn.execute(sa.text(
                "INSERT INTO household_history (household_key, household_id, county, township, village, quarter, "
                "level, data, updated_at) VALUES (:k, 'H0', '丙县', '南镇', '一村', '2024Q2', NULL, :d, :t)"),
                {"k": K("old"), "d": json.dumps({"history": {"old": 1}, "snapshot": {}}), "t": datetime.now(UTC)})
        w = hs.HistoryWrite("2024Q3", ["甲县", "乙县"])
        store.write(lambda conn: (w.begin(conn), [w.add(conn, e.to_batches(), [], []) for e in enc], w.finish(conn)))
        assert w.result()["households"] == len(a) + len(b)
        keys = [h["household_key"] for h in a + b]
        got = hs.histories(store, [*keys, K("old"), "not-a-key"])
        assert set(got) == {*keys, K("old")}
        assert got[K("h0")]["county"] == "乙县"  # in both counties: 乙 < 甲
        for h in a[1:] + b:
            r = got[h["household_key"]]
            assert (r["county"], r["household_id"], r["village"], r["level"], r["quarter"], r["data"]) == (
                h["county"], h["household_id"], h["village"], h["level"], "2024Q3", json.loads(h["data"]))
        assert got[K("old")]["data"] == {"history": {"old": 1}, "snapshot": {}} and got[K("old")]["quarter"] == "2024Q2"
        assert set(hs.histories(store, keys, ["甲县"])) == {h["household_key"] for h in a}
        assert hs.histories(store, [K("h0")], ["甲县"])[K("h0")]["county"] == "甲县"
        assert hs.histories(store, [K("old")], ["甲县"]) == {}
        assert hs.stored_quarter(store, ["丙县"]) == "2024Q2" and hs.stored_quarter(store, ["甲县", "丙县"]) == "2024Q3"
        # raised levels: the more urgent of the batch's and the raised one
        store.write(lambda conn: (hs.raise_level(conn, K("h3"), "甲县", "黄"), hs.raise_level(conn, K("h4"), "甲县", "蓝"),
                                  hs.raise_level(conn, K("old"), "丙县", "红")))
        got = hs.histories(store, [K("h3"), K("h4"), K("old")], ["甲县", "丙县"])
        assert [got[k]["level"] for k in (K("h3"), K("h4"), K("old"))] == ["黄", "红", "红"]
        hs.write_history(store, "2024Q4", ["丙县", "乙县"], households("丙县", 2, "丙"), [], [])
        assert K("old") not in hs.histories(store, [K("old")])
        assert set(hs.histories(store, keys)) == {h["household_key"] for h in a}
        with store.engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM household_levels WHERE county = '丙县'")) == 0
            assert conn.scalar(sa.text("SELECT count(*) FROM household_levels WHERE county = '甲县'")) == 2
    finally:
        store.dispose()


def test_concurrent_raises_of_one_household_decide_one_after_the_other(db_url):  # noqa: F811
    """Events of one household raised at the same time (threads, each its own transaction): one
    warning is created, each later level is compared with the one stored before it, and the
    household ends at the most urgent level — no error, no second warning."""
    from concurrent.futures import ThreadPoolExecutor

    store = Store(db_url, SECRET, migrate=True)
    try:
        hs.write_history(store, "2024Q4", ["甲县"], _households("2024Q4"), [], [])

        def rec(level):
            return WarningRecord.create(
                params=Params(), created_at=datetime(2024, 12, 1, tzinfo=UTC), quarter="2024Q4", county="甲县",
                township="东镇", village="0村", household_id="H2", head_name="户主2", id_masked="5201**********0011",
                level=level, probability=0.2, rule_hits=[], reasons=[], measures=[], model_version="7",
                ruleset_version="r").model_dump(mode="json")

        levels = ["蓝", "黄", "红", "黄", "蓝", "红", "蓝", "黄"] * 2
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda lv: hs.raise_warning(store, K("甲县-k2"), rec(lv), None), levels))
        assert got.count("created") == 1 and set(got) <= {"created", "raised", "not_higher"}
        assert got.count("raised") <= 2  # 蓝 → 黄 → 红 at most
        assert hs.histories(store, [K("甲县-k2")])[K("甲县-k2")]["level"] == "红"
        assert store.get_warning(rec("红")["id"]).level == "红"
    finally:
        store.dispose()
