"""Hot reload: `POST /v1/admin/reload` switches to the current @champion of the real registry
while requests keep arriving — zero failed requests, and every response names the model that
scored it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from api_tiny_model import register_tiny, train_tiny
from live_server import live_server
from seed_warnings import hdr

from fangpin.household_json import example_household

pytestmark = pytest.mark.slow


def test_reload_under_concurrent_load_fails_no_request(params, seeded, tiny_model, tmp_path):
    from serving.app import create_app

    v1 = register_tiny(params, tmp_path / "v1", tiny_model)
    app = create_app(params, store=seeded.store)  # default loader: models:/return-risk@champion
    body = {"households": [example_household()]}
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    with live_server(app) as url:
        def hammer():
            with httpx.Client(base_url=url, headers=hdr(seeded, "county_a"), timeout=60) as c:
                while not stop.is_set():
                    r = c.post("/v1/score", json=body)
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        versions.append(r.json()["model_version"])

        with httpx.Client(base_url=url, headers=hdr(seeded, "admin"), timeout=120) as admin:
            assert admin.get("/v1/model").json()["model_version"] == v1
            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(hammer) for _ in range(4)]
                # a second, different model becomes champion while requests are in flight
                v2 = register_tiny(params, tmp_path / "v2", train_tiny(params, seed=3, trees=20))
                r = admin.post("/v1/admin/reload")
                assert r.status_code == 200, r.text
                assert r.json() == {**r.json(), "previous_version": v1, "model_version": v2}
                n_at_reload = len(statuses)
                while len(statuses) < n_at_reload + 20:  # keep scoring on the new model
                    threading.Event().wait(0.05)
                stop.set()
                for f in futures:
                    f.result()
            assert admin.get("/v1/model").json()["model_version"] == v2

    assert len(statuses) >= 40 and set(statuses) == {200}, f"failed requests: {[s for s in statuses if s != 200]}"
    assert versions[0] == v1 and versions[-1] == v2
    assert set(versions) == {v1, v2}
    rows = seeded.store.audit_rows()
    assert [r["model_version"] for r in rows if r["outcome"] == "reloaded"] == [v2]
