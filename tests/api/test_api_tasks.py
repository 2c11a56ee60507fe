"""保障缺口 tasks over HTTP: a scored household's gaps come back as tasks for their department
beside its warning (with the list it is on and figures that add up); GET /v1/tasks is scoped and
ordered by deadline; POST /v1/tasks/{id}/status follows 待办理 → 办理中 → 已办结."""

from __future__ import annotations

from seed_warnings import hdr

from fangpin.household_json import example_household


def test_score_returns_gaps_as_tasks_beside_the_warning_and_figures_that_add_up(client, seeded):
    h = example_household()
    h["unsafe_housing"] = True  # 危房: a task for 住建, not a 15-day visit
    h["safe_water"] = False  # 饮水: a task for 水利
    r = client.post("/v1/score", json={"households": [h]}, headers=hdr(seeded, "county_a"))
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    assert [(t["rule_id"], t["department"]) for t in res["tasks"]] == [
        ("R04_UNSAFE_HOUSING", "住建"), ("R05_NO_SAFE_WATER", "水利")]
    assert res["tasks"][0]["measure"] == "危房改造" and res["tasks"][0]["days"] == 90
    # the gaps are tasks, not rule hits of the warning; the income rule (黄 floor) still is
    assert [x["rule_id"] for x in res["rule_hits"]] == ["R02_INCOME_NEAR_LINE"] and res["rule_level"] == "黄"
    assert res["level"] in ("红", "黄") and res["visit_list"] in ("入户核实（15日内）", "月度走访", "月度走访（核实名额已满，顺延）")
    total = sum(x["prob_pp"] for x in res["reasons"]) + res["other_pp"]
    assert abs(total - 100 * (res["probability"] - res["base_rate"])) <= 0.1
    assert res["reference_period"]


def test_tasks_are_scoped_ordered_and_filtered(client, seeded):
    r = client.get("/v1/tasks", headers=hdr(seeded, "county_a"))
    page = r.json()
    assert r.status_code == 200 and page["total"] == sum(t.county == "青石县" for t in seeded.tasks) == 4
    assert {t["county"] for t in page["items"]} == {"青石县"}
    dues = [t["deadline"] for t in page["items"]]
    assert dues == sorted(dues)
    cadre = client.get("/v1/tasks", headers=hdr(seeded, "cadre_a1")).json()
    assert {t["township"] for t in cadre["items"]} == {"兴兴镇"} and cadre["total"] == 2
    dept = client.get("/v1/tasks", params={"department": "住建"}, headers=hdr(seeded, "analyst")).json()
    assert dept["total"] == 4 and {t["measure"] for t in dept["items"]} == {"危房改造"}
    assert client.get("/v1/tasks", params={"county": "白河县"}, headers=hdr(seeded, "county_a")).status_code == 403
    assert all("*" in t["id_masked"] for t in page["items"] if t["id_masked"])


def test_task_status_moves_forward_only_and_is_scoped(client, seeded):
    mine = next(t for t in seeded.tasks if t.township == "兴兴镇")
    other = next(t for t in seeded.tasks if t.county == "白河县")
    url = f"/v1/tasks/{mine.id}/status"
    assert client.post(f"/v1/tasks/{other.id}/status", json={"status": "办理中"},
                       headers=hdr(seeded, "cadre_a1")).status_code == 403
    r = client.post(url, json={"status": "办理中"}, headers=hdr(seeded, "cadre_a1"))
    assert r.status_code == 200 and r.json()["status"] == "办理中"
    r = client.post(url, json={"status": "已办结"}, headers=hdr(seeded, "cadre_a1"))
    assert r.status_code == 200 and r.json()["status"] == "已办结"
    again = client.post(url, json={"status": "办理中"}, headers=hdr(seeded, "cadre_a1"))
    assert again.status_code == 409 and "已办结" in again.json()["message_zh"]
    assert client.post(url, json={"status": "待办理"}, headers=hdr(seeded, "cadre_a1")).status_code == 422
    outcomes = [a["outcome"] for a in seeded.store.audit_rows() if a["endpoint"] == "POST /v1/tasks/{id}/status"]
    assert outcomes == ["forbidden", "task:办理中", "task:已办结", "rejected"]
