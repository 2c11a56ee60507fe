"""API keys in the ``X-API-Key`` header: verified by the store (hashed at rest, constant-time
comparison), each with a role and a scope (``*``, a county, or ``county/township``).

Every ``/v1/*`` request has its key verified by :class:`serving.middleware.Guard` before its body
is read (failed attempts rate-limited and audited); the dependency here takes that result. The
dependencies are ``async``: a key verified in the last few seconds is answered from the store's
short cache (fangpin.store.Store, ``key_cache_s``) without leaving the event loop; any other key is
looked up in the thread pool."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader

from fangpin.store import ApiKeyInfo

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="API 密钥（由 `fangpin keys add` 生成）")

# What each role may do. Every role sees only its own scope. ``department`` (a county department
# such as 医保 or 民政, scoped to a county) only posts events.
CAN_SCORE = frozenset({"county_system", "analyst", "admin", "township_cadre"})
CAN_READ = frozenset({"county_system", "analyst", "admin", "township_cadre", "county"})
CAN_FEEDBACK = frozenset({"county_system", "township_cadre", "admin"})
CAN_EVENTS = frozenset({"county_system", "department", "admin"})
CAN_RELOAD = frozenset({"admin"})
# clues from every channel (POST /v1/clues): county systems, departments (their 部门预警 that is not a
# structured event, see docs/warnings.md), township cadres
CAN_CLUE = frozenset({"county_system", "department", "township_cadre", "admin"})
# the county view (/county/): county staff and analysts
CAN_COUNTY_VIEW = frozenset({"county", "analyst", "admin"})

UNAUTHORIZED_ZH = "缺少或无效的 API 密钥（请求头 X-API-Key）"
FORBIDDEN_ZH = "无权访问：超出本密钥的权限或范围"


class Forbidden(HTTPException):
    """403 with one fixed body: it never says whether the thing asked for exists."""

    def __init__(self) -> None:
        super().__init__(status_code=403, detail="forbidden")


async def principal(request: Request, key: str | None = Depends(api_key_header)) -> ApiKeyInfo:
    from starlette.concurrency import run_in_threadpool

    store = request.app.state.store
    info = getattr(request.state, "api_key", None)  # verified by serving.middleware.Guard
    if info is None and key:
        info = store.cached_key(key) or await run_in_threadpool(store.verify_key, key)
    if info is None:
        raise HTTPException(status_code=401, detail="invalid or missing API key",
                            headers={"WWW-Authenticate": "X-API-Key"})
    request.state.key_id = info.id
    return info


def require(roles: frozenset[str]):
    async def dep(who: ApiKeyInfo = Depends(principal)) -> ApiKeyInfo:
        if who.role not in roles:
            raise Forbidden()
        return who

    return dep
