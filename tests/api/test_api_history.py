"""The API scores a household as the batch did, and department events re-score it at once — over
HTTP, on a generated county: the contract-format export is ingested and scored by ``fangpin score``
(which leaves the online history in the store), households are exported with ``fangpin
households`` exactly as a county system sends them, and posted to ``/v1/score`` and
``/v1/events`` of the app (TestClient; the scores also through uvicorn on a loopback port)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from api_tiny_model import fixed_loader
from tiny_model import tiny_model

from fangpin.config import load_params
from fangpin.ids import check_char
from pipelines.common import rooted

pytestmark = pytest.mark.xdist_group("api_county")


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    from fangpin.ingest import ingest
    from fangpin.store import Store
    from fangpin.synth.write import generate
    from pipelines.score import score_quarter

    p = load_params()
    d = tmp_path_factory.mktemp("county")
    generate(d / "export", 1500, 6, 11, "2022Q1", p.line_for, 2, 3, 4, p.labels.horizon_quarters, 4)
    assert ingest([d / "export"], [], d / "ingested", p).ok
    model = tiny_model(p, n=1000, quarters=8, seed=2, trees=30, model_version="7")[0]
    store = Store(f"sqlite:///{d / 'warnings.db'}", b"test-secret", migrate=True)
    res = score_quarter(rooted(p, d / "work"), ingested_dir=d / "ingested", model=model, store=store,
                        root=d / "work", show_progress=False, chunk_households=400, write_excel=False)
    assert res.history["households"] > 1000
    yield dict(dir=d, params=p, model=model, store=store, res=res,
               scores=pd.read_parquet(res.scores_parquet).set_index("household_id"),
               warnings=pd.read_parquet(res.warnings_parquet).set_index("household_id"))
    store.dispose()


@pytest.fixture(scope="module")
def client(county):
    import itertools

    from fastapi.testclient import TestClient

    from serving.app import create_app

    # the registered version the batch ran with: the API reads the level cut-offs it stored
    app = create_app(county["params"], store=county["store"], loader=fixed_loader(county["model"], itertools.repeat("7")))
    with TestClient(app, base_url="https://testserver") as c:
        yield c


@pytest.fixture(scope="module")
def keys(county):
    s, sc = county["store"], county["scores"]
    county_name = sc["county"].iloc[0]
    other = next(c for c in sc["county"].unique() if c != county_name)
    return {name: s.add_key(role, scope)[1] for name, role, scope in (
        ("admin", "admin", "*"), ("county", "county_system", county_name), ("dept", "department", county_name),
        ("dept_other", "department", other))} | {"county_name": county_name}


def export(county, tmp_path, ids) -> list[dict]:
    """``fangpin households`` in a fresh workdir: what a county system sends."""
    from typer.testing import CliRunner

    from fangpin.cli import app

    out = tmp_path / "households.json"
    exp = str(county["dir"] / "export")
    r = CliRunner().invoke(app, ["households", "--ledger", exp, "--events", exp, "--quarter", county["res"].quarter,
                                 "--ids", ",".join(ids), "-o", str(out)])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text(encoding="utf-8"))["households"]


def post(client, key, households):
    r = client.post("/v1/score", json={"households": households}, headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    return pd.DataFrame(r.json()["results"]).set_index("household_id")


def parity_households(county, tmp_path) -> tuple[list[str], list[str], list[dict]]:
    """200 households of the batch (up to 100 with a warning, the rest without) as ``fangpin
    households`` exports them: (ids, warned ids, households)."""
    sc = county["scores"]
    warned = list(sc.index[sc["warning"]])[:100]
    rest = [h for h in sc.index[~sc["warning"]].to_series().sample(200, random_state=1) if h not in warned]
    ids = (warned + rest)[:200]
    households = export(county, tmp_path, ids)
    assert [h["household_id"] for h in households] == ids
    return ids, warned, households


def assert_scored_as_the_batch(county, got: pd.DataFrame, ids: list[str], warned: list[str]) -> None:
    """The API's results for ``ids`` are the batch's: probabilities, levels, rule hits, tasks,
    and for the warned households the reasons, measures and their figures."""
    sc, w = county["scores"], county["warnings"]
    got = got.loc[ids]
    b = sc.loc[ids]
    assert (got["history"] == f"ledger:{county['res'].quarter}").all()
    np.testing.assert_allclose(got["probability"].to_numpy(), b["probability"].to_numpy(), rtol=0, atol=1e-9)
    for api_col, batch_col in (("level", "combined_level"), ("model_level", "model_level"), ("deferred", "deferred")):
        assert got[api_col].fillna("-").tolist() == b[batch_col].fillna("-").tolist(), api_col
    # every rule hit of the batch: those of rules with a level floor shown with the warning, the
    # others as 保障缺口 tasks for their department
    floors, routes = county["model"].levels.rule_floors, county["params"].tasks.routes
    from fangpin.warnings import max_level

    assert got["rule_level"].fillna("-").tolist() == [max_level(floors.get(r) for r in x) or "-"
                                                      for x in b["rule_ids"]]
    assert [[h["rule_id"] for h in hs] for hs in got["rule_hits"]] == [[r for r in x if floors.get(r)]
                                                                       for x in b["rule_ids"]]
    assert [[t["rule_id"] for t in ts] for ts in got["tasks"]] == [[r for r in x if r in routes]
                                                                   for x in b["rule_ids"]]
    for h in warned:
        assert got.at[h, "reasons"] == list(w.at[h, "reasons"]), h
        assert got.at[h, "measures"] == list(w.at[h, "measures"]), h
        assert (got.at[h, "base_rate"], got.at[h, "other_pp"], got.at[h, "deferred"]) == (
            w.at[h, "base_rate"], w.at[h, "other_pp"], w.at[h, "deferred"]), h
    assert got["level"].notna().sum() == len(warned) > 20


def test_200_exported_households_posted_over_http_score_exactly_as_the_batch(county, client, keys, tmp_path):
    ids, warned, households = parity_households(county, tmp_path)
    # as the ledger holds them: text values, grade-level school values, 是/否 — nothing derived
    assert all(isinstance(h["income_per_capita"], str) for h in households)
    assert any(re.search("年级$", m.get("school_status") or "") for h in households for m in h["members"])
    assert any(h["events"] for h in households)
    assert not {"prev_income_per_capita", "township_ident_rate_4q", "d_n_members"} & {k for h in households for k in h}
    assert_scored_as_the_batch(county, post(client, keys["admin"], households), ids, warned)


def test_exported_households_posted_to_a_real_server_score_exactly_as_the_batch(county, keys, tmp_path):
    """The same households through uvicorn on a loopback port (a socket, JSON on the wire), as a
    county system calls the API."""
    import itertools

    import httpx
    from live_server import live_server

    from serving.app import create_app

    ids, warned, households = parity_households(county, tmp_path)
    app = create_app(county["params"], store=county["store"], loader=fixed_loader(county["model"], itertools.repeat("7")))
    with live_server(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        got = post(c, keys["admin"], households)
    assert_scored_as_the_batch(county, got, ids, warned)


def test_the_api_scores_what_it_is_sent(county, client, keys, tmp_path):
    """Not a stored score: a lower posted income (typed as a clerk types it) moves the result."""
    sc = county["scores"]
    hid = sc.index[np.argsort(sc["probability"].to_numpy())[len(sc) // 2]]
    own = export(county, tmp_path, [hid])[0]
    got = post(client, keys["admin"], [own])
    lower = post(client, keys["admin"], [dict(own, income_per_capita="1,000")])
    assert got.at[hid, "probability"] == pytest.approx(sc.at[hid, "probability"], abs=1e-9)
    assert lower.at[hid, "probability"] > got.at[hid, "probability"]
    assert "R01_INCOME_BELOW_LINE" in [h["rule_id"] for h in lower.at[hid, "rule_hits"]]


def test_history_is_the_ledgers_for_its_quarter_and_later_none_otherwise(county, client, keys, tmp_path):
    from fangpin import quarters as fq

    sc = county["scores"]
    hid = sc.index[0]
    own = export(county, tmp_path, [hid])[0]
    q = county["res"].quarter
    later = dict(own, quarter=fq.shift(q, 1))
    earlier = dict(own, quarter=fq.shift(q, -1), events=[])
    stranger = dict(own, household_id="999999999999999")
    elsewhere = dict(own, county="另一县")  # the same 户编号 posted as another county's: no history
    assert post(client, keys["admin"], [elsewhere]).at[hid, "history"] == "none"
    two = post(client, keys["admin"], [later, stranger])
    assert two.at[hid, "history"] == f"ledger:{q}" and two.at["999999999999999", "history"] == "none"
    assert post(client, keys["admin"], [earlier]).at[hid, "history"] == "none"
    # households in one request never share history: the stranger is scored as if alone
    alone = post(client, keys["admin"], [stranger])
    assert alone.at["999999999999999", "probability"] == two.at["999999999999999", "probability"]
    # the same household in concurrent requests (batched into one model call) is scored each time
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: post(client, keys["admin"], [own]).at[hid, "probability"], range(16)))
    assert got == [got[0]] * 16 and got[0] == pytest.approx(county["scores"].at[hid, "probability"], abs=1e-9)


# ------------------------------------------------------------------------------ /v1/events


def _event(id_number: str, date: str, amount: str = "85,000") -> dict:
    return {"id_number": id_number, "event_date": date, "department": "卫健", "event_type": "重大疾病",
            "amount": amount}


def test_a_serious_illness_event_raises_the_households_warning_at_once(county, client, keys, tmp_path):
    from fangpin.store import history as hs

    sc, store = county["scores"], county["store"]
    cand = sc[(sc["county"] == keys["county_name"]) & ~sc["warning"]].sort_values("probability", ascending=False)
    hid = cand.index[0]  # the unwarned household nearest a warning
    member = export(county, tmp_path, [hid])[0]["members"][0]["id_number"]
    q = county["res"].quarter
    from fangpin import quarters as fq

    day = fq.end_date(q).replace(day=10).strftime("%Y年%m月%d日")
    before = store.query_warnings(household_id=hid).total
    r = client.post("/v1/events", json={"events": [_event(member, day)]}, headers={"X-API-Key": keys["dept"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["received"], out["stored"], out["duplicates"], out["matched"], out["unmatched"]) == (1, 1, 0, 1, 0)
    [res] = out["rescored"]
    assert res["household_id"] == hid and res["quarter"] == q and res["previous_level"] is None
    assert res["level"] in ("蓝", "黄", "红") and res["warning"] == "created"
    w = store.get_warning(res["warning_id"])
    assert w is not None and w.level == res["level"] and w.household_id == hid and before == 0
    assert any(h.rule_id == "R09_SEVERE_EVENT" for h in w.rule_hits) and w.reasons and w.measures
    assert "85,000元" in " ".join(h.text for h in w.rule_hits)
    # the household now scores with the event on /v1/score too
    again = post(client, keys["admin"], export(county, tmp_path, [hid]))
    assert again.at[hid, "level"] == res["level"]
    # the same event again: stored once, nothing re-scored, the warning unchanged
    r2 = client.post("/v1/events", json={"events": [_event(member, day)]}, headers={"X-API-Key": keys["dept"]})
    o2 = r2.json()
    assert (o2["stored"], o2["duplicates"], o2["rescored"]) == (0, 1, [])
    assert store.get_warning(res["warning_id"]) == w
    assert hs.event_counts(store, keys["county_name"])["events"] == 1
    # visible on the cadre page of the household's township
    _, cadre = store.add_key("township_cadre", f"{w.county}/{w.township}")
    page = client.get("/cadre/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert client.post("/cadre/login", data={"key": cadre, "csrf": csrf}, follow_redirects=True).status_code == 200
    listing = client.get("/cadre/")
    assert res["warning_id"] in listing.text
    detail = client.get(f"/cadre/w/{res['warning_id']}")
    assert detail.status_code == 200 and w.reasons[0].text.split("，")[0] in detail.text


def test_events_matching_nobody_are_kept_and_counted(county, client, keys):
    from fangpin.store import history as hs

    first17 = "52012219800101" + "077"
    unknown = first17 + check_char(first17)
    before = hs.event_counts(county["store"], keys["county_name"])["unmatched"]
    r = client.post("/v1/events", json={"events": [_event(unknown, "2023-05-02")]},
                    headers={"X-API-Key": keys["dept"]})
    out = r.json()
    assert (out["stored"], out["matched"], out["unmatched"], out["rescored"]) == (1, 0, 1, [])
    assert out["unmatched_total"] == before + 1
    assert unknown not in r.text  # the ID number never comes back


def test_a_department_sees_only_its_county_and_only_posts_events(county, client, keys, tmp_path):
    sc = county["scores"]
    hid = sc.index[sc["county"] == keys["county_name"]][5]
    member = export(county, tmp_path, [hid])[0]["members"][0]["id_number"]
    r = client.post("/v1/events", json={"events": [_event(member, "2023-04-03", "12000")]},
                    headers={"X-API-Key": keys["dept_other"]})
    assert r.status_code == 200 and r.json()["unmatched"] == 1 and r.json()["rescored"] == []
    assert client.post("/v1/score", json={"households": export(county, tmp_path, [hid])},
                       headers={"X-API-Key": keys["dept"]}).status_code == 403
    assert client.get("/v1/warnings", headers={"X-API-Key": keys["dept"]}).status_code == 403


def test_concurrent_events_are_all_stored_and_rescored(county, client, keys, tmp_path):
    """Department systems post at the same time: every new event is stored once and re-scores its
    household; none is refused because another request was writing."""
    from concurrent.futures import ThreadPoolExecutor

    sc = county["scores"]
    ids = list(sc.index[(sc["county"] == keys["county_name"])][20:36])
    members = [h["members"][0]["id_number"] for h in export(county, tmp_path, ids)]

    def send(i):
        evs = [_event(members[i], "2023-05-0" + str(1 + k), str(1000 + 10 * i + k)) for k in range(3)]
        return client.post("/v1/events", json={"events": evs}, headers={"X-API-Key": keys["dept"]})

    with ThreadPoolExecutor(8) as pool:
        rs = list(pool.map(send, range(len(members))))
    assert [r.status_code for r in rs] == [200] * len(members), [r.text for r in rs if r.status_code != 200][:2]
    assert sum(r.json()["stored"] for r in rs) == 3 * len(members)
    assert sum(len(r.json()["rescored"]) for r in rs) == len(members)


def test_a_province_wide_key_finds_the_household_in_any_county(county, client, keys, tmp_path):
    """An admin key has no county: the person → household map, keyed by (county, person_key), is
    probed in each of its counties (probing only the first fails this test). A member of a
    household of another county than the department keys' is matched to that household over HTTP."""
    sc = county["scores"]
    other = sc[sc["county"] != keys["county_name"]]
    hid = other.index[-1]
    member = export(county, tmp_path, [hid])[0]["members"][0]["id_number"]
    r = client.post("/v1/events", json={"events": [_event(member, "2023-04-04", "3000")]},
                    headers={"X-API-Key": keys["admin"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["matched"], out["unmatched"]) == (1, 0)
    assert [x["household_id"] for x in out["rescored"]] == [hid]
