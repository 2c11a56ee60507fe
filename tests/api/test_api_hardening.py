"""Hardening seen through the HTTP interface: security headers and a request id on every
response, the cadre session (Secure cookie behind HTTPS, logout ends it on the server), value
ranges from the contract (422 naming the field), personal numbers refused in feedback text, and a
busy store answered 503 with Retry-After."""

from __future__ import annotations

import re

import pytest
from seed_warnings import hdr

from fangpin.household_json import example_household, example_id


def _login(c, key: str):
    csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/cadre/login").text).group(1)
    r = c.post("/cadre/login", data={"key": key, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return r


def test_every_response_has_security_headers_and_a_request_id(client, seeded):
    for r in (client.get("/health"), client.get("/cadre/login"), client.get("/v1/warnings"),
              client.get("/v1/warnings", headers=hdr(seeded, "analyst")), client.get("/static/app.css"),
              client.get("/nope")):
        h = r.headers
        assert re.fullmatch(r"[0-9a-f]{16}", h["x-request-id"])
        csp = h["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "http" not in csp
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in h  # plain HTTP here
    assert client.get("/v1/warnings", headers=hdr(seeded, "analyst")).headers["cache-control"] == "no-store"
    # a client's own request id is echoed when it is a plain token, replaced otherwise
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert client.get("/health", headers={"X-Request-ID": "a b\n"}).headers["x-request-id"] != "a b\n"


def test_behind_https_the_cookie_is_secure_and_hsts_is_sent(params, seeded):
    p = params.model_copy(update={"serving": params.serving.model_copy(update={"https": True})})
    from fastapi.testclient import TestClient

    from serving.app import create_app

    app = create_app(p, store=seeded.store, loader=lambda *a: None, load_model=False)
    with TestClient(app, base_url="https://testserver") as c:
        r = _login(c, seeded.keys["cadre_a1"])
        cookie = r.headers["set-cookie"]
        assert "fangpin_session=" in cookie and "secure" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert r.headers["strict-transport-security"].startswith("max-age=")


def test_logout_ends_the_session_on_the_server(client, seeded):
    _login(client, seeded.keys["cadre_a1"])
    saved = client.cookies.get("fangpin_session")
    assert client.get("/cadre/", follow_redirects=False).status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/cadre/").text).group(1)
    assert client.post("/cadre/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    client.cookies.clear()
    client.cookies.set("fangpin_session", saved)  # the cookie copied before logging out
    r = client.get("/cadre/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/cadre/login"


def test_a_revoked_key_ends_its_sessions(client, seeded):
    _login(client, seeded.keys["cadre_a1"])
    assert client.get("/cadre/", follow_redirects=False).status_code == 200
    seeded.store.revoke_key(seeded.key_ids["cadre_a1"])
    assert client.get("/cadre/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("field, value", [
    ("income_per_capita", -1e308), ("income_per_capita", 1e308), ("wage_income", 1e300),
    ("medical_out_of_pocket", -5.0), ("farmland_mu", 1e9), ("prev_income_per_capita", -1e308),
])
def test_values_outside_the_contract_ranges_are_422_naming_the_field(client, seeded, field, value):
    h = example_household()
    h[field] = value
    r = client.post("/v1/score", json={"households": [h]}, headers=hdr(seeded, "county_a"))
    assert r.status_code == 422, r.text
    item = r.json()["detail"][0]
    assert item["path"] == f"households[0].{field}" and item["field_zh"]
    assert "inf" not in r.text and str(value) not in r.text


def test_feedback_text_with_id_or_phone_numbers_is_refused(client, seeded):
    full = example_id("610923", "19680315", "215")
    w = seeded.of("青石县", "兴兴镇")[0]
    for text in (full, f"{full[:6]} {full[6:14]} {full[14:]}", f"{full[:6]}-{full[6:14]}-{full[14:]}",
                 "电话13800138000", "联系 138-0013-8000", "+86 138 0013 8000"):
        r = client.post(f"/v1/warnings/{w.id}/feedback", json={"status": "已核实·排除", "reason": text, "actor": "张伟"},
                        headers=hdr(seeded, "cadre_a1"))
        assert r.status_code == 409 and "电话" in r.json()["message_zh"], text
    ok = client.post(f"/v1/warnings/{w.id}/feedback",
                     json={"status": "已核实·排除", "reason": "户编号 610923003000101，收入稳定", "actor": "张伟"},
                     headers=hdr(seeded, "cadre_a1"))
    assert ok.status_code == 200  # a 15-digit household number is not personal data


def test_a_busy_store_is_503_with_retry_after_json_and_page(client, seeded, monkeypatch):
    from fangpin.store.tx import StoreBusy

    def busy(*a, **k):
        raise StoreBusy("test", 3)

    monkeypatch.setattr(seeded.store, "record_feedback", busy)
    w = seeded.of("青石县", "兴兴镇")[0]
    r = client.post(f"/v1/warnings/{w.id}/feedback", json={"status": "已核实·纳入监测", "actor": "张伟"},
                    headers=hdr(seeded, "cadre_a1"))
    assert r.status_code == 503 and r.headers["retry-after"] == "3" and r.json()["message_zh"] == "系统繁忙，请稍后重试"
    _login(client, seeded.keys["cadre_a1"])
    page = client.get(f"/cadre/w/{w.id}").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = client.post(f"/cadre/w/{w.id}/outcome", data={"outcome": "included", "actor": "张伟", "csrf": csrf})
    assert r.status_code == 503 and "系统繁忙" in r.text and r.headers["content-type"].startswith("text/html")
