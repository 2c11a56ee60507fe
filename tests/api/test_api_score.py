"""POST /v1/score: results, batch limit, validation errors in Chinese, scope, audit."""

from __future__ import annotations

import copy

import pytest
from seed_warnings import hdr

from fangpin.household_json import example_household


def _bad_check(idn: str) -> str:
    return idn[:17] + ("1" if idn[17] != "1" else "2")


def body(*households):
    return {"households": list(households) or [example_household()]}


def test_scores_one_household_with_levels_rule_hits_and_versions(client, seeded):
    r = client.post("/v1/score", json=body(), headers=hdr(seeded, "county_a"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_version"] == "1" and out["ruleset_version"] == "rules-2026.1"
    (res,) = out["results"]
    assert res["household_id"] == example_household()["household_id"]
    assert 0 <= res["probability"] <= 1
    # the example's income (8,120.5) is within 20% above the 2024 line (7,300): a yellow rule hit
    assert [h["rule_id"] for h in res["rule_hits"]] == ["R02_INCOME_NEAR_LINE"]
    assert res["rule_level"] == "黄"
    assert res["level"] in ("红", "黄")  # combined = max(rule, model) is at least the rule level
    # a warned household carries at most four reasons (TreeSHAP log-odds, Chinese sentences) and measures
    assert 1 <= len(res["reasons"]) <= 4 and res["measures"]
    for reason in res["reasons"]:
        assert reason["direction"] in ("up", "down") and reason["text"]
        assert (reason["logodds"] > 0) == (reason["direction"] == "up")
    assert all(m["type"] and m["text"] for m in res["measures"])


def test_batch_matches_single_scores(client, seeded):
    a = example_household(household_id="610923003000201")
    b = example_household(household_id="610923003000202")
    b["income_per_capita"] = 5200.0
    b["events"] = []
    batch = client.post("/v1/score", json=body(a, b), headers=hdr(seeded, "county_a")).json()["results"]
    one = client.post("/v1/score", json=body(b), headers=hdr(seeded, "county_a")).json()["results"][0]
    assert [x["household_id"] for x in batch] == [a["household_id"], b["household_id"]]
    assert batch[1]["probability"] == pytest.approx(one["probability"], abs=1e-12)
    assert batch[1]["rule_hits"][0]["rule_id"] == "R01_INCOME_BELOW_LINE"
    assert batch[1]["level"] == "红" or batch[1]["rule_level"] == "红"


def test_oversized_batch_is_413(params, seeded, tiny_model):
    from api_tiny_model import make_client

    small = params.model_copy(update={"serving": params.serving.model_copy(update={"max_batch": 2})})
    hs = [example_household(household_id=f"61092300300030{i}") for i in range(3)]
    with make_client(small, seeded, tiny_model) as c:
        r = c.post("/v1/score", json=body(*hs), headers=hdr(seeded, "county_a"))
        assert r.status_code == 413
        assert "上限 2 户" in r.json()["message_zh"]
        assert c.post("/v1/score", json=body(*hs[:2]), headers=hdr(seeded, "county_a")).status_code == 200


@pytest.mark.parametrize("mutate, path, zh", [
    (lambda h: h["members"][1].__setitem__("health", "很好"), "households[0].members[1].health", "允许"),
    (lambda h: h["members"][0].__setitem__("work_months", 13), "households[0].members[0].work_months", "不大于 12"),
    (lambda h: h.__setitem__("income_per_capita", "一万"), "households[0].income_per_capita", "数字"),
    (lambda h: h.__delitem__("township"), "households[0].township", "缺少必填字段"),
    (lambda h: h.__setitem__("quarter", "2024Q5"), "households[0].quarter", "YYYYQn"),
    (lambda h: h["members"][0].__setitem__("id_number", _bad_check(h["members"][0]["id_number"])),
     "households[0].members[0].id_number", "校验位"),
    (lambda h: h["events"][0].__setitem__("event_date", "2031-01-01"), "households[0].events[0].event_date",
     "晚于统计季度末"),
    (lambda h: h.__setitem__("colour", "red"), "households[0].colour", "不认识的字段"),
    (lambda h: h.__setitem__("members", []), "households[0].members", "至少需要 1 项"),
])
def test_bad_fields_are_422_naming_path_in_chinese_without_echoing_values(client, seeded, mutate, path, zh):
    h = copy.deepcopy(example_household())
    mutate(h)
    r = client.post("/v1/score", json=body(h), headers=hdr(seeded, "county_a"))
    assert r.status_code == 422, r.text
    err = r.json()
    paths = [d["path"] for d in err["detail"]]
    assert path in paths, paths
    item = err["detail"][paths.index(path)]
    assert zh in item["message_zh"] and path in err["message_zh"]
    for m in h.get("members", []):  # never the submitted personal values
        assert m["id_number"] not in r.text and m["name"] not in r.text


def test_duplicate_household_in_batch_is_422(client, seeded):
    h = example_household()
    r = client.post("/v1/score", json=body(h, h), headers=hdr(seeded, "county_a"))
    assert r.status_code == 422
    assert r.json()["detail"][0]["path"] == "households[1].household_id"


def test_malformed_json_is_422(client, seeded):
    r = client.post("/v1/score", content=b"{not json", headers={**hdr(seeded, "county_a"),
                                                                 "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["message_zh"]


def test_scope_other_county_is_403_and_reveals_nothing(client, seeded):
    other = example_household()
    other["county"], other["township"] = "白河县", "河口镇"
    r = client.post("/v1/score", json=body(other), headers=hdr(seeded, "county_a"))
    assert r.status_code == 403
    assert r.json() == {"detail": "forbidden", "message_zh": "无权访问：超出本密钥的权限或范围"}
    # a township key cannot score another township of its own county either
    r2 = client.post("/v1/score", json=body(example_household() | {"township": "安乐镇"}),
                     headers=hdr(seeded, "cadre_a1"))
    assert r2.status_code == 403 and r2.json() == r.json()
    # mixing one in-scope and one out-of-scope household refuses the whole batch
    other["household_id"] = "610923003000999"
    r3 = client.post("/v1/score", json=body(example_household(), other), headers=hdr(seeded, "county_a"))
    assert r3.status_code == 403


def test_missing_or_wrong_key_is_401(client, seeded):
    assert client.post("/v1/score", json=body()).status_code == 401
    bad = seeded.keys["county_a"][:-3] + "abc"
    r = client.post("/v1/score", json=body(), headers={"X-API-Key": bad})
    assert r.status_code == 401 and "X-API-Key" in r.json()["message_zh"]
    seeded.store.revoke_key(seeded.key_ids["county_a"])
    assert client.post("/v1/score", json=body(), headers=hdr(seeded, "county_a")).status_code == 401


def test_every_scoring_call_is_audited_with_hashed_ids(client, seeded):
    before = len(seeded.store.audit_rows())
    h = example_household()
    r = client.post("/v1/score", json=body(h), headers=hdr(seeded, "county_a"))
    other = example_household() | {"county": "白河县", "township": "河口镇"}
    client.post("/v1/score", json=body(other), headers=hdr(seeded, "county_a"))
    rows = seeded.store.audit_rows()[before:]
    assert [x["outcome"] for x in rows] == ["scored", "forbidden"]
    ok = rows[0]
    assert ok["key_id"] == seeded.key_ids["county_a"] and ok["endpoint"] == "POST /v1/score"
    assert ok["model_version"] == "1" and ok["levels"] == [r.json()["results"][0]["level"]]
    assert ok["household_hashes"] == [seeded.store.hash_household(h["household_id"])]
    assert h["household_id"] not in str(rows)


def test_no_model_loaded_is_503_and_not_ready(params, seeded, tiny_model):
    from api_tiny_model import make_client

    with make_client(params, seeded, tiny_model, load_model=False) as c:
        r = c.post("/v1/score", json=body(), headers=hdr(seeded, "county_a"))
        assert r.status_code == 503 and "模型" in r.json()["message_zh"]
        ready = c.get("/ready")
        assert ready.status_code == 503 and ready.json()["model_loaded"] is False
    with make_client(params, seeded, tiny_model) as c:
        assert c.get("/ready").json() == {"status": "ready", "model_loaded": True, "store_reachable": True,
                                          "model_version": "1"}
        assert c.get("/health").json() == {"status": "ok"}


def test_quarter_without_a_monitoring_line_is_422_naming_the_year(client, seeded, params):
    """A year params.lines does not hold is the caller's (or the county's configuration) mistake:
    422 naming the year and what to fix, never a 503 "model not loaded"."""
    year = max(params.lines) + 3
    h = example_household(quarter=f"{year}Q1")
    for e in h["events"]:
        e["event_date"] = f"{year}-01-15"
    r = client.post("/v1/score", json=body(h), headers=hdr(seeded, "county_a"))
    assert r.status_code == 422, r.text
    out = r.json()
    assert f"没有 {year} 年的监测线" in out["message_zh"] and "lines" in out["message_zh"]
    # the service stays up: the next request scores
    assert client.post("/v1/score", json=body(), headers=hdr(seeded, "county_a")).status_code == 200
