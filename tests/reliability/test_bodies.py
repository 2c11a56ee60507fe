"""Oversized and malformed request bodies over real HTTP: a request without a valid key is refused
before its body is read; a body over the limit is refused from Content-Length (before it is sent)
and while it streams (chunked); malformed bodies are 4xx; repeated failed keys are slowed down
(429) and audited with the key id only."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from api_tiny_model import fixed_loader
from faults import record, serving_params
from live_server import live_server
from seed_warnings import hdr, seed_store

pytestmark = [pytest.mark.reliability, pytest.mark.xdist_group("reliability_http")]

BIG = 50 * 1024 * 1024


def raw_request(url: str, head: str, body_prefix: bytes = b"", timeout: float = 10.0) -> tuple[int, dict, float]:
    """Send the request head (and the first bytes of a much larger body), then read the answer
    without sending the rest: a server that waits for the whole body never answers."""
    host, port = url.removeprefix("http://").split(":")
    t = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head.encode("latin-1") + body_prefix)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    took = time.perf_counter() - t
    status_line, *lines = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = dict(ln.split(": ", 1) for ln in lines if ": " in ln)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, took


def _head(path: str, length: int | None, key: str | None = None, chunked: bool = False) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json"]
    if key:
        lines.append(f"X-API-Key: {key}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    return "\r\n".join(lines) + "\r\n\r\n"


def test_bodies_are_bounded_and_keys_checked_before_reading(params, tiny_model, tmp_path):
    from serving.app import create_app

    seeded = seed_store(f"sqlite:///{tmp_path / 'warnings.db'}", params, per_township=2)
    # body limit 80 KiB; a verified key is remembered for a minute (a client that is slowed down
    # after failed keys still passes with a key it used successfully)
    p = serving_params(params, max_batch=10, auth_failures=5, auth_window_s=60, key_cache_seconds=60)
    limit = p.serving.body_limit
    app = create_app(p, store=seeded.store, loader=fixed_loader(tiny_model))
    figures = {}
    with live_server(app) as url:
        # 50 MB announced, no key: 401 at once, the body is never read
        status, h, took = raw_request(url, _head("/v1/score", BIG), b'{"households": [')
        assert status == 401 and h.get("www-authenticate") == "X-API-Key"
        figures["401_no_key_50MB_s"] = round(took, 3)
        # with a valid key, over the limit: 413 from Content-Length, before the body is sent
        status, h, took = raw_request(url, _head("/v1/score", BIG, seeded.keys["county_a"]), b'{"h')
        assert status == 413 and took < 10
        figures["413_content_length_s"] = round(took, 3)
        # chunked, no Content-Length: counted while it streams
        with httpx.Client(base_url=url, headers=hdr(seeded, "county_a"), timeout=30) as c:
            def chunks():
                for _ in range(64):
                    yield b" " * 4096  # 256 KiB of whitespace: valid JSON padding, over the limit
            r = c.post("/v1/score", content=chunks(), headers={"content-type": "application/json"})
            assert r.status_code == 413 and "上限" in r.json()["message_zh"], r.text
            # malformed: not JSON, a JSON with the wrong shape, an invalid Content-Length
            r = c.post("/v1/score", content=b'{"households": [', headers={"content-type": "application/json"})
            assert r.status_code == 422 and r.json()["detail"][0]["path"]
            r = c.post("/v1/score", json={"households": "x" * 100})
            assert r.status_code == 422
            r = c.post("/v1/score", json={"households": [{}] * 11})
            assert r.status_code in (413, 422)
            r = c.post(f"/v1/warnings/{seeded.warnings[0].id}/feedback", content=b"\xff\xfe" * 10,
                       headers={"content-type": "application/json"})
            assert r.status_code == 422
            # just under the limit is accepted for reading (then validated)
            r = c.post("/v1/score", content=b" " * (limit - 100) + b'{"households": []}',
                       headers={"content-type": "application/json"})
            assert r.status_code == 422  # an empty batch is invalid, but the body was read
        # the cadre page's forms have their own, smaller limit
        status, _, _ = raw_request(url, "POST /cadre/login HTTP/1.1\r\nHost: t\r\nContent-Type: "
                                   f"application/x-www-form-urlencoded\r\nContent-Length: {BIG}\r\n\r\n", b"key=")
        assert status == 413
        status, _, _ = raw_request(url, "POST /v1/score HTTP/1.1\r\nHost: t\r\nContent-Length: 12x\r\n\r\n")
        assert status == 400

        # failed keys: 5 per window and client (the keyless 50 MB request above was the first),
        # then 429 with Retry-After; a key verified before still passes
        wrong = seeded.keys["county_b"][:-4] + "AAAA"  # a real key id, a wrong secret
        with httpx.Client(base_url=url, timeout=30) as c:
            codes = [c.get("/v1/warnings", headers={"X-API-Key": wrong}).status_code for _ in range(8)]
            assert codes == [401] * 4 + [429] * 4
            r = c.get("/v1/warnings", headers={"X-API-Key": "guess"})
            assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
            r = c.get("/v1/warnings", headers=hdr(seeded, "county_a"))  # verified before: cached
            assert r.status_code == 200
    rows = seeded.store.audit_rows()
    failed = [r for r in rows if r["outcome"] in ("auth_failed", "auth_missing")]
    assert len(failed) == 1 + 4  # the 50 MB request without a key, then 4 wrong keys (not the 429s)
    assert {r["key_id"] for r in failed if r["outcome"] == "auth_failed"} == {seeded.key_ids["county_b"]}
    assert "AAAA" not in json.dumps(rows, default=str)
    record("bodies", figures)
    seeded.store.dispose()
