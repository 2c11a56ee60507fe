"""The county view in a real headless Chromium, on a phone and on a desktop: sign in with a county
key, see per township warnings by level and channel, visits due and overdue, verification
outcomes, identifications read back from the export, support plans on time, eliminated and 返贫;
the funnel per quarter; where risk and identifications concentrate; the conflicts; every clue.
The four charts are SVG documents the app draws itself, each with bars; a route handler fails the
test on any request that leaves the app. Screenshots under tests/artifacts/."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from live_server import live_server
from seed_loop import seed_loop
from seed_warnings import seed_store

from fangpin.config import load_params

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
VIEWPORTS = {"phone": dict(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                           has_touch=True),
             "desktop": dict(viewport={"width": 1366, "height": 900})}


def _sign_in(page, url: str, key: str) -> None:
    page.goto(f"{url}/county/")
    assert page.url.endswith("/county/login")
    page.fill("#key", key)
    page.click("button[type=submit]")


@pytest.mark.parametrize("device", ["phone", "desktop"])
def test_county_view_renders_charts_and_loads_nothing_external(browser, gate, tmp_path, device):
    from playwright.sync_api import expect

    from serving.app import create_app

    params = load_params()
    seeded = seed_store(f"sqlite:///{tmp_path / 'warnings.db'}", params)
    now = datetime.now(UTC)
    seed_loop(seeded, params, now)
    _, county_key = seeded.store.add_key("county", "青石县", label="county_view")
    ARTIFACTS.mkdir(exist_ok=True)
    app = create_app(params, store=seeded.store, load_model=False, clock=lambda: now)
    with live_server(app) as url:
        ctx = browser.new_context(locale="zh-CN", **VIEWPORTS[device])
        page = ctx.new_page()
        gate = gate(url)  # anything leaving the app fails the test
        page.route("**/*", gate)

        _sign_in(page, url, seeded.keys["cadre_a1"])  # a township key is not a county key
        expect(page.locator(".error")).to_contain_text("不是县级或分析人员的密钥")
        _sign_in(page, url, county_key)
        expect(page).to_have_url(re.compile(r"/county/$"))
        expect(page.locator("h1")).to_contain_text("青石县")

        # four charts, each a loaded image with bars drawn
        charts = page.locator("img.chart")
        expect(charts).to_have_count(4)
        page.wait_for_function("() => [...document.querySelectorAll('img.chart')].every(i => i.complete)")
        sizes = charts.evaluate_all("els => els.map(e => [e.naturalWidth, e.naturalHeight, e.clientWidth])")
        assert all(w > 100 and h > 100 and cw > 100 for w, h, cw in sizes), sizes
        for src in charts.evaluate_all("els => els.map(e => e.getAttribute('src'))"):
            r = page.request.get(url + src)
            assert r.status == 200 and r.headers["content-type"].startswith("image/svg+xml")
            body = r.text()
            assert len(re.findall(r'id="bar-', body)) >= 2, src  # bars, not an empty frame
            # nothing inside refers outside (the W3C namespace and DTD names are never fetched)
            assert not re.search(r'(href|src)="(?!#)|url\((?!#)', body), src
            assert "http" not in re.sub(r'"http://www\.w3\.org/[^"]*"', "", body), src
        # per township (the county's own only)
        table = page.locator("[data-testid=townships]")
        expect(table).to_contain_text("兴兴镇")
        expect(table).to_contain_text("安乐镇")
        assert "河口镇" not in page.inner_text("body")
        row = page.locator("[data-testid=townships] tbody tr", has_text="兴兴镇").first
        cells = row.locator("td").all_inner_texts()
        # warnings 4, 红1 黄2 蓝1, channels, clues 3, visits open, due soon, overdue 1, included 2 (one by the
        # ledger over the cadre's 排除), excluded 0, decision overdue 0, identified 2, support 1/1, …
        assert cells[0] == "4" and cells[1:4] == ["1", "2", "1"] and cells[5] == "3" and cells[8] == "1"
        assert cells[9] == "2" and cells[12] == "2" and cells[13] == "1/1"
        expect(page.locator("[data-testid=kpi-return]")).to_have_text("1")
        expect(page.locator("[data-testid=conflicts]")).to_contain_text("以台账为准")
        expect(page.locator("[data-testid=funnel]")).to_contain_text("2024Q2")
        clues = page.locator("[data-testid=clues] tbody tr")
        expect(clues).to_have_count(4)
        expect(page.locator("[data-testid=clues]")).to_contain_text("农户自主申报")
        expect(page.locator("[data-testid=clues]")).to_contain_text("并入已有预警")
        expect(page.locator("[data-testid=overdue]")).to_contain_text("兴兴镇")
        body = page.inner_text("body")
        assert not any(i in body for i in seeded.id_numbers)
        page.screenshot(path=str(ARTIFACTS / f"county_view_{device}.png"), full_page=True)

        # another county is not this key's to see
        resp = page.goto(f"{url}/county/?county=白河县")
        assert resp.status == 403
        assert page.request.get(f"{url}/county/charts/levels.svg?county=白河县").status == 403
        ctx.close()

        # an analyst of every county picks the county on the page
        ctx = browser.new_context(locale="zh-CN", **VIEWPORTS[device])
        page = ctx.new_page()
        page.route("**/*", gate)
        _sign_in(page, url, seeded.keys["analyst"])
        expect(page).to_have_url(re.compile(r"/county/$"))
        page.select_option("#county", "白河县")
        page.click("form.filters button")
        expect(page.locator("h1")).to_contain_text("白河县")
        expect(page.locator("[data-testid=townships]")).to_contain_text("河口镇")
        ctx.close()

    assert gate.inside and not gate.outside, f"requests left the app: {gate.outside}"
    rows = seeded.store.audit_rows()
    assert {"GET /county/", "GET /county/charts/levels.svg"} <= {r["endpoint"] for r in rows}
    assert "forbidden" in {r["outcome"] for r in rows if r["endpoint"] == "GET /county/"}
