"""No personal data in logs or audit rows: a full ID number, a name or a health status never
appears, whatever the requests carried (scoring, bad input, feedback, reads, page views)."""

from __future__ import annotations

import copy
import json
import logging

from seed_warnings import hdr

from fangpin.household_json import example_household

HEALTH = ("长期慢性病", "患有大病", "残疾")


def test_logs_and_audit_hold_no_id_name_or_health(client, seeded, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    # fangpin's CLI set-up quietens some libraries' loggers; a CLI test earlier in the same worker
    # must not change what this test can see, so set the loggers that carry request lines too.
    for name in ("httpx", "uvicorn", "fastapi", "serving", "fangpin", "models", "pipelines"):
        caplog.set_level(logging.DEBUG, logger=name)
    h = example_household()
    h["members"][1]["health"] = "患有大病"
    h["members"][2]["health"] = "残疾"
    ids = [m["id_number"] for m in h["members"]]
    names = [m["name"] for m in h["members"]]
    assert client.post("/v1/score", json={"households": [h]}, headers=hdr(seeded, "county_a")).status_code == 200
    bad = copy.deepcopy(h)
    bad["members"][0]["health"] = "不详"
    assert client.post("/v1/score", json={"households": [bad]}, headers=hdr(seeded, "county_a")).status_code == 422
    forbidden = h | {"county": "白河县", "township": "河口镇"}
    assert client.post("/v1/score", json={"households": [forbidden]},
                       headers=hdr(seeded, "county_a")).status_code == 403
    w = seeded.of("青石县", "兴兴镇")[0]
    client.get(f"/v1/warnings/{w.id}", headers=hdr(seeded, "cadre_a1"))
    client.post(f"/v1/warnings/{w.id}/feedback",
                json={"status": "已核实·纳入监测", "reason": "户主住院，自付医疗费用高", "actor": "张伟"},
                headers=hdr(seeded, "cadre_a1"))
    client.get("/v1/warnings", headers=hdr(seeded, "county_a"))

    out = tmp_path / "audit.csv"
    seeded.store.audit_export(out)
    logs = "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records)
    audit = json.dumps(seeded.store.audit_rows(), ensure_ascii=False, default=str) + out.read_text("utf-8")
    assert "POST /v1/score" in audit  # the export is not empty
    assert "/v1/score" in logs  # and the log capture saw the requests
    secrets_ = ids + names + seeded.id_numbers + [x.head_name for x in seeded.warnings] + list(HEALTH)
    secrets_ += [h["household_id"], w.household_id]  # audit keeps household ids only as hashes
    for s in secrets_:
        assert s not in logs, f"log leaked {s[:2]}…"
        assert s not in audit, f"audit leaked {s[:2]}…"
