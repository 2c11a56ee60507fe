"""Cadre feedback under ordinary concurrency, over real HTTP, on SQLite and PostgreSQL: writers on
different warnings (API and the cadre page's form) beside readers never see a 5xx; every accepted
write is in the store afterwards with its audit row; of several requests racing to close one
warning exactly one wins and the others get 409; scoring and a model reload in the same load fail
no request."""

from __future__ import annotations

import itertools
import re
import threading
import time

import httpx
import pytest
from api_tiny_model import fixed_loader
from faults import Load, record, run_threads, serving_params
from live_server import live_server
from seed_warnings import hdr, seed_store

from fangpin.household_json import example_household
from fangpin.warnings import STATUS_EXCLUDED, STATUS_INCLUDED, STATUS_OPEN

pytestmark = [pytest.mark.reliability, pytest.mark.xdist_group("reliability_http")]


def cadre_session(url: str, key: str) -> httpx.Client:
    """A signed-in cadre page session (login form with its CSRF token)."""
    c = httpx.Client(base_url=url, timeout=60, follow_redirects=False)
    page = c.get("/cadre/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = c.post("/cadre/login", data={"key": key, "csrf": csrf})
    assert r.status_code == 303, r.text
    return c


def page_csrf(c: httpx.Client, path: str) -> str:
    r = c.get(path)
    assert r.status_code == 200, r.status_code
    return re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)


def test_concurrent_feedback_writers_and_readers_see_no_5xx(params, tiny_model, db_url, tmp_path):
    from serving.app import create_app

    seeded = seed_store(db_url, params, per_township=24)
    store = seeded.store
    p = serving_params(params, store_wait_s=5.0)
    app = create_app(p, store=store, loader=fixed_loader(tiny_model))
    load = Load()
    anle = [w for w in seeded.of("青石县", "安乐镇")]  # API writers (county_system key of 青石县)
    xing = [w for w in seeded.of("青石县", "兴兴镇")]  # the cadre page's form (township key)
    race = seeded.of("白河县")[:6]  # four requests race to close each of these
    accepted: list[str] = []
    page_saved: list[str] = []
    body = {"households": [example_household()]}

    with live_server(app) as url:
        def api_writer(ws):
            def run(stop):
                with httpx.Client(base_url=url, headers=hdr(seeded, "county_a"), timeout=60) as c:
                    for w in ws:
                        r = load.call("feedback", lambda w=w: c.post(
                            f"/v1/warnings/{w.id}/feedback", json={"status": STATUS_INCLUDED, "actor": "王干部"}))
                        if r is not None and r.status_code == 200:
                            accepted.append(w.id)
            return run

        def page_writer(stop):
            c = cadre_session(url, seeded.keys["cadre_a1"])
            try:
                for w in xing:
                    csrf = page_csrf(c, f"/cadre/w/{w.id}")
                    r = load.call("page_outcome", lambda w=w, csrf=csrf: c.post(
                        f"/cadre/w/{w.id}/outcome",
                        data={"outcome": "excluded", "reason": "入户核实收入稳定", "actor": "李干部", "csrf": csrf}))
                    if r is not None and r.status_code == 303:
                        page_saved.append(w.id)
            finally:
                c.close()

        def racer(stop):
            with httpx.Client(base_url=url, headers=hdr(seeded, "county_b"), timeout=60) as c:
                for w in race:
                    load.call("race", lambda w=w: c.post(f"/v1/warnings/{w.id}/feedback",
                                                         json={"status": STATUS_INCLUDED, "actor": "赵干部"}))

        def reader(stop):
            ids = itertools.cycle([w.id for w in seeded.warnings])
            with httpx.Client(base_url=url, headers=hdr(seeded, "analyst"), timeout=60) as c:
                while not stop.is_set():
                    load.call("list", lambda: c.get("/v1/warnings", params={"limit": 50}))
                    load.call("get", lambda: c.get(f"/v1/warnings/{next(ids)}"))

        def scorer(stop):
            with httpx.Client(base_url=url, headers=hdr(seeded, "county_a"), timeout=60) as c:
                while not stop.is_set():
                    load.call("score", lambda: c.post("/v1/score", json=body))

        writers = [api_writer(anle[i::3]) for i in range(3)] + [page_writer] + [racer] * 4
        readers = [reader] * 6 + [scorer]
        # the writers run to completion while the readers and the scorer loop; then those stop
        t0 = time.perf_counter()
        stop = threading.Event()
        bg = threading.Thread(target=lambda: run_threads([lambda s, r=r: r(stop) for r in readers]), daemon=True)
        bg.start()
        try:
            run_threads(writers)
        finally:
            stop.set()
            bg.join(120)
        elapsed = time.perf_counter() - t0

    summary = load.summary()
    record(f"concurrency_{db_url.split(':')[0].split('+')[0]}", {**summary, "seconds": round(elapsed, 1)})
    assert load.errors == [], load.errors
    assert load.server_errors() == [], load.server_errors()
    assert set(load.statuses("feedback")) == {200} and len(accepted) == len(anle)
    assert set(load.statuses("page_outcome")) == {303} and len(page_saved) == len(xing)
    assert set(load.statuses("list")) == {200} and set(load.statuses("get")) == {200}
    assert set(load.statuses("score")) == {200}
    # the race: per warning exactly one winner, the others 409 (never a 500)
    assert sorted(load.statuses("race")) == sorted([200] * len(race) + [409] * 3 * len(race))

    # every accepted write is in the store, once, with its audit row (written in its transaction)
    for w in anle + xing + race:
        now = store.get_warning(w.id)
        assert now.status != STATUS_OPEN
        assert len(store.feedback_history(w.id)) == 1
    assert {store.get_warning(w.id).status for w in xing} == {STATUS_EXCLUDED}
    rows = store.audit_rows()
    changed = [r for r in rows if r["outcome"].startswith("status:")]
    assert len(changed) == len(anle) + len(xing) + len(race)
    assert sum(r["outcome"] == "rejected" for r in rows) == 3 * len(race)
    assert sum(r["endpoint"] == "GET /v1/warnings" for r in rows) == len(load.statuses("list"))
    store.dispose()
