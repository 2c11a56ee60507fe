"""Deadlines at every step, over HTTP with an injected clock: overdue counts per township move when
the clock moves (GET /v1/overdue, the warnings' overdue flag, the cadre list's "剩 n 天" / "已逾期
n 天"); a verification 纳入监测 starts the decision step; the support plan waits for the export;
the weekly digest (`fangpin digest`, one workbook per township, every cell a string) follows the
day it is run for."""

from __future__ import annotations

import re
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from api_tiny_model import make_client
from seed_warnings import hdr
from typer.testing import CliRunner

from fangpin.warnings import local_date


class MovableClock:
    """The app's clock, moved by the test."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, days: float) -> None:
        self.now += timedelta(days=days)


def _per_township(body: dict) -> dict[str, int]:
    return {t["township"]: t["overdue"] for t in body["townships"]}


def test_overdue_counts_move_with_the_clock(params, seeded, tiny_model):
    clock = MovableClock(datetime.now(UTC))
    with make_client(params, seeded, tiny_model, clock=clock) as client:
        # per township: 红 created 20 days ago (15 days: overdue), 黄 1 and 3 days ago (31 days), 蓝 2 days ago
        r = client.get("/v1/overdue", headers=hdr(seeded, "county_a"))
        assert r.status_code == 200, r.text
        assert _per_township(r.json()) == {"兴兴镇": 1, "安乐镇": 1}
        item = r.json()["townships"][0]["items"][0]
        assert item["step"] == "verification" and item["level"] == "红" and item["days_overdue"] == 5
        assert client.get("/v1/overdue", headers=hdr(seeded, "cadre_a1")).json()["total"] == 1  # own township
        assert client.get("/v1/overdue", params={"county": "白河县"}, headers=hdr(seeded, "county_a")).status_code == 403

        clock.advance(29)  # the 黄 of 3 days ago is now past its 31 days
        body = client.get("/v1/overdue", headers=hdr(seeded, "county_a")).json()
        assert _per_township(body) == {"兴兴镇": 2, "安乐镇": 2}
        assert body["today"] == local_date(clock.now).isoformat()
        assert [i["days_overdue"] for i in body["townships"][0]["items"]] == [34, 1]
        clock.advance(2)
        assert _per_township(client.get("/v1/overdue", headers=hdr(seeded, "county_a")).json()) == {
            "兴兴镇": 3, "安乐镇": 3}
        listed = client.get("/v1/warnings", params={"township": "兴兴镇"}, headers=hdr(seeded, "county_a")).json()
        assert sum(w["overdue"] for w in listed["items"]) == 3  # the warnings' own flag reads the same clock
        clock.advance(-31)
    outcomes = [a["outcome"] for a in seeded.store.audit_rows() if a["endpoint"] == "GET /v1/overdue"]
    assert outcomes == ["read", "read", "forbidden", "read", "read"]


def test_decision_and_support_steps(params, seeded, tiny_model):
    clock = MovableClock(datetime.now(UTC))
    target = next(w for w in seeded.of("青石县", "兴兴镇") if w.level == "黄")
    with make_client(params, seeded, tiny_model, clock=clock) as client:
        loop = client.get(f"/v1/warnings/{target.id}/loop", headers=hdr(seeded, "cadre_a1")).json()
        assert loop["origin"] == "大数据筛查" and loop["step"]["step"] == "verification"
        assert loop["step"]["text"] == f"剩 {loop['step']['days_left']} 天"
        r = client.post(f"/v1/warnings/{target.id}/feedback", json={"status": "已核实·纳入监测", "actor": "张伟"},
                        headers=hdr(seeded, "cadre_a1"))
        assert r.status_code == 200, r.text
        loop = client.get(f"/v1/warnings/{target.id}/loop", headers=hdr(seeded, "cadre_a1")).json()
        assert loop["verified_at"] == local_date(clock.now).isoformat()
        assert loop["step"]["step"] == "decision" and loop["step"]["due"] == loop["decision_due"]
        # no support plan before the export shows the household identified
        r = client.post(f"/v1/warnings/{target.id}/support-plan", json={"actor": "张伟"}, headers=hdr(seeded, "cadre_a1"))
        assert r.status_code == 409 and "台账尚未显示" in r.json()["message_zh"]
        due = datetime.fromisoformat(loop["decision_due"]).replace(tzinfo=UTC)
        clock.now = due + timedelta(days=2)
        body = client.get("/v1/overdue", params={"township": "兴兴镇"}, headers=hdr(seeded, "county_a")).json()
        steps = {i["warning_id"]: i["step"] for t in body["townships"] for i in t["items"]}
        assert steps[target.id] == "decision"
        assert body["townships"][0]["by_step"]["decision"] == 1


def test_cadre_list_counts_down_and_turns_overdue(params, seeded, tiny_model):
    clock = MovableClock(datetime.now(UTC))
    with make_client(params, seeded, tiny_model, clock=clock) as client:
        page = client.get("/cadre/login")
        tok = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = client.post("/cadre/login", data={"key": seeded.keys["cadre_a1"], "csrf": tok}, follow_redirects=False)
        assert r.status_code == 303
        before = client.get("/cadre/").text
        assert before.count("已逾期") == 1 and "已逾期 5 天" in before
        clock.advance(29)
        after = client.get("/cadre/").text
        assert after.count("已逾期 ") == 2 and "已逾期 34 天" in after and "已逾期 1 天" in after


def test_weekly_digest_per_township(params, seeded, tmp_path, monkeypatch):
    from openpyxl import load_workbook

    from fangpin.cli import app

    monkeypatch.setenv("FANGPIN_STORE_URL", str(seeded.store.engine.url.render_as_string(hide_password=False)))
    monkeypatch.setenv("FANGPIN_STATE_DIR", str(tmp_path / "state"))
    params_file = Path(__file__).resolve().parents[2] / "params.yaml"
    today = local_date(datetime.now(UTC))
    runner = CliRunner()

    def run(day) -> tuple[str, list[Path]]:
        out = tmp_path / f"digest_{day.isoformat()}"
        res = runner.invoke(app, ["digest", "--workdir", str(tmp_path), "--params", str(params_file),
                                  "--today", day.isoformat(), "--out", str(out)])
        assert res.exit_code == 0, res.output
        return res.output, sorted(out.rglob("*.xlsx"))

    text, books = run(today)
    assert "4 overdue warnings" in text and len(books) == 4  # one 红 per township of both counties
    text, books = run(today + timedelta(days=31))
    assert "12 overdue warnings" in text
    # the seeded tasks (30 and 90 days) are overdue on day 91
    text, books = run(today + timedelta(days=91))
    assert "8 overdue tasks" in text and len(books) == 4
    wb_path = next(b for b in books if "兴兴镇" in b.name)
    assert wb_path.parent.name == "青石县" and re.search(r"逾期督办_兴兴镇_\d{4}W\d{2}\.xlsx$", wb_path.name)
    wb = load_workbook(wb_path)
    ws = wb["逾期预警"]
    rows = list(ws.iter_rows(min_row=2, values_only=False))
    assert len(rows) == 3 and all(c.data_type == "s" for r in rows for c in r)
    assert {r[1].value for r in rows} == {"入户核实"}
    assert len(list(wb["逾期任务"].iter_rows(min_row=2))) == 2
    with zipfile.ZipFile(wb_path) as z:
        assert not any(b"<f>" in z.read(n) for n in z.namelist() if n.startswith("xl/worksheets/"))
    body = "".join(str(c.value) for r in rows for c in r)
    assert not any(i in body for i in seeded.id_numbers)
