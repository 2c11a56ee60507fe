"""Pure ASGI middlewares of the service (they run before FastAPI reads or parses a request body).

- :class:`RequestContext` (outermost): a request id per request (``X-Request-ID``: the client's
  if it is a plain token, else a new one), echoed in the response and put on every log line;
  security headers on every response; and the last line of defence for errors: an exception that
  nothing handled is logged by type, place (module:function:line) and request id, never with its
  message or traceback (they may quote SQL parameters, request bodies or pydantic inputs), and
  answered with a 500 JSON body. Nothing reaches the server's own "Exception in ASGI application"
  traceback.
- :class:`Guard`: for ``/v1/*``, the API key is verified first (a key verified in the last seconds
  from the store's cache, else in the thread pool), so a request without a valid key is refused
  before its body is read; failed attempts are rate-limited per client address and per key id
  (429 + ``Retry-After``) and audited (key id only); then the body is limited in size, from
  ``Content-Length`` and by counting while it streams (413).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import deque
from contextvars import ContextVar

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

REQUEST_ID: ContextVar[str] = ContextVar("fangpin_request_id", default="-")
_RID_OK = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# Every page is served by the app itself (county intranets have no internet): no external source.
CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
# The interactive docs (Swagger UI, served by the app from the fastapi-offline package's files)
# start with an inline script and style: the only page allowed that (it holds no personal data).
# Still nothing from outside the app. (No ReDoc: its bundle always fetches a logo from a CDN.)
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
DOCS_PATHS = ("/docs",)


def log_exception(exc: BaseException, method: str = "", path: str = "") -> None:
    """Log an unexpected exception by type, place and request id only."""
    from fangpin.logs import exception_place

    log.error("unhandled %s at %s on %s %s [request %s]", type(exc).__name__, exception_place(exc),
              method, path[:80], REQUEST_ID.get())


async def send_json(send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    data = orjson.dumps(body)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


class RequestContext:
    def __init__(self, app, *, https: bool = False):
        self.app = app
        self.https = https

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        rid = given if _RID_OK.match(given) else uuid.uuid4().hex[:16]
        token = REQUEST_ID.set(rid)
        path = scope.get("path", "")
        started = False

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                h = MutableHeaders(scope=message)
                h["X-Request-ID"] = rid
                h.setdefault("Content-Security-Policy", DOCS_CSP if path.startswith(DOCS_PATHS) else CSP)
                h.setdefault("X-Frame-Options", "DENY")
                h.setdefault("X-Content-Type-Options", "nosniff")
                h.setdefault("Referrer-Policy", "no-referrer")
                h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
                if not path.startswith(("/static/", "/static-docs/")):
                    h.setdefault("Cache-Control", "no-store")  # pages and answers hold personal data
                if self.https:
                    h.setdefault("Strict-Transport-Security", "max-age=31536000")
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:  # noqa: BLE001 - the last line of defence, see the module doc
            log_exception(exc, scope.get("method", ""), path)
            if not started:
                await send_json(send_with_headers, 500, {
                    "detail": "internal error", "message_zh": "服务内部错误", "request_id": rid})
        finally:
            REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (``%(request_id)s`` in a format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


# --------------------------------------------------------------------------------- limits, auth


class BodyTooLarge(HTTPException):
    """Raised from the counting ``receive``: FastAPI lets HTTPException through its body reading."""

    def __init__(self, limit: int):
        body = _too_large(limit)
        super().__init__(status_code=413, detail=body["detail"])
        self.message_zh = body["message_zh"]


class FailureLimiter:
    """Failed authentications per client address and per presented key id, in a sliding window:
    ``limit`` failures within ``window_s`` block further attempts until the oldest leaves it."""

    MAX_TRACKED = 100_000

    def __init__(self, limit: int, window_s: float):
        self.limit, self.window = int(limit), float(window_s)
        self._fails: dict[tuple, deque] = {}
        self._lock = threading.Lock()

    def _prune(self, q: deque, now: float) -> None:
        while q and q[0] <= now - self.window:
            q.popleft()

    def blocked(self, *who: tuple) -> float:
        """Seconds until these clients may try again (0: not blocked)."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for k in who:
                q = self._fails.get(k)
                if q is None:
                    continue
                self._prune(q, now)
                if len(q) >= self.limit:
                    wait = max(wait, q[0] + self.window - now)
        return wait

    def fail(self, *who: tuple) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._fails) >= self.MAX_TRACKED:
                for k in [k for k, q in self._fails.items() if not q or q[-1] <= now - self.window]:
                    del self._fails[k]
                if len(self._fails) >= self.MAX_TRACKED:
                    self._fails.clear()
            for k in who:
                q = self._fails.setdefault(k, deque())
                self._prune(q, now)
                q.append(now)


def key_id_of(key: str | None) -> str | None:
    """The key id of a presented key of the ``fpk_<id>_<secret>`` form (what audit rows may hold)."""
    from fangpin.store.repo import KEY_PREFIX

    parts = (key or "").split("_", 2)
    if len(parts) == 3 and parts[0] == KEY_PREFIX and re.fullmatch(r"[0-9a-f]{12}", parts[1]):
        return parts[1]
    return None


def client_of(scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "?"


UNAUTHORIZED = {"detail": "invalid or missing API key", "message_zh": "缺少或无效的 API 密钥（请求头 X-API-Key）"}


def too_many(wait: float) -> tuple[dict, dict]:
    secs = max(1, int(wait + 0.999))
    return ({"detail": "too many failed authentications", "message_zh": f"密钥验证失败次数过多，请 {secs} 秒后再试"},
            {"Retry-After": str(secs)})


def busy(exc: BaseException) -> tuple[dict, dict]:
    secs = getattr(exc, "retry_after", 1)
    return ({"detail": "store busy", "message_zh": "系统繁忙，请稍后重试"}, {"Retry-After": str(secs)})


class Guard:
    def __init__(self, app, *, body_limit: int, form_limit: int, limiter: FailureLimiter):
        self.app = app
        self.body_limit = int(body_limit)
        self.form_limit = int(form_limit)
        self.limiter = limiter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = Headers(scope=scope)
        if path.startswith("/v1/"):
            info = await self._authenticate(scope, headers, send)
            if info is None:
                return
            scope.setdefault("state", {})["api_key"] = info
        limit = self.body_limit if path.startswith("/v1/") else self.form_limit
        cl = headers.get("content-length")
        if cl is not None:
            if not cl.isdigit():
                await send_json(send, 400, {"detail": "invalid Content-Length", "message_zh": "请求头 Content-Length 无效"})
                return
            if int(cl) > limit:
                await send_json(send, 413, _too_large(limit), {"Connection": "close"})
                return
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)

    async def _authenticate(self, scope, headers: Headers, send):
        from starlette.concurrency import run_in_threadpool

        from fangpin.store.tx import StoreBusy, is_busy

        store = scope["app"].state.store
        key = headers.get("x-api-key") or None
        info = store.cached_key(key) if key else None
        if info is not None:
            return info
        kid = key_id_of(key)
        who = [("addr", client_of(scope))] + ([("key", kid)] if kid else [])
        wait = self.limiter.blocked(*who)
        if wait > 0:
            body, h = too_many(wait)
            await send_json(send, 429, body, h)
            return None
        try:
            info = await run_in_threadpool(store.verify_key, key) if key else None
        except Exception as exc:
            if isinstance(exc, StoreBusy) or is_busy(exc):
                body, h = busy(exc)
                await send_json(send, 503, body, h)
                return None
            raise
        if info is None:
            self.limiter.fail(*who)
            _audit_failure(store, scope, kid, "auth_failed" if key else "auth_missing")
            await send_json(send, 401, UNAUTHORIZED, {"WWW-Authenticate": "X-API-Key"})
            return None
        return info


def _too_large(limit: int) -> dict:
    return {"detail": f"request body exceeds {limit} bytes",
            "message_zh": f"请求体过大（上限 {limit // 1024} KB），请分批提交"}


def _audit_failure(store, scope, key_id: str | None, outcome: str) -> None:
    """One audit row per failed authentication: the key id only (never the presented key)."""
    from fangpin.store.tx import StoreBusy

    # the path's fixed words only (a presented path may hold anything): /v1/warnings/{…}/feedback
    parts = [p if re.fullmatch(r"[a-z_]{1,32}", p) else "{…}" for p in scope.get("path", "").split("/")[1:8]]
    endpoint = f"{scope.get('method', '')[:10]} /" + "/".join(parts)
    try:
        store.audit_enqueue(key_id=key_id, endpoint=endpoint, outcome=outcome)
    except (StoreBusy, ValueError) as exc:
        log.warning("failed authentication not audited (%s)", type(exc).__name__)
