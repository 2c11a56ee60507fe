"""The mixed load of an ordinary county day, over real HTTP: county systems scoring, cadres reading
and recording outcomes, and an administrator reloading the model several times in the middle of
it. Zero failed requests; every response names a model version that was loaded; the figures
(requests, failures, p99) go to docs/benchmarks.md through bench/bench_reliability.py."""

from __future__ import annotations

import itertools
import os
import threading
import time

import httpx
import pytest
from api_tiny_model import fixed_loader
from faults import Load, record, run_threads, serving_params
from live_server import live_server
from seed_warnings import hdr, seed_store

from fangpin.household_json import example_household
from fangpin.warnings import STATUS_INCLUDED

pytestmark = [pytest.mark.reliability, pytest.mark.xdist_group("reliability_http")]

SECONDS = float(os.environ.get("FANGPIN_RELIABILITY_SECONDS", "8"))  # bench/bench_reliability.py runs longer


def test_mixed_load_with_model_reloads_fails_no_request(params, tiny_model, db_url):
    from serving.app import create_app

    seeded = seed_store(db_url, params, per_township=40)
    app = create_app(serving_params(params), store=seeded.store, loader=fixed_loader(tiny_model))
    load = Load()
    versions: set[str] = set()
    reloaded: list[str] = []
    body = {"households": [example_household(household_id=f"61092300300{i:04d}") for i in range(5)]}
    to_close = iter(seeded.of("青石县") + seeded.of("白河县"))
    close_lock = threading.Lock()

    with live_server(app) as url:
        def scorer(stop):
            with httpx.Client(base_url=url, headers=hdr(seeded, "county_a"), timeout=60) as c:
                while not stop.is_set():
                    r = load.call("score", lambda: c.post("/v1/score", json=body))
                    if r is not None and r.status_code == 200:
                        versions.add(r.json()["model_version"])

        def reader(stop):
            ids = itertools.cycle([w.id for w in seeded.warnings])
            with httpx.Client(base_url=url, headers=hdr(seeded, "analyst"), timeout=60) as c:
                while not stop.is_set():
                    load.call("list", lambda: c.get("/v1/warnings", params={"limit": 20}))
                    load.call("get", lambda: c.get(f"/v1/warnings/{next(ids)}"))

        def writer(stop):
            with httpx.Client(base_url=url, headers=hdr(seeded, "admin"), timeout=60) as c:
                while not stop.is_set():
                    with close_lock:
                        w = next(to_close, None)
                    if w is None:
                        return
                    load.call("feedback", lambda w=w: c.post(f"/v1/warnings/{w.id}/feedback",
                                                             json={"status": STATUS_INCLUDED, "actor": "王干部"}))
                    time.sleep(0.02)

        def admin(stop):
            with httpx.Client(base_url=url, headers=hdr(seeded, "admin"), timeout=120) as c:
                while not stop.wait(1.0):
                    r = load.call("reload", lambda: c.post("/v1/admin/reload"))
                    if r is not None and r.status_code == 200:
                        reloaded.append(r.json()["model_version"])

        t0 = time.perf_counter()
        run_threads([scorer] * 3 + [reader] * 4 + [writer] * 2 + [admin], seconds=SECONDS)
        elapsed = time.perf_counter() - t0

    summary = load.summary()
    record(f"mixed_load_{db_url.split(':')[0].split('+')[0]}",
           {**summary, "seconds": round(elapsed, 1), "reloads": len(reloaded), "clients": 10})
    assert load.errors == [] and load.server_errors() == [], summary
    assert {s for _, s, _ in load.results} == {200}, summary
    assert len(reloaded) >= 3 and len(versions) >= 2  # responses came from several loaded models
    assert versions <= {"1", *reloaded}
    assert len(load.statuses("score")) >= 20 and len(load.statuses("feedback")) >= 20
    seeded.store.dispose()
