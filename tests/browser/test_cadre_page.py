"""The cadre page in a real headless Chromium (Debian's, driven by Playwright): sign in with a
township key, see the visit list by deadline with the list each household is on and, apart from
it, the township's 保障缺口 tasks with their department; open a warning (figures that add up, its
household's task), record the visit outcome, see the status change. Phone viewport;
screenshots are kept under tests/artifacts/ (gitignored); no request leaves the server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from live_server import live_server
from seed_warnings import seed_store

from fangpin.config import load_params

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def test_sign_in_open_warning_record_outcome(browser, tmp_path):
    from playwright.sync_api import expect

    from serving.app import create_app

    params = load_params()
    seeded = seed_store(f"sqlite:///{tmp_path / 'warnings.db'}", params)
    mine = seeded.of("青石县", "兴兴镇")
    ARTIFACTS.mkdir(exist_ok=True)
    app = create_app(params, store=seeded.store, load_model=False)  # the page needs no model
    with live_server(app) as url:
        ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True, locale="zh-CN")
        page = ctx.new_page()
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))

        page.goto(f"{url}/cadre/")
        expect(page).to_have_url(re.compile(r"/cadre/login$"))
        page.fill("#key", seeded.keys["cadre_b1"] + "x")  # a wrong key is refused
        page.click("button[type=submit]")
        expect(page.locator(".error")).to_contain_text("密钥无效")
        page.fill("#key", seeded.keys["cadre_a1"])
        page.click("button[type=submit]")
        expect(page).to_have_url(re.compile(r"/cadre/$"))

        items = page.locator("li.warning")
        expect(items).to_have_count(len(mine))
        # by deadline (which follows the level), each saying which list it is on
        shown = [next(w for w in mine if w.id == h.split("/cadre/w/")[1]) for h in
                 page.locator("a[data-testid=warning-link]").evaluate_all("els => els.map(e => e.getAttribute('href'))")]
        assert [w.deadline for w in shown] == sorted(w.deadline for w in mine)
        lists = page.locator("[data-testid=visit-list]").all_inner_texts()
        assert lists == [{"红": "入户核实（15日内）", "黄": "月度走访", "蓝": "半年复核"}[w.level] for w in shown]
        # the township's tasks, apart from the visit list
        my_tasks = [t for t in seeded.tasks if t.township == "兴兴镇"]
        tasks = page.locator("li.task")
        expect(tasks).to_have_count(len(my_tasks))
        for t in my_tasks:
            expect(page.locator("ul.tasks")).to_contain_text(f"{t.gap}：{t.measure}")
        expect(page.locator("li.task .dept")).to_contain_text(["教育", "住建"])  # earliest deadline first
        assert not any(t.township != "兴兴镇" and t.head_name in page.inner_text("ul.tasks") for t in seeded.tasks
                       if t.head_name not in {x.head_name for x in my_tasks})
        expect(page.locator("li.warning.overdue")).to_have_count(1)
        expect(page.locator(".overdue-tag").first).to_contain_text("已逾期")
        page.screenshot(path=str(ARTIFACTS / "cadre_list.png"), full_page=True)

        tasked = {t.household_id for t in seeded.tasks}
        target = next(w for w in mine if w.rule_hits and w.household_id in tasked)
        page.click(f"a[href='/cadre/w/{target.id}']")
        expect(page.locator("h1")).to_contain_text(target.head_name)
        body = page.inner_text("body")
        assert target.id_masked in body and not any(i in body for i in seeded.id_numbers)
        # one bar per reason and one for 其他因素, drawn from the figures, which add up
        expect(page.locator("svg.bars rect")).to_have_count(len(target.reasons) + 1)
        expect(page.locator("ol.reasons li")).to_have_count(len(target.reasons))
        figs = [float(x) for x in page.locator("svg.bars rect").evaluate_all("els => els.map(e => e.dataset.pp)")]
        assert figs == [r.prob_pp for r in target.reasons] + [target.other_pp]
        assert abs(sum(figs) - 100 * (target.probability - target.base_rate)) <= 0.1
        widths = [float(x) for x in page.locator("svg.bars rect").evaluate_all("els => els.map(e => e.getAttribute('width'))")]
        assert sorted(range(len(figs)), key=lambda i: abs(figs[i])) == sorted(range(len(widths)), key=lambda i: widths[i])
        expect(page.locator("[data-testid=figures]")).to_contain_text("全县基准概率 0.71%")
        expect(page.locator("[data-testid=other]")).to_contain_text("其他因素")
        expect(page.locator("[data-testid=hh-task]")).to_contain_text("住建")
        assert target.reasons[0].text in body
        assert "规则触发" in body and target.rule_hits[0].threshold in body
        assert target.measures[0].type in body
        expect(page.locator("[data-testid=status]")).to_contain_text("待核实")
        page.screenshot(path=str(ARTIFACTS / "cadre_warning.png"), full_page=True)

        # excluding without a reason is refused, with the form kept
        page.check("input[value=excluded]")
        page.fill("#actor", "张伟")
        page.click("form.outcome button[type=submit]")
        expect(page.locator(".error")).to_contain_text("须填写原因")
        page.fill("#reason", "已享受医保报销，收入稳定在监测线以上")
        page.click("form.outcome button[type=submit]")
        expect(page.locator(".ok")).to_contain_text("已记录")
        expect(page.locator("[data-testid=status]")).to_contain_text("已核实·排除")
        expect(page.locator("form.outcome")).to_have_count(0)  # closed: no second outcome
        page.screenshot(path=str(ARTIFACTS / "cadre_recorded.png"), full_page=True)

        page.goto(f"{url}/cadre/")
        expect(page.locator("li.warning")).to_have_count(len(mine) - 1)
        # another township's warning: refused, without saying whether it exists
        other = seeded.of("白河县")[0]
        resp = page.goto(f"{url}/cadre/w/{other.id}")
        assert resp.status == 403 and other.head_name not in page.inner_text("body")
        ctx.close()

    assert seeded.store.get_warning(target.id).status == "已核实·排除"
    assert [f.actor for f in seeded.store.feedback_history(target.id)] == ["张伟"]
    assert requested and all(u.startswith(url) for u in requested), "the page must load nothing external"
    rows = seeded.store.audit_rows()
    outcomes = [r["outcome"] for r in rows if r["endpoint"].startswith("POST /cadre/w/")]
    assert outcomes == ["rejected", "status:已核实·排除"]
    # the wrong key left an audit row with its key id only
    failed = [r for r in rows if r["outcome"] == "auth_failed"]
    assert [(r["endpoint"], r["key_id"]) for r in failed] == [("POST /cadre/login", seeded.key_ids["cadre_b1"])]
