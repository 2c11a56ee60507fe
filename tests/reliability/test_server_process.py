"""The service in its own process: killed with SIGKILL in the middle of cadre writes, then started
again on the same store (consistent, every acknowledged write present); and its log, whatever
fails, holds no name, ID number, health status or feedback text."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from faults import Load, record
from live_server import free_port
from seed_warnings import hdr, seed_store

from fangpin.household_json import example_id
from fangpin.warnings import STATUS_INCLUDED, STATUS_OPEN

pytestmark = [pytest.mark.reliability, pytest.mark.xdist_group("reliability_http")]
HERE = Path(__file__).resolve().parent


def start_server(url: str, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    fh = log.open("ab")
    proc = subprocess.Popen([sys.executable, str(HERE / "serve_app.py"), url, str(port), *extra],
                            stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not start:\n" + log.read_text(errors="replace")[-3000:])
        time.sleep(0.2)


def stop_server(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def test_kill_9_during_writes_then_restart_leaves_the_store_consistent(params, db_url, tmp_path):
    seeded = seed_store(db_url, params, per_township=30)
    store = seeded.store
    targets = seeded.of("青石县")  # 60 warnings, written by 4 clients
    log = tmp_path / "server.log"
    proc, base = start_server(db_url, log)
    acked: list[str] = []
    load = Load()
    killed = threading.Event()

    def writer(ws):
        with httpx.Client(base_url=base, headers=hdr(seeded, "county_a"), timeout=30) as c:
            for w in ws:
                if killed.is_set():
                    return
                r = load.call("feedback", lambda w=w: c.post(f"/v1/warnings/{w.id}/feedback",
                                                             json={"status": STATUS_INCLUDED, "actor": "王干部"}))
                if r is not None and r.status_code == 200:
                    acked.append(w.id)

    threads = [threading.Thread(target=writer, args=(targets[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 15 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of the writes
    killed.set()
    proc.wait(30)
    for t in threads:
        t.join(60)
    assert 15 <= len(acked) < len(targets), len(acked)
    assert load.server_errors() == []

    if db_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    proc, base = start_server(db_url, log)  # restart on the same store
    try:
        for w in seeded.warnings:
            status = store.get_warning(w.id).status
            history = store.feedback_history(w.id)
            assert (status != STATUS_OPEN) == (len(history) == 1), (w.id, status, len(history))
        assert all(store.get_warning(i).status == STATUS_INCLUDED for i in acked)
        changed = [r for r in store.audit_rows() if r["outcome"].startswith("status:")]
        n_closed = sum(store.get_warning(w.id).status != STATUS_OPEN for w in seeded.warnings)
        assert len(changed) == n_closed  # each status change has its audit row (same transaction)
        left = next(w for w in targets if store.get_warning(w.id).status == STATUS_OPEN)
        with httpx.Client(base_url=base, headers=hdr(seeded, "county_a"), timeout=30) as c:
            assert c.post(f"/v1/warnings/{left.id}/feedback",
                          json={"status": STATUS_INCLUDED, "actor": "王干部"}).status_code == 200
            assert c.get("/v1/warnings").status_code == 200
    finally:
        stop_server(proc)
    record(f"kill9_{db_url.split(':')[0].split('+')[0]}",
           {"acknowledged_before_kill": len(acked), "closed_after_restart": n_closed, **load.summary()})
    store.dispose()


SENSITIVE_REASON = "户主张三患尿毒症长期透析"
NAME = "张三丰"


def test_server_log_holds_no_personal_data_whatever_fails(params, tmp_path):
    url = f"sqlite:///{tmp_path / 'warnings.db'}"
    seeded = seed_store(url, params, per_township=6)
    log = tmp_path / "server.log"
    proc, base = start_server(url, log, "--faults")
    full_id = example_id("610923", "19680315", "215")
    spaced = f"{full_id[:6]} {full_id[6:14]} {full_id[14:]}"
    dashed = f"{full_id[:6]}-{full_id[6:14]}-{full_id[14:]}"
    ws = seeded.of("青石县")
    ids_500 = []
    try:
        with httpx.Client(base_url=base, headers=hdr(seeded, "county_a"), timeout=30) as c:
            for i, prefix in enumerate("ABC"):  # three kinds of failure, each a 500
                r = c.post(f"/v1/warnings/{ws[i].id}/feedback",
                           json={"status": STATUS_INCLUDED, "actor": NAME, "reason": prefix + SENSITIVE_REASON})
                assert r.status_code == 500, r.text
                assert r.json()["message_zh"] == "服务内部错误" and SENSITIVE_REASON not in r.text
                ids_500.append(r.headers["x-request-id"])
            # ID numbers written with spaces or dashes, and phone numbers, are refused (409)
            for text in (f"{SENSITIVE_REASON}，身份证 {spaced}", f"证件 {dashed}", "电话 138 0013 8000"):
                r = c.post(f"/v1/warnings/{ws[3].id}/feedback",
                           json={"status": STATUS_INCLUDED, "actor": NAME, "reason": text})
                assert r.status_code == 409, r.text
            bad = {"households": [{"household_id": full_id, "members": [{"name": NAME, "health": "尿毒症"}]}]}
            assert c.post("/v1/score", json=bad).status_code == 422
            c.post("/v1/score", content=f'{{"households": [{{"name": "{NAME}"', headers={"content-type": "application/json"})
    finally:
        stop_server(proc)
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "SQL parameters hidden" in text and "uvicorn.access" in text or "access" in text  # the loggers did log
    for rid in ids_500:  # each failure is logged by type, place and request id
        line = next(ln for ln in text.splitlines() if rid in ln and "unhandled" in ln)
        assert re.search(r"unhandled \w+ at [\w.]+:\w+:\d+", line), line
    for secret in (SENSITIVE_REASON, "透析", "尿毒症", NAME, full_id, spaced, dashed, full_id[6:14],
                   "13800138000", "138 0013 8000"):
        assert secret not in text, f"the log holds {secret[:2]}…"
    assert "Traceback" not in text and "Exception in ASGI application" not in text
    assert seeded.store.get_warning(ws[3].id).status == STATUS_OPEN
    seeded.store.dispose()
