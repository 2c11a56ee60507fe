"""Warnings: scoped listing with filters and paging, 403 that reveals nothing, feedback with
validated transitions, role limits, audit rows for every read and change."""

from __future__ import annotations

from seed_warnings import hdr


def test_list_is_scoped_filtered_ordered_and_paged(client, seeded):
    r = client.get("/v1/warnings", headers=hdr(seeded, "county_a"))
    page = r.json()
    assert r.status_code == 200 and page["total"] == len(seeded.of("青石县")) == 8
    assert {w["county"] for w in page["items"]} == {"青石县"}
    ranks = [("红", "黄", "蓝").index(w["level"]) for w in page["items"]]
    assert ranks == sorted(ranks)
    assert sum(w["overdue"] for w in page["items"]) == 2  # one seeded overdue warning per township
    assert all("*" in w["id_masked"] for w in page["items"])

    t = client.get("/v1/warnings", params={"township": "兴兴镇", "level": "红"}, headers=hdr(seeded, "county_a"))
    assert [w["level"] for w in t.json()["items"]] == ["红"] and t.json()["items"][0]["township"] == "兴兴镇"

    p1 = client.get("/v1/warnings", params={"limit": 3}, headers=hdr(seeded, "county_a")).json()
    p2 = client.get("/v1/warnings", params={"limit": 3, "offset": 3}, headers=hdr(seeded, "county_a")).json()
    assert len(p1["items"]) == 3 and p1["total"] == 8
    assert not {w["id"] for w in p1["items"]} & {w["id"] for w in p2["items"]}

    cadre = client.get("/v1/warnings", headers=hdr(seeded, "cadre_a1")).json()
    assert {w["township"] for w in cadre["items"]} == {"兴兴镇"} and cadre["total"] == 4
    everyone = client.get("/v1/warnings", params={"limit": 100}, headers=hdr(seeded, "analyst")).json()
    assert everyone["total"] == 16


def test_list_outside_scope_is_403_and_bad_filters_422(client, seeded):
    r = client.get("/v1/warnings", params={"county": "白河县"}, headers=hdr(seeded, "county_a"))
    assert r.status_code == 403
    r = client.get("/v1/warnings", params={"township": "安乐镇"}, headers=hdr(seeded, "cadre_a1"))
    assert r.status_code == 403
    r = client.get("/v1/warnings", params={"quarter": "2024Q7"}, headers=hdr(seeded, "county_a"))
    assert r.status_code == 422 and r.json()["detail"][0]["path"] == "quarter"
    r = client.get("/v1/warnings", params={"level": "紫"}, headers=hdr(seeded, "county_a"))
    assert r.status_code == 422 and "允许" in r.json()["detail"][0]["message_zh"]


def test_other_countys_warning_and_missing_warning_get_the_same_403(client, seeded):
    theirs = seeded.of("白河县")[0]
    mine = seeded.of("青石县")[0]
    a = client.get(f"/v1/warnings/{theirs.id}", headers=hdr(seeded, "county_a"))
    b = client.get("/v1/warnings/W0000000000000000000", headers=hdr(seeded, "county_a"))
    assert a.status_code == b.status_code == 403
    assert a.content == b.content
    assert dict(a.headers)["content-length"] == dict(b.headers)["content-length"]
    ok = client.get(f"/v1/warnings/{mine.id}", headers=hdr(seeded, "county_a"))
    assert ok.status_code == 200 and ok.json()["head_name"] == mine.head_name
    # feedback on someone else's warning: the same 403, and nothing changes
    f = client.post(f"/v1/warnings/{theirs.id}/feedback", json={"status": "已核实·纳入监测", "actor": "张伟"},
                    headers=hdr(seeded, "county_a"))
    assert f.status_code == 403 and f.content == a.content
    assert seeded.store.get_warning(theirs.id).status == "待核实"


def test_feedback_transitions_are_validated(client, seeded):
    w = seeded.of("青石县", "兴兴镇")[1]
    url = f"/v1/warnings/{w.id}/feedback"
    cadre = hdr(seeded, "cadre_a1")
    r = client.post(url, json={"status": "已核实·排除", "actor": "张伟"}, headers=cadre)
    assert r.status_code == 409 and "须填写原因" in r.json()["message_zh"]
    r = client.post(url, json={"status": "待核实", "actor": "张伟"}, headers=cadre)
    assert r.status_code == 422
    r = client.post(url, json={"status": "已核实·排除", "reason": "收入稳定在监测线以上", "actor": "张伟"},
                    headers=cadre)
    assert r.status_code == 200 and r.json()["status"] == "已核实·排除"
    assert r.json()["status_reason"] == "收入稳定在监测线以上"
    again = client.post(url, json={"status": "已核实·纳入监测", "actor": "张伟"}, headers=cadre)
    assert again.status_code == 409 and "已结案" in again.json()["message_zh"]
    hist = seeded.store.feedback_history(w.id)
    assert [(f.from_status, f.to_status, f.key_id) for f in hist] == [
        ("待核实", "已核实·排除", seeded.key_ids["cadre_a1"])]
    # a full ID number in the reason is refused
    w2 = seeded.of("青石县", "兴兴镇")[2]
    r = client.post(f"/v1/warnings/{w2.id}/feedback",
                    json={"status": "已核实·排除", "reason": f"户主{seeded.id_numbers[0]}已外迁", "actor": "张伟"},
                    headers=cadre)
    assert r.status_code == 409 and seeded.id_numbers[0] not in r.text


def test_roles(client, seeded):
    w = seeded.of("青石县", "兴兴镇")[0]
    r = client.post(f"/v1/warnings/{w.id}/feedback", json={"status": "已核实·纳入监测", "actor": "分析员"},
                    headers=hdr(seeded, "analyst"))
    assert r.status_code == 403  # analysts read, they do not close warnings
    for label in ("county_a", "cadre_a1", "analyst"):
        assert client.post("/v1/admin/reload", headers=hdr(seeded, label)).status_code == 403
    r = client.post("/v1/admin/reload", headers=hdr(seeded, "admin"))
    assert r.status_code == 200 and r.json()["previous_version"] == "1" and r.json()["model_version"] == "2"
    info = client.get("/v1/model", headers=hdr(seeded, "cadre_a1")).json()
    assert info["model_version"] == "2" and info["model_uri"] == "models:/return-risk@champion"


def test_reads_and_changes_are_audited(client, seeded):
    w = seeded.of("青石县", "兴兴镇")[3]
    n0 = len(seeded.store.audit_rows())
    client.get("/v1/warnings", params={"township": "兴兴镇"}, headers=hdr(seeded, "cadre_a1"))
    client.get(f"/v1/warnings/{w.id}", headers=hdr(seeded, "cadre_a1"))
    client.post(f"/v1/warnings/{w.id}/feedback", json={"status": "已核实·纳入监测", "actor": "张伟"},
                headers=hdr(seeded, "cadre_a1"))
    client.get(f"/v1/warnings/{seeded.of('白河县')[0].id}", headers=hdr(seeded, "cadre_a1"))
    rows = seeded.store.audit_rows()[n0:]
    assert [(r["endpoint"], r["outcome"]) for r in rows] == [
        ("GET /v1/warnings", "read"),
        ("GET /v1/warnings/{id}", "read"),
        ("POST /v1/warnings/{id}/feedback", "status:已核实·纳入监测"),
        ("GET /v1/warnings/{id}", "forbidden"),
    ]
    h = seeded.store.hash_household(w.household_id)
    assert h in rows[0]["household_hashes"] and rows[1]["household_hashes"] == [h] == rows[2]["household_hashes"]
    assert rows[3]["household_hashes"] == []  # nothing about the other county's household
    assert all(r["key_id"] == seeded.key_ids["cadre_a1"] for r in rows)
