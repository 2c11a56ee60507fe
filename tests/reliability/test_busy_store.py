"""A store whose write lock another process holds (for 30 s): writes are answered 503 with
Retry-After within the configured wait, not after minutes; reads keep working; /health answers at
once; the reads' audit rows are written once the lock is free; afterwards writes succeed again."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from api_tiny_model import fixed_loader
from faults import Load, record, serving_params
from live_server import live_server
from seed_warnings import SECRET, hdr, seed_store

from fangpin.store import Store
from fangpin.warnings import STATUS_INCLUDED, STATUS_OPEN

pytestmark = [pytest.mark.reliability, pytest.mark.xdist_group("reliability_http")]

HOLD_S = 30


def hold_lock(url: str, warning_id: str) -> subprocess.Popen:
    """Another process takes the write lock and keeps it: SQLite ``BEGIN IMMEDIATE``; PostgreSQL
    an EXCLUSIVE table lock on warnings (plain reads pass, writes and FOR UPDATE wait)."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        code = f"""
            import sqlite3, sys, time
            c = sqlite3.connect({path!r}, isolation_level=None)
            c.execute("BEGIN IMMEDIATE")
            c.execute("UPDATE warnings SET status_reason = status_reason WHERE id = ?", ({warning_id!r},))
            print("locked", flush=True)
            time.sleep({HOLD_S})
        """
    else:
        pg = url.replace("postgresql+psycopg://", "postgresql://")
        code = f"""
            import psycopg, time
            c = psycopg.connect({pg!r})
            c.execute("LOCK TABLE warnings IN EXCLUSIVE MODE")
            print("locked", flush=True)
            time.sleep({HOLD_S})
        """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True,
                            env=os.environ.copy())
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_held_write_lock_gives_quick_503s_and_health_stays_fast(params, tiny_model, db_url):
    from serving.app import create_app

    seeded = seed_store(db_url, params, per_township=12)
    seeded.store.dispose()
    wait_s = 1.0
    store = Store(db_url, SECRET, wait_s=wait_s, connections=8)
    app = create_app(serving_params(params, store_wait_s=wait_s), store=store, loader=fixed_loader(tiny_model))
    targets = seeded.of("青石县")[:16]
    load = Load()

    with live_server(app) as url:
        holder = hold_lock(db_url, seeded.warnings[-1].id)
        t_lock = time.perf_counter()
        try:
            with httpx.Client(base_url=url, timeout=60) as c, ThreadPoolExecutor(24) as pool:
                def write(w):
                    return load.call("feedback", lambda: c.post(
                        f"/v1/warnings/{w.id}/feedback", json={"status": STATUS_INCLUDED, "actor": "王干部"},
                        headers=hdr(seeded, "county_a")))

                def read(i):
                    return load.call("list", lambda: c.get("/v1/warnings", headers=hdr(seeded, "analyst")))

                def health(i):
                    time.sleep(0.05 * i)
                    return load.call("health", lambda: c.get("/health"))

                futures = ([pool.submit(write, w) for w in targets] + [pool.submit(read, i) for i in range(8)]
                           + [pool.submit(health, i) for i in range(20)])
                answers = [f.result() for f in futures]
            during = time.perf_counter() - t_lock
            assert during < HOLD_S - 5, f"the requests waited for the lock ({during:.1f}s)"
            assert holder.poll() is None, "the lock holder ended early"
        finally:
            holder.kill()
            holder.wait(30)

        busy = [r for r in answers[:len(targets)]]
        assert all(r is not None and r.status_code == 503 for r in busy), load.summary()
        assert all(r.headers.get("retry-after", "").isdigit() for r in busy)
        assert {r.json()["message_zh"] for r in busy} == {"系统繁忙，请稍后重试"}
        assert set(load.statuses("list")) == {200}  # reads never wait for the write lock
        assert set(load.statuses("health")) == {200}
        health_max = max(t for k, _, t in load.results if k == "health")
        # every write was answered within the wait plus queueing, far below the 30 s hold
        feedback_max = max(t for k, _, t in load.results if k == "feedback")
        assert feedback_max < 15 and health_max < 5, (feedback_max, health_max)

        # the lock is free again: the same writes succeed, and nothing was half-applied before
        assert all(store.get_warning(w.id).status == STATUS_OPEN for w in targets)
        with httpx.Client(base_url=url, headers=hdr(seeded, "county_a"), timeout=60) as c:
            r = c.post(f"/v1/warnings/{targets[0].id}/feedback", json={"status": STATUS_INCLUDED, "actor": "王干部"})
            assert r.status_code == 200, r.text
    rows = store.audit_rows()  # the reads' rows, queued while the lock was held, are written
    assert sum(r["endpoint"] == "GET /v1/warnings" for r in rows) == 8
    record(f"busy_store_{db_url.split(':')[0].split('+')[0]}",
           {**load.summary(), "lock_held_s": HOLD_S, "store_wait_s": wait_s,
            "max_feedback_s": round(feedback_max, 2), "max_health_s": round(health_max, 3)})
    store.dispose()
