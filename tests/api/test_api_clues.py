"""Clues from every channel over HTTP, on a generated county scored by ``fangpin score`` (which
leaves the online history in the store): a self-application for the household the model scores
lowest (0.3%, far below every level) still becomes a 红 warning with reasons (the guardrail applies
to people; tests/data/test_clue_store.py takes a score of exactly 0.001 through the same store step); a clue for a
household with an open warning joins it, a duplicate is merged, a people channel raises it; a clue
by ID number finds the household and keeps no ID; a household not in the ledger is recorded for
the village; scopes hold; a department event that lifts its household is a 部门预警 clue of the same
list; the cadre page's form takes a clue through the same intake."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from api_tiny_model import fixed_loader
from tiny_model import tiny_model

from fangpin import clues as fc
from fangpin import quarters as fq
from fangpin.config import load_params
from fangpin.store.loop import loops, query_clues
from fangpin.warnings import local_date
from pipelines.common import rooted

pytestmark = pytest.mark.xdist_group("api_clues")
NOW = datetime(2025, 1, 6, 2, tzinfo=UTC)  # a Monday in the quarter after the ledger's last (2024Q4)


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    import itertools

    from fastapi.testclient import TestClient

    from fangpin.ingest import ingest
    from fangpin.store import Store
    from fangpin.synth.write import generate
    from pipelines.score import score_quarter
    from serving.app import create_app

    p = load_params()
    d = tmp_path_factory.mktemp("clues")
    generate(d / "export", 900, 12, 13, "2022Q1", p.line_for, 2, 3, 4, p.labels.horizon_quarters, 4)
    assert ingest([d / "export"], [], d / "ingested", p).ok
    model = tiny_model(p, n=1000, quarters=8, seed=2, trees=30, model_version="7", calibration="sigmoid")[0]
    store = Store(f"sqlite:///{d / 'warnings.db'}", b"test-secret", migrate=True)
    res = score_quarter(rooted(p, d / "work"), ingested_dir=d / "ingested", model=model, store=store,
                        root=d / "work", show_progress=False, write_excel=False)
    assert res.quarter == "2024Q4" and res.history["households"] > 500
    sc = pd.read_parquet(res.scores_parquet).set_index("household_id")
    name = sc["county"].iloc[0]
    town = sc.loc[sc["county"] == name, "township"].iloc[0]
    other_town = next(t for t in sc.loc[sc["county"] == name, "township"].unique() if t != town)
    keys = {k: store.add_key(role, scope)[1] for k, role, scope in (
        ("county", "county_system", name), ("dept", "department", name), ("cadre", "township_cadre", f"{name}/{town}"),
        ("cadre_other", "township_cadre", f"{name}/{other_town}"), ("analyst", "analyst", "*"))}
    clock = lambda: NOW  # noqa: E731
    app = create_app(p, store=store, loader=fixed_loader(model, itertools.repeat("7")), clock=clock)
    with TestClient(app, base_url="https://testserver") as client:
        yield dict(dir=d, params=p, store=store, scores=sc, res=res, keys=keys, client=client, county=name,
                   town=town)
    store.dispose()


def hdr(county, who: str) -> dict:
    return {"X-API-Key": county["keys"][who]}


def clue(county, who: str, **body):
    body.setdefault("text", "家中老人住院，自付费用较高")
    body.setdefault("received_by", "李娜")
    return county["client"].post("/v1/clues", json=body, headers=hdr(county, who))


def members(county, hid: str) -> list[str]:
    from typer.testing import CliRunner

    from fangpin.cli import app

    out = county["dir"] / f"hh_{hid}.json"
    exp = str(county["dir"] / "export")
    r = CliRunner().invoke(app, ["households", "--ledger", exp, "--quarter", "2024Q4", "--ids", hid, "-o", str(out)])
    assert r.exit_code == 0, r.output
    return [m["id_number"] for m in json.loads(out.read_text(encoding="utf-8"))["households"][0]["members"]]


def _unwarned(county, township: str | None = None) -> pd.DataFrame:
    sc = county["scores"]
    m = (sc["county"] == county["county"]) & ~sc["warning"]
    if township:
        m &= sc["township"] == township
    return sc[m].sort_values("probability")


def test_a_self_application_scored_far_below_any_level_is_still_a_warning(county):
    hid = _unwarned(county, county["town"]).index[0]
    assert county["scores"].at[hid, "probability"] < 0.005  # the batch scored it far below any warning
    assert pd.isna(county["scores"].at[hid, "combined_level"])
    r = clue(county, "county", channel="农户自主申报", household_id=hid)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["outcome"] == "created" and out["level"] == "红"
    assert out["probability"] < 0.005 and out["reasons"]  # scored at once, reasons attached
    assert out["deadline"] == (local_date(NOW) + timedelta(days=2)).isoformat()  # the village check: 2 days
    w = county["store"].get_warning(out["warning_id"])
    assert (w.household_id, w.level, w.status, w.quarter) == (hid, "红", "待核实", "2025Q1")
    lp = loops(county["store"], [w.id])[w.id]
    assert (lp["origin"], lp["channels"], lp["floor_level"], lp["clues"]) == ("农户自主申报", ["农户自主申报"], "红", 1)
    # the same household's second self-application is merged into the open clue, not repeated
    again = clue(county, "cadre", channel="农户自主申报", household_id=hid, text="再次申请").json()
    assert again["outcome"] == "merged" and again["clue_id"] == out["clue_id"] and again["repeats"] == 1
    items, total = query_clues(county["store"], household_id=hid)
    assert total == 1 and items[0]["reports"][0]["text"] == "再次申请"
    assert county["store"].query_warnings(household_id=hid).total == 1


def test_a_clue_for_a_household_with_an_open_warning_joins_it(county):
    sc, store = county["scores"], county["store"]
    warned = sc[(sc["county"] == county["county"]) & sc["warning"] & (sc["combined_level"] != "红")]
    hid = warned.index[0]
    (w,) = store.query_warnings(household_id=hid).items
    r = clue(county, "county", channel="干部排查", household_id=hid, text="走访发现子女辍学")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["outcome"] == "joined" and out["warning_id"] == w.id
    assert store.query_warnings(household_id=hid).total == 1  # joined, not repeated
    lp = loops(store, [w.id])[w.id]
    assert lp["channels"] == ["大数据筛查", "干部排查"] and lp["origin"] == "大数据筛查" and lp["clues"] == 1
    # a public report: always a warning — the open one is raised to 红, its deadline brought forward
    out = clue(county, "dept", channel="群众反映", household_id=hid, text="邻居反映该户因灾房屋受损").json()
    assert out["outcome"] == "joined" and out["level"] == "红"
    raised = store.get_warning(w.id)
    assert raised.level == "红" and raised.deadline <= w.deadline
    assert raised.deadline == local_date(NOW) + timedelta(days=15)
    assert loops(store, [w.id])[w.id]["channels"] == ["大数据筛查", "干部排查", "群众反映"]
    # a department event below the household's new level changes nothing (the history level follows)
    from fangpin.ids import keyed_hashes
    from fangpin.store import history as hs

    key = keyed_hashes([hid], county["client"].app.state.scoring.id_key)[0]
    assert hs.histories(store, [key])[key]["level"] == "红"


def test_a_clue_by_id_number_finds_the_household_and_keeps_no_id(county, caplog):
    hid = _unwarned(county, county["town"]).index[3]
    idn = members(county, hid)[0]
    r = clue(county, "cadre", id_number=idn, channel="村级排查", text="村级排查发现务工收入中断")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["household_id"] == hid and out["outcome"] in ("created", "not_warned")
    assert idn not in r.text
    items, _ = query_clues(county["store"], household_id=hid)
    assert items[0]["id_masked"] == idn[:4] + "*" * 10 + idn[-4:] and items[0]["person_key"] != idn
    assert not any(idn in str(v) for v in items[0].values())
    assert idn not in caplog.text


def test_unmatched_scopes_and_text(county):
    stranger = "999999999999999"
    r = clue(county, "county", channel="群众反映", household_id=stranger)
    assert r.status_code == 422 and "县和乡镇" in r.json()["message_zh"]
    r = clue(county, "county", channel="群众反映", household_id=stranger, township=county["town"], village="新村")
    assert r.status_code == 200 and r.json()["outcome"] == "unmatched" and r.json()["warning_id"] is None
    assert r.json()["deadline"] == (local_date(NOW) + timedelta(days=15)).isoformat()
    # a household of another county: a county's key does not find it (as if not in the ledger)
    sc = county["scores"]
    elsewhere = sc.index[sc["county"] != county["county"]][0]
    r = clue(county, "county", channel="群众反映", household_id=elsewhere)
    assert r.status_code == 422 and "县和乡镇" in r.json()["message_zh"]
    # a cadre of another township: not theirs
    hid = _unwarned(county, county["town"]).index[5]
    assert clue(county, "cadre_other", channel="干部排查", household_id=hid).status_code == 403
    # analysts read, they do not report clues
    assert clue(county, "analyst", channel="干部排查", household_id=hid).status_code == 403
    # text with a phone or an ID number is refused (never echoed)
    r = clue(county, "county", channel="干部排查", household_id=hid, text="联系电话 13812345678")
    assert r.status_code == 422 and "13812345678" not in r.text
    listed = county["client"].get("/v1/clues", headers=hdr(county, "cadre")).json()
    assert listed["total"] >= 1 and {c["township"] for c in listed["items"]} == {county["town"]}
    outcomes = [a["outcome"] for a in county["store"].audit_rows() if a["endpoint"] == "POST /v1/clues"]
    assert {"clue:unmatched", "forbidden", "rejected"} <= set(outcomes)


def test_a_department_event_that_lifts_its_household_is_a_department_clue(county):
    cand = _unwarned(county).sort_values("probability", ascending=False)
    day = fq.end_date("2024Q4").replace(day=10).isoformat()
    for hid in cand.index[:10]:
        idn = members(county, hid)[0]
        ev = {"id_number": idn, "event_date": day, "department": "卫健", "event_type": "重大疾病", "amount": "85,000"}
        r = county["client"].post("/v1/events", json={"events": [ev]}, headers=hdr(county, "dept"))
        assert r.status_code == 200, r.text
        (item,) = r.json()["rescored"]
        if item["warning"] == "created":
            break
    else:
        pytest.fail("no event lifted a household to a warning")
    items, total = query_clues(county["store"], household_id=hid)
    assert total == 1 and items[0]["channel"] == "部门预警" and items[0]["source"] == "event"
    assert items[0]["outcome"] == "created" and items[0]["warning_id"] == item["warning_id"]
    assert "重大疾病" in items[0]["text"] and idn not in str(items[0])
    lp = loops(county["store"], [item["warning_id"]])[item["warning_id"]]
    assert lp["origin"] == fc.DEPARTMENT


def test_the_cadre_form_takes_a_clue(county):
    client = county["client"]
    page = client.get("/cadre/login")
    tok = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert client.post("/cadre/login", data={"key": county["keys"]["cadre"], "csrf": tok},
                       follow_redirects=False).status_code == 303
    page = client.get("/cadre/")
    tok = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert 'action="/cadre/clues"' in page.text and "农户自主申报" in page.text
    hid = _unwarned(county, county["town"]).index[8]
    form = {"channel": "农户自主申报", "household_id": hid, "text": "户主到村委会申请纳入监测", "received_by": "王强", "csrf": tok}
    r = client.post("/cadre/clues", data={**form, "csrf": "stale"}, follow_redirects=False)
    assert r.status_code == 400
    r = client.post("/cadre/clues", data=form, follow_redirects=True)
    assert r.status_code == 200 and "线索已登记：已生成预警" in r.text and "户主到村委会申请纳入监测" in r.text
    (w,) = county["store"].query_warnings(household_id=hid).items
    assert w.level == "红" and f"/cadre/w/{w.id}" in r.text
    bad = client.post("/cadre/clues", data={**form, "household_id": "", "id_number": ""})
    assert bad.status_code == 422 and "户编号和证件号码至少填写一项" in bad.text
    page = client.get(f"/cadre/w/{w.id}")
    assert "农户自主申报" in page.text and "户主到村委会申请纳入监测" in page.text and "剩 2 天" in page.text
