"""The interactive API docs (/docs, Swagger UI) in a real headless Chromium: it renders the API's
own title and operations from assets the app serves itself; /redoc is not offered (ReDoc's bundle
always fetches a logo from its CDN). A county intranet
has no internet: a route handler fails the test on any request that leaves the app, and a
Content-Security-Policy violation in the console fails it too."""

from __future__ import annotations

import pytest
from live_server import live_server
from seed_warnings import seed_store

from fangpin.config import load_params

pytestmark = pytest.mark.browser


def test_docs_render_offline(browser, gate, tmp_path):
    from playwright.sync_api import expect

    from serving.app import create_app

    params = load_params()
    seeded = seed_store(f"sqlite:///{tmp_path / 'warnings.db'}", params)
    app = create_app(params, store=seeded.store, loader=lambda *a: None, load_model=False)
    with live_server(app) as url:
        page = browser.new_page()
        gate = gate(url)
        page.route("**/*", gate)
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.goto(url + "/docs")
        expect(page.locator(".swagger-ui .opblock").first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("防贫 fangpin 风险评分与预警 API").first).to_be_visible()
        assert "/v1/score" in page.content()
        assert any("/static-docs/" in u for u in gate.inside), gate.inside
        assert not gate.outside, f"the docs page requested outside the app: {gate.outside}"
        assert not [c for c in console if "Content Security Policy" in c], console
        page.close()
        import httpx

        assert httpx.get(url + "/redoc").status_code == 404
