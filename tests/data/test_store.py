"""Warning store on SQLite and PostgreSQL: migrations, idempotent and atomic quarter writes
(including a writer killed with SIGKILL half way), queries, feedback transitions, keys, audit.

PostgreSQL tests need the server on 127.0.0.1:5432 (trust auth); each test creates a throwaway
database ``fangpin_test_<random>`` and drops it afterwards. ``FANGPIN_TEST_PG_URL`` overrides the
maintenance URL.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from seed_warnings import record_tables

from fangpin.config import Params
from fangpin.ids import check_char
from fangpin.store import Scope, Store, WarningNotFound, store_url, upgrade
from fangpin.warnings import STATUS_EXCLUDED, STATUS_INCLUDED, STATUS_OPEN, VerificationError, WarningRecord

FAKE_ID = "11010119900307000" + check_char("11010119900307000")  # a generated 18-character ID

SECRET = b"store-test-secret"
PARAMS = Params()  # defaults: 15 calendar days


@pytest.fixture
def store(db_url):
    s = Store(db_url, SECRET, migrate=True)
    yield s
    s.dispose()


def _masked(i: int) -> str:
    return f"{4100 + i % 50}" + "*" * 10 + f"{i % 1000:03d}X"


def make_warnings(n: int, *, quarter="2025Q3", model="7", county="甲县", start=0, prob_shift=0.0):
    created = datetime(2025, 10, 10, 2, 0, tzinfo=UTC)
    out = []
    for i in range(start, start + n):
        lvl = "红黄蓝"[i % 3]
        out.append(
            WarningRecord.create(
                quarter=quarter, county=county, township=f"{'东西'[i % 2]}镇", village=f"{i % 4}村",
                household_id=f"{county}-H{i:05d}", head_name=f"户主{i}", id_masked=_masked(i), level=lvl,
                probability=round(min(0.99, 0.05 + (i % 10) / 20 + prob_shift), 4),
                rule_hits=[{"rule_id": "R_INCOME_MARGIN", "level": "黄", "text": f"人均纯收入{6000 + i}元",
                            "threshold": "监测线以上20%以内"}] if i % 2 else [],
                reasons=[{"factor": "medical", "text": f"合规自付医疗支出{1000 + i}元", "direction": "up",
                          "logodds": 0.8, "prob_pp": 6.5}],
                measures=[{"type": "健康帮扶", "text": "落实大病救助"}],
                model_version=model, ruleset_version="rules-2026.1", created_at=created, params=PARAMS,
            )
        )
    return out


def snapshot(s: Store) -> list[tuple]:
    with s.engine.connect() as c:
        w = c.execute(sa.text(
            "SELECT id, household_id, probability, level, status, status_reason, run_id, created_at "
            "FROM warnings ORDER BY id")).all()
        f = c.execute(sa.text("SELECT warning_id, to_status FROM warning_feedback ORDER BY id")).all()
        r = c.execute(sa.text("SELECT run_id FROM model_runs ORDER BY run_id")).all()
    return [tuple(x) for x in w] + [tuple(x) for x in f] + [tuple(x) for x in r]


# ------------------------------------------------------------------------------------ migrations


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    from fangpin.store.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_migrations_match_models_and_are_repeatable(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from fangpin.store.migrate import current
    from fangpin.store.schema import Base

    upgrade(db_url)
    upgrade(db_url)  # second start-up: nothing to do, no error
    eng = sa.create_engine(db_url)
    try:
        assert current(eng) == _head_revision()
        with eng.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    Base.metadata)
        assert diff == []
        assert {"warnings", "warning_feedback", "api_keys", "audit_log", "model_runs", "web_sessions",
                "level_thresholds", "tasks"} <= set(
            sa.inspect(eng).get_table_names())
    finally:
        eng.dispose()


def test_person_map_migration_keeps_its_rows_both_ways(db_url):
    """0007 rebuilds the person map keyed by (county, person_key); its rows survive the upgrade
    and the downgrade."""
    from alembic import command

    from fangpin.store.migrate import alembic_config

    command.upgrade(alembic_config(db_url), "0006")
    eng = sa.create_engine(db_url)
    rows = {("p0", "k0", "甲县"), ("p1", "k1", "乙县")}
    try:
        with eng.begin() as conn:
            conn.execute(sa.text("INSERT INTO household_persons (person_key, household_key, county) "
                                 "VALUES ('p0', 'k0', '甲县'), ('p1', 'k1', '乙县')"))

        def got():
            with eng.connect() as conn:
                return set(conn.execute(sa.text("SELECT person_key, household_key, county FROM household_persons")))

        command.upgrade(alembic_config(db_url), "0007")
        assert got() == rows
        pk = sa.inspect(eng).get_pk_constraint("household_persons")
        assert pk["constrained_columns"] == ["county", "person_key"]
        command.downgrade(alembic_config(db_url), "0006")
        assert got() == rows and sa.inspect(eng).get_pk_constraint("household_persons")["constrained_columns"] == [
            "person_key"]
        command.upgrade(alembic_config(db_url), "0007")
        assert got() == rows
    finally:
        eng.dispose()


def test_person_blocks_migration_keeps_the_map_both_ways(db_url):
    """0008 carries the person map's rows into blocks (and back): every person still finds its
    household, in its county, after the upgrade, the downgrade and the upgrade again."""
    import hashlib

    from alembic import command

    from fangpin.store import history as hs
    from fangpin.store.migrate import alembic_config

    def k(name):
        return hashlib.md5(name.encode()).hexdigest()

    rows = {(k(f"p{i}"), k(f"h{i // 3}"), "甲县" if i % 2 else "乙县") for i in range(40)}
    command.upgrade(alembic_config(db_url), "0007")
    eng = sa.create_engine(db_url)
    try:
        with eng.begin() as conn:
            conn.execute(sa.text("INSERT INTO household_persons (person_key, household_key, county) "
                                 "VALUES (:p, :h, :c)"), [{"p": p, "h": h, "c": c} for p, h, c in rows])

        def old_rows():
            with eng.connect() as conn:
                return set(conn.execute(sa.text("SELECT person_key, household_key, county FROM household_persons")))

        def mapped():
            store = Store(db_url, SECRET, migrate=False)
            try:
                return {(p, h, c) for p, (h, c) in hs.households_of(store, [p for p, _, _ in rows], None).items()}
            finally:
                store.dispose()

        upgrade(db_url)
        assert "household_persons" not in sa.inspect(eng).get_table_names()
        assert mapped() == rows
        with eng.connect() as conn:  # the migration's own encoder writes what the application's does
            stored = [tuple(r) for r in conn.execute(sa.text(
                "SELECT county, bucket, part, payload FROM person_blocks ORDER BY county, bucket"))]
        enc = hs.encode_person_blocks([{"person_key": p, "household_key": h, "county": c} for p, h, c in rows], "0")
        assert stored == sorted(zip(*(enc.column(c).to_pylist() for c in ("county", "bucket", "part", "payload")),
                                    strict=True))
        command.downgrade(alembic_config(db_url), "0007")
        assert old_rows() == rows and "person_blocks" not in sa.inspect(eng).get_table_names()
        upgrade(db_url)
        assert mapped() == rows
    finally:
        eng.dispose()


# ----------------------------------------------------------------------------- quarter writes


def test_rerun_is_idempotent_and_keeps_feedback(store):
    ws = make_warnings(25)
    r1 = store.write_quarter_tables(record_tables(ws, batch_size=7), "2025Q3", "7", batch_size=7)
    assert (r1.n_warnings, r1.inserted, r1.updated, r1.removed) == (25, 25, 0, 0)
    closed = ws[4]
    store.record_feedback(closed.id, STATUS_EXCLUDED, actor="李四", reason="入户核实收入稳定")
    before = {w.id: w for w in store.iter_warnings(quarter="2025Q3")}

    later = [w.model_copy(update={"created_at": datetime(2025, 11, 1, tzinfo=UTC)}) for w in make_warnings(25)]
    r2 = store.write_quarter_tables(record_tables(later, batch_size=10), "2025Q3", "7", batch_size=10)
    assert (r2.n_warnings, r2.inserted, r2.updated, r2.removed) == (25, 0, 25, 0)
    after = {w.id: w for w in store.iter_warnings(quarter="2025Q3")}
    assert after.keys() == before.keys() and len(after) == 25
    assert after == before  # nothing duplicated, lost or changed; first creation time kept
    assert after[closed.id].status == STATUS_EXCLUDED
    assert [f.to_status for f in store.feedback_history(closed.id)] == [STATUS_EXCLUDED]
    assert len(store.runs("2025Q3")) == 2


def test_stored_warnings_read_back_equal_to_the_records_written(store):
    import pyarrow as pa

    ws = make_warnings(12)
    ws[3] = ws[3].model_copy(update={"head_name": None, "id_masked": None, "deferred": True, "reasons": ()})
    store.write_quarter_tables(record_tables(ws, batch_size=5), "2025Q3", "7", batch_size=5)
    assert {w.id: w for w in store.iter_warnings(quarter="2025Q3")} == {w.id: w for w in ws}
    # a naive created_at text (validate_table allows it) is UTC, as WarningRecord reads it
    t = next(record_tables(make_warnings(2, county="乙县")))
    t = t.set_column(t.schema.get_field_index("created_at"), "created_at", pa.array(["2025-10-10T02:00:00"] * 2))
    store.write_quarter_tables([t], "2025Q3", "7")
    assert {w.created_at for w in store.iter_warnings(county="乙县")} == {datetime(2025, 10, 10, 2, 0, tzinfo=UTC)}


def test_rerun_updates_content_prunes_stale_open_keeps_closed_and_other_scopes(store):
    store.write_quarter_tables(record_tables(make_warnings(10)), "2025Q3", "7")
    store.write_quarter_tables(record_tables(make_warnings(3, county="乙县")), "2025Q3", "7")
    store.write_quarter_tables(record_tables(make_warnings(4, model="8")), "2025Q3", "8")
    gone_closed, gone_open = make_warnings(10)[9], make_warnings(10)[8]
    store.record_feedback(gone_closed.id, STATUS_INCLUDED, actor="王五")

    r = store.write_quarter_tables(record_tables(make_warnings(8, prob_shift=0.01)), "2025Q3", "7")
    assert (r.inserted, r.updated, r.removed) == (0, 8, 1)
    assert store.get_warning(gone_open.id) is None
    assert store.get_warning(gone_closed.id).status == STATUS_INCLUDED
    assert store.query_warnings(county="甲县", model_version="7").total == 9
    assert store.query_warnings(county="乙县").total == 3  # another county's warnings untouched
    assert store.query_warnings(model_version="8").total == 4  # another model version untouched
    w0 = store.get_warning(make_warnings(1)[0].id)
    assert w0.probability == pytest.approx(make_warnings(1)[0].probability + 0.01)


def test_failure_mid_run_rolls_back(store):
    store.write_quarter_tables(record_tables(make_warnings(10)), "2025Q3", "7")
    before = snapshot(store)

    def bad():
        yield from make_warnings(12, prob_shift=0.02)
        yield make_warnings(1, quarter="2025Q4", start=99)[0]

    with pytest.raises(ValueError, match="2025Q4"):
        store.write_quarter_tables(record_tables(bad(), batch_size=5), "2025Q3", "7", batch_size=5)
    assert snapshot(store) == before
    with pytest.raises(ValueError, match="twice"):
        store.write_quarter_tables(record_tables(make_warnings(3) + make_warnings(1)), "2025Q3", "7")
    assert snapshot(store) == before


KILL_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    sys.path.insert(0, {root!r})
    from test_store import make_warnings
    from seed_warnings import record_tables
    from fangpin.store import Store

    store = Store({url!r}, {secret!r})
    marker = Path({marker!r})

    def slow():
        for i, w in enumerate(make_warnings(400, prob_shift=0.03)):
            if i == 250:  # two batches of 100 already written inside the open transaction
                marker.write_text("mid-write")
                time.sleep(120)
            yield w

    store.write_quarter_tables(record_tables(slow(), batch_size=100), "2025Q3", "7", batch_size=100)
    """
)


def test_killed_writer_leaves_store_unchanged(store, db_url, tmp_path):
    store.write_quarter_tables(record_tables(make_warnings(150)), "2025Q3", "7")
    store.record_feedback(make_warnings(150)[3].id, STATUS_INCLUDED, actor="赵六")
    before = snapshot(store)

    marker = tmp_path / "marker"
    code = KILL_CHILD.format(tests=str(Path(__file__).parent), root=str(Path(__file__).parents[1]), url=db_url, secret=SECRET, marker=str(marker))
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "child never reached the middle of the write"
            time.sleep(0.05)
        # the child really is inside an open transaction with rows written
        if db_url.startswith("postgresql"):
            with store.engine.connect() as c:
                states = c.execute(sa.text(
                    "SELECT state FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()")).scalars().all()
            assert "idle in transaction" in states
        else:  # the child holds SQLite's write lock: an immediate write transaction is refused
            probe = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=0)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    probe.execute("BEGIN IMMEDIATE")
            finally:
                probe.close()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    fresh = Store(db_url, SECRET)
    try:
        assert snapshot(fresh) == before
        # and the store is usable: the same run completes afterwards
        r = fresh.write_quarter_tables(record_tables(make_warnings(400, prob_shift=0.03)), "2025Q3", "7")
        assert (r.inserted, r.updated) == (250, 150)
        assert fresh.get_warning(make_warnings(150)[3].id).status == STATUS_INCLUDED
    finally:
        fresh.dispose()


# ----------------------------------------------------------------------------------- queries


def test_query_filters_order_and_paging(store):
    ws = make_warnings(30)
    store.write_quarter_tables(record_tables(ws), "2025Q3", "7")
    store.write_quarter_tables(record_tables(make_warnings(5, quarter="2025Q2")), "2025Q2", "7")
    page = store.query_warnings(quarter="2025Q3", limit=100)
    assert page.total == 30
    keys = [(w.deadline, -w.probability) for w in page.items]  # deadline first (it follows the level), then risk
    assert keys == sorted(keys)
    assert [w.level for w in page.items][:10] == ["红"] * 10

    paged = []
    for off in range(0, 30, 7):
        paged += store.query_warnings(quarter="2025Q3", limit=7, offset=off).items
    assert [w.id for w in paged] == [w.id for w in page.items]

    red_open = store.query_warnings(quarter="2025Q3", level="红", status=STATUS_OPEN, township="东镇")
    assert red_open.total == sum(1 for w in ws if w.level == "红" and w.township == "东镇")
    assert store.query_warnings(village="1村", quarter="2025Q3").total == sum(w.village == "1村" for w in ws)
    assert store.query_warnings(level=["红", "黄"], quarter="2025Q3").total == 20
    assert store.query_warnings(scope=Scope.parse("甲县/西镇")).total == sum(
        w.township == "西镇" for w in ws) + sum(w.township == "西镇" for w in make_warnings(5))
    assert store.query_warnings(scope=Scope.parse("乙县")).total == 0
    with pytest.raises(ValueError, match="level"):
        store.query_warnings(level="紫")
    got = store.get_warning(ws[7].id)
    assert got == ws[7]
    assert got.rule_hits[0].text == ws[7].rule_hits[0].text  # Chinese JSON round-trips


# ---------------------------------------------------------------------------------- feedback


def test_feedback_transitions_are_validated(store):
    ws = make_warnings(3)
    store.write_quarter_tables(record_tables(ws), "2025Q3", "7")
    a, b = ws[0].id, ws[1].id
    with pytest.raises(VerificationError, match="原因"):
        store.record_feedback(a, STATUS_EXCLUDED, actor="张三")
    with pytest.raises(VerificationError, match="重复"):
        store.record_feedback(a, STATUS_OPEN, actor="张三")
    visited = datetime(2025, 10, 12, 9, 30, tzinfo=UTC)
    w = store.record_feedback(a, STATUS_EXCLUDED, actor="张三", reason="家庭已有稳定务工收入",
                              visited_at=visited, key_id="k1")
    assert (w.status, w.status_reason) == (STATUS_EXCLUDED, "家庭已有稳定务工收入")
    with pytest.raises(VerificationError, match="结案"):
        store.record_feedback(a, STATUS_INCLUDED, actor="张三")
    with pytest.raises(VerificationError):
        store.record_feedback(a, STATUS_EXCLUDED, actor="张三", reason="再次")
    with pytest.raises(VerificationError, match="未知状态"):
        store.record_feedback(b, "已走访", actor="张三")
    with pytest.raises(VerificationError, match="证件号码"):
        store.record_feedback(b, STATUS_EXCLUDED, actor="张三", reason=f"身份证 {FAKE_ID}")
    with pytest.raises(WarningNotFound):
        store.record_feedback("Wnope", STATUS_INCLUDED, actor="张三")
    hist = store.feedback_history(a)
    assert len(hist) == 1
    assert (hist[0].from_status, hist[0].to_status, hist[0].actor, hist[0].visited_at, hist[0].key_id) == (
        STATUS_OPEN, STATUS_EXCLUDED, "张三", visited, "k1")
    assert store.feedback_history(b) == []


def test_racing_closings_one_wins_the_others_get_verification_errors(store):
    """Threads racing to close one warning: the write lock is taken before the status is read
    (BEGIN IMMEDIATE / SELECT … FOR UPDATE), so exactly one succeeds and every other one gets a
    VerificationError (HTTP 409), never a database error."""
    from concurrent.futures import ThreadPoolExecutor

    ws = make_warnings(4)
    store.write_quarter_tables(record_tables(ws), "2025Q3", "7")
    outcomes = []

    def close(wid):
        try:
            store.record_feedback(wid, STATUS_INCLUDED, actor="张三",
                                  audit={"key_id": "k1", "endpoint": "POST x", "household_ids": ["h"]})
            return "ok"
        except VerificationError:
            return "409"

    with ThreadPoolExecutor(8) as pool:
        for w in ws:
            outcomes.append(sorted(pool.map(close, [w.id] * 6)))
    assert outcomes == [["409"] * 5 + ["ok"]] * 4
    assert [len(store.feedback_history(w.id)) for w in ws] == [1] * 4
    # the audit row of each change was written in its transaction, and only for the winners
    assert [r["outcome"] for r in store.audit_rows()] == [f"status:{STATUS_INCLUDED}"] * 4


def test_a_held_write_lock_makes_writes_fail_fast_with_store_busy(db_url, tmp_path):
    """Another connection holds the write lock: a write waits ``wait_s``, then StoreBusy (→ 503),
    leaving nothing half-applied; reads go on; queued audit rows are written after the lock."""
    from fangpin.store.tx import StoreBusy

    s = Store(db_url, SECRET, migrate=True, wait_s=0.5)
    ws = make_warnings(2)
    s.write_quarter_tables(record_tables(ws), "2025Q3", "7")
    other = sa.create_engine(db_url)
    conn = other.connect()
    if db_url.startswith("sqlite"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.begin()
        conn.exec_driver_sql("LOCK TABLE warnings IN EXCLUSIVE MODE")
    try:
        t = time.monotonic()
        with pytest.raises(StoreBusy) as exc:
            s.record_feedback(ws[0].id, STATUS_INCLUDED, actor="张三")
        assert time.monotonic() - t < 5 and exc.value.retry_after >= 1
        assert "张三" not in str(exc.value)
        assert s.get_warning(ws[0].id).status == STATUS_OPEN  # reads go on
        s.audit_enqueue(key_id="k1", endpoint="GET x", outcome="read")
        assert s.flush_audit(timeout=1.0) is (not db_url.startswith("sqlite"))  # SQLite: the audit table waits too
    finally:
        conn.rollback()
        conn.close()
        other.dispose()
    assert s.flush_audit(timeout=10)
    assert [r["outcome"] for r in s.audit_rows()] == ["read"]
    assert s.record_feedback(ws[0].id, STATUS_INCLUDED, actor="张三").status == STATUS_INCLUDED
    s.dispose()


def test_web_sessions_end_on_logout_expiry_and_revocation(store):
    info, _ = store.add_key("township_cadre", "甲县/东镇")
    token = store.open_session(info.id, 3600)
    assert store.session_key(token).id == info.id
    assert store.session_key(token + "x") is None and store.session_key(None) is None
    store.end_session(token)
    assert store.session_key(token) is None
    short = store.open_session(info.id, -1)  # already expired
    assert store.session_key(short) is None
    live = store.open_session(info.id, 3600)
    store.revoke_key(info.id)
    assert store.session_key(live) is None
    with store.engine.connect() as c:  # only the keyed hash of a token is stored
        stored = [r[0] for r in c.exec_driver_sql("SELECT id FROM web_sessions")]
    assert token not in stored and len(stored) == 3


# -------------------------------------------------------------------------------------- keys


def test_api_keys_hashed_scoped_and_revocable(store):
    info, key = store.add_key("township_cadre", "甲县/东镇", label="东镇干部")
    county, ckey = store.add_key("county_system", "甲县")
    admin, akey = store.add_key("admin", "*")
    assert key.startswith("fpk_") and key.split("_")[1] == info.id
    got = store.verify_key(key)
    assert got is not None and got.role == "township_cadre" and str(got.scope) == "甲县/东镇"
    assert got.scope.covers("甲县", "东镇") and not got.scope.covers("甲县", "西镇")
    assert store.verify_key(ckey).scope.covers("甲县", "西镇") and not store.verify_key(ckey).scope.covers("乙县")
    assert store.verify_key(akey).scope.kind == "all"
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), "", None, "fpk_" + info.id, "garbage",
                  f"fpk_{county.id}_{key.split('_', 2)[2]}"):
        assert store.verify_key(wrong) is None
    with store.engine.connect() as c:
        stored = c.execute(sa.text("SELECT key_hash FROM api_keys")).scalars().all()
    assert all(len(h) == 64 and key not in h and key.split("_", 2)[2] not in h for h in stored)
    assert {k.id for k in store.list_keys()} == {info.id, county.id, admin.id}

    assert store.revoke_key(info.id).revoked
    assert store.verify_key(key) is None
    assert {k.id for k in store.list_keys(include_revoked=False)} == {county.id, admin.id}
    with pytest.raises(KeyError):
        store.revoke_key("nope")
    with pytest.raises(ValueError, match="scope"):
        store.add_key("township_cadre", "甲县")
    with pytest.raises(ValueError, match="role"):
        store.add_key("superuser", "*")
    other = Store(store.engine, b"another-secret")
    assert other.verify_key(ckey) is None  # the server secret is part of the hash


# ------------------------------------------------------------------------------------- audit


def test_audit_rows_hash_households_and_export(store, tmp_path):
    t0 = datetime(2025, 10, 1, tzinfo=UTC)
    store.audit_append(key_id="k1", endpoint="POST /v1/score", household_ids=["甲县-H00001", "甲县-H00002"],
                       model_version="7", levels=["红", "蓝"], outcome="200", at=t0)
    store.audit_append(key_id="k2", endpoint="GET /v1/warnings/W1", household_ids=["甲县-H00002"],
                       model_version="7", levels=["蓝"], outcome="403", at=t0 + timedelta(hours=1))
    with pytest.raises(ValueError, match="ID number"):
        store.audit_append(key_id="k1", endpoint=f"/v1/score?id={FAKE_ID}", outcome="200")
    with pytest.raises(ValueError, match="levels"):
        store.audit_append(key_id="k1", endpoint="/v1/score", levels=["患有大病"], outcome="200")

    rows = store.audit_rows()
    assert [r["outcome"] for r in rows] == ["200", "403"]
    assert rows[0]["n_households"] == 2 and rows[0]["levels"] == ["红", "蓝"]
    assert [r["key_id"] for r in store.audit_rows(household_id="甲县-H00002")] == ["k1", "k2"]
    assert [r["key_id"] for r in store.audit_rows(household_id="甲县-H00001")] == ["k1"]
    assert [r["key_id"] for r in store.audit_rows(since=t0 + timedelta(minutes=1))] == ["k2"]
    with store.engine.connect() as c:
        raw = json.dumps([list(map(str, r)) for r in c.execute(sa.text("SELECT * FROM audit_log"))],
                         ensure_ascii=False)
    assert "H00001" not in raw and "H00002" not in raw

    assert store.audit_export(tmp_path / "audit.csv") == 2
    text = (tmp_path / "audit.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("id,at,key_id,endpoint") and "H0000" not in text
    assert store.audit_export(tmp_path / "audit.jsonl", key_id="k2") == 1
    line = json.loads((tmp_path / "audit.jsonl").read_text(encoding="utf-8"))
    assert line["endpoint"] == "GET /v1/warnings/W1" and line["levels"] == ["蓝"]


# --------------------------------------------------------------------------------- store URL


def test_store_url_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("FANGPIN_STORE_URL", raising=False)
    p = Params.model_validate({"paths": {"state_dir": str(tmp_path / "st")}})
    assert store_url(p) == f"sqlite:///{(tmp_path / 'st').resolve() / 'warnings.db'}"
    p2 = Params.model_validate({"warnings": {"store_url": "postgresql+psycopg://u@h/db"}})
    assert store_url(p2) == "postgresql+psycopg://u@h/db"
    monkeypatch.setenv("FANGPIN_STORE_URL", "sqlite:///x.db")
    assert store_url(p2) == "sqlite:///x.db"


def test_store_from_params_creates_secret_and_schema(monkeypatch, tmp_path):
    monkeypatch.delenv("FANGPIN_STORE_URL", raising=False)
    monkeypatch.delenv("FANGPIN_KEY_SECRET", raising=False)
    p = Params.model_validate({"paths": {"state_dir": str(tmp_path / "st")}})
    s = Store.from_params(p)
    try:
        s.write_quarter_tables(record_tables(make_warnings(2)), "2025Q3", "7")
        assert s.query_warnings().total == 2
        assert (tmp_path / "st" / "key_secret").stat().st_mode & 0o777 == 0o600
        assert date(2025, 10, 25) == s.get_warning(make_warnings(1)[0].id).deadline
    finally:
        s.dispose()


# ------------------------------------------------------------------ level cut-offs and tasks


def _tasks(quarter: str, n: int, county: str = "甲县"):
    from fangpin.tasks import task_table

    rows = [{"quarter": quarter, "county": county, "township": f"{'东西'[i % 2]}镇", "village": f"{i % 4}村",
             "household_id": f"{county}-H{i:05d}", "head_name": f"户主{i}", "id_masked": _masked(i),
             "ruleset_version": "rules-2026.1",
             "hits": [{"rule_id": "R04_UNSAFE_HOUSING", "text": "住房为危房（是否危房户：是）"},
                      {"rule_id": "R01_INCOME_BELOW_LINE", "text": "人均纯收入5,000元"}]}  # R01: no route
            for i in range(n)]
    return task_table(rows, PARAMS, datetime(2025, 10, 10, 2, 0, tzinfo=UTC))


def _cuts(quarter: str, townships=("东镇", "西镇")):
    import math

    return [{"county": "甲县", "township": t, "quarter": quarter, "t_red": -1.5 - i, "t_yellow": -2.0,
             "t_blue": math.inf if i else -3.0, "t_capacity": -math.inf if i else -1.2, "n_in_scope": 2000,
             "n_red_wanted": 27 - 5 * i, "n_red": 25 - 3 * i, "n_yellow": 40, "n_blue": 60,
             "shortfall": 2 - 2 * i, "capacity": 25} for i, t in enumerate(townships)]


def test_tasks_and_cut_offs_commit_with_the_warnings_and_reruns_keep_task_status(store):
    import math

    from fangpin.tasks import TaskError

    ws = make_warnings(6)
    store.write_quarter_tables(record_tables(ws), "2025Q3", "7", tasks=lambda: [_tasks("2025Q3", 5)], thresholds=lambda: _cuts("2025Q3"))
    page = store.query_tasks(quarter="2025Q3", limit=50)
    assert page.total == 5 and {t.department for t in page.items} == {"住建"}  # R01 has no route: no task
    t0 = page.items[0]
    assert t0.deadline == date(2026, 1, 8) and t0.status == "待办理"  # 90 days from 2025-10-10 (Beijing)
    store.set_task_status(t0.id, "办理中")
    with pytest.raises(TaskError):
        store.set_task_status(t0.id, "待办理")
    # re-run: one household's gap is gone → its open task removed; the one being handled is kept
    store.write_quarter_tables(record_tables(ws), "2025Q3", "7", tasks=lambda: [_tasks("2025Q3", 3)], thresholds=lambda: _cuts("2025Q3", ("东镇",)))
    after = {t.id: t for t in store.query_tasks(quarter="2025Q3", limit=50).items}
    assert t0.id in after and after[t0.id].status == "办理中" and after[t0.id].deadline == t0.deadline
    assert len(after) == 3 + (t0.household_id not in {f"甲县-H{i:05d}" for i in range(3)})
    assert store.query_tasks(scope=Scope.parse("甲县/东镇"), limit=50).total == sum(
        x.township == "东镇" for x in after.values())
    # cut-offs: replaced by the re-run for its quarter / version / counties, ±inf kept
    cuts = store.level_thresholds("7")
    assert set(cuts) == {("2025Q3", "甲县", "东镇")}
    assert cuts[("2025Q3", "甲县", "东镇")] == [-1.5, -2.0, -3.0, -1.2]
    store.write_quarter_tables(record_tables(ws), "2025Q3", "7", thresholds=lambda: _cuts("2025Q3"))
    assert store.level_thresholds("7")[("2025Q3", "甲县", "西镇")] == [-2.5, -2.0, math.inf, -math.inf]
    assert store.level_thresholds("8") == {}
    load = {g["township"]: g for g in store.workload("2025Q3", "7")}
    assert load["东镇"]["shortfall"] == 2 and load["东镇"]["n_red"] == 25 and load["西镇"]["capacity"] == 25


def test_a_failing_task_write_rolls_back_the_warnings(store):
    ws = make_warnings(4)

    def broken():
        t = _tasks("2025Q4", 2)  # another quarter than the run's
        return [t]

    with pytest.raises(ValueError, match="2025Q4"):
        store.write_quarter_tables(record_tables(ws), "2025Q3", "7", tasks=broken)
    assert store.query_warnings(quarter="2025Q3", limit=1).total == 0
    assert store.query_tasks(limit=1).total == 0


def test_tasks_in_the_stream_are_written_where_they_come_and_checked_across_tables(store):
    from fangpin.store.levels_tasks import Tasks

    ws = make_warnings(6)
    t = _tasks("2025Q3", 6)
    first, second = t.slice(0, 4), t.slice(4)
    store.write_quarter_tables([*record_tables(ws), Tasks(first), Tasks(second)], "2025Q3", "7")
    page = store.query_tasks(quarter="2025Q3", limit=50)
    assert page.total == 6 and {x.id for x in page.items} == set(t.column("id").to_pylist())
    stored = store.get_task(t.column("id")[0].as_py())
    assert stored.created_at == datetime(2025, 10, 10, 2, 0, tzinfo=UTC) and stored.deadline == date(2026, 1, 8)
    # a re-run whose stream holds fewer tasks removes the open ones it no longer produces
    store.write_quarter_tables([*record_tables(ws), Tasks(t.slice(0, 2))], "2025Q3", "7")
    assert store.query_tasks(quarter="2025Q3", limit=50).total == 2
    # the same task in two chunks of one run: refused, and nothing of the run is kept
    with pytest.raises(ValueError, match="appears twice"):
        store.write_quarter_tables([*record_tables(make_warnings(6, prob_shift=0.01)), Tasks(first),
                                    Tasks(t.slice(3))], "2025Q3", "7")
    assert store.query_tasks(quarter="2025Q3", limit=50).total == 2
    assert {w.probability for w in store.query_warnings(quarter="2025Q3", limit=50).items} == {
        w.probability for w in ws}


def test_a_batch_commit_leaves_the_checkpoint_to_the_caller_and_the_pool_gets_it_back(tmp_path):
    """SQLite file store: the quarter's pages stay in the WAL at the commit (fangpin score runs
    Store.checkpoint beside its read-back), and every pooled connection has SQLite's automatic
    checkpoint again."""
    from fangpin.store.repo import SQLITE_AUTOCHECKPOINT

    db = tmp_path / "w.db"
    s = Store(f"sqlite:///{db}", SECRET, migrate=True)
    try:
        s.checkpoint()
        before = db.stat().st_size
        s.write_quarter_tables(record_tables(make_warnings(8000)), "2025Q3", "7")
        wal = Path(f"{db}-wal")
        with s.engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA page_size").scalar()
        assert wal.stat().st_size > SQLITE_AUTOCHECKPOINT * pages  # an automatic checkpoint would have run
        assert db.stat().st_size == before
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == SQLITE_AUTOCHECKPOINT
        s.checkpoint()
        assert db.stat().st_size > before + SQLITE_AUTOCHECKPOINT * pages // 2
        assert s.query_warnings(quarter="2025Q3", limit=1).total == 8000
    finally:
        s.dispose()


def test_household_blocks_migration_reads_old_rows_and_carries_blocks_back(db_url):
    """0009 leaves the households stored a row each where they are (still read, level raises
    included); its downgrade carries the households of blocks back to rows, and every household
    keeps its raised level: they read the same after the upgrade again."""
    import hashlib
    import json
    from datetime import UTC, datetime

    from alembic import command

    from fangpin.store import history as hs
    from fangpin.store.migrate import alembic_config

    def k(name):
        return hashlib.md5(name.encode()).hexdigest()

    def data(i):
        return {"history": {"v": i}, "snapshot": {"household_id": f"H{i}", "events": []}}

    command.upgrade(alembic_config(db_url), "0008")
    eng = sa.create_engine(db_url)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    old = [{"household_key": k(f"甲{i}"), "household_id": f"H{i}", "county": "甲县", "township": "东镇",
            "village": "一村", "quarter": "2024Q3", "level": "蓝" if i == 0 else None, "head_name": f"户主{i}",
            "id_masked": None, "data": json.dumps(data(i)), "block_key": None, "block_row": None, "updated_at": now}
           for i in range(3)]
    new = [{"household_key": k(f"乙{i}"), "household_id": f"H{i}", "county": "乙县", "township": "西镇",
            "village": "二村", "level": "黄" if i == 1 else None, "head_name": None, "id_masked": None,
            "data": json.dumps(data(10 + i))} for i in range(40)]
    keys = [h["household_key"] for h in old + new]

    def read():
        store = Store(db_url, SECRET, migrate=False)
        try:
            got = hs.histories(store, keys)
            return {key: (r["county"], r["household_id"], r["quarter"], r["level"], r["data"]) for key, r in got.items()}
        finally:
            store.dispose()

    try:
        with eng.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO household_history (household_key, household_id, county, township, village, quarter, "
                "level, head_name, id_masked, data, block_key, block_row, updated_at) VALUES (:household_key, "
                ":household_id, :county, :township, :village, :quarter, :level, :head_name, :id_masked, :data, "
                ":block_key, :block_row, :updated_at)"), old)
        upgrade(db_url)
        store = Store(db_url, SECRET, migrate=False)
        try:
            hs.write_history(store, "2024Q4", ["乙县"], new, [], [])
            # raised after the batch: an old row's household and a block's
            store.write(lambda conn: (hs.raise_level(conn, k("甲1"), "甲县", "黄"),
                                      hs.raise_level(conn, k("乙1"), "乙县", "红"),
                                      hs.raise_level(conn, k("乙2"), "乙县", "蓝")))
        finally:
            store.dispose()
        want = {h["household_key"]: (h["county"], h["household_id"], "2024Q3", h["level"], data(i))
                for i, h in enumerate(old)}
        want |= {h["household_key"]: ("乙县", h["household_id"], "2024Q4", h["level"], data(10 + i))
                 for i, h in enumerate(new)}
        want[k("甲1")] = (*want[k("甲1")][:3], "黄", want[k("甲1")][4])
        want[k("乙1")] = (*want[k("乙1")][:3], "红", want[k("乙1")][4])
        want[k("乙2")] = (*want[k("乙2")][:3], "蓝", want[k("乙2")][4])
        assert read() == want
        command.downgrade(alembic_config(db_url), "0008")
        assert not {"household_blocks", "household_levels"} & set(sa.inspect(eng).get_table_names())
        with eng.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM household_history WHERE county = '乙县'")) == len(new)
            levels = dict(conn.execute(sa.text("SELECT household_key, level FROM household_history")).all())
        assert levels[k("乙1")] == "红" and levels[k("乙2")] == "蓝" and levels[k("甲0")] == "蓝"
        assert levels[k("甲1")] == "黄"
        upgrade(db_url)
        assert read() == want
    finally:
        eng.dispose()
