"""Error bodies: every error carries ``detail`` and a Chinese ``message_zh`` for operators.

Validation errors name the field path and the problem and never echo the submitted value (it may
be an ID number, a name or a health status).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fangpin.household_json import errors_zh
from serving.middleware import log_exception

log = logging.getLogger(__name__)

_ZH = {
    400: "请求有误",
    401: "缺少或无效的 API 密钥（请求头 X-API-Key）",
    403: "无权访问：超出本密钥的权限或范围",
    404: "接口不存在",
    405: "不支持该请求方法",
    409: "状态冲突",
    413: "请求体或批量过大",
    415: "请求体类型不受支持（应为 application/json）",
    429: "请求过于频繁，请稍后再试",
    503: "服务暂不可用",
}


class ApiError(Exception):
    """An error with a status, an English detail and a Chinese message."""

    def __init__(self, status: int, detail: str, message_zh: str):
        self.status, self.detail, self.message_zh = status, detail, message_zh


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        items = errors_zh(list(exc.errors()))
        first = items[0] if items else {"path": "", "message_zh": ""}
        summary = f"请求数据有误，共 {len(items)} 处；第一处：{first['path']}：{first['message_zh']}"
        return JSONResponse(status_code=422, content={"detail": items, "message_zh": summary})

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"detail": exc.detail, "message_zh": exc.message_zh})

    from fangpin.errors import UserError

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError) -> JSONResponse:
        # A mistake in the request or the county's configuration (e.g. no monitoring line for the
        # posted quarter's year): its two sentences name what to fix and quote no personal data.
        return JSONResponse(status_code=422, content={"detail": exc.en, "message_zh": exc.zh})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        zh = getattr(exc, "message_zh", None) or _ZH.get(exc.status_code, "请求失败")
        return JSONResponse(status_code=exc.status_code, headers=getattr(exc, "headers", None),
                            content={"detail": exc.detail, "message_zh": zh})

    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from fangpin.store.tx import StoreBusy, is_busy

    def _busy(request: Request, exc: Exception):
        """503 + Retry-After: a Chinese page for the cadre page, JSON elsewhere."""
        secs = getattr(exc, "retry_after", 1)
        headers = {"Retry-After": str(secs)}
        log.warning("store busy (%s) on %s %s", type(exc).__name__, request.method, request.url.path[:80])
        if request.url.path.startswith("/cadre/") and hasattr(request.app.state, "templates"):
            return request.app.state.templates.TemplateResponse(
                request, "busy.html", {"retry_after": secs, "who": None}, status_code=503, headers=headers)
        return JSONResponse(status_code=503, headers=headers,
                            content={"detail": "store busy, retry later", "message_zh": "系统繁忙，请稍后重试"})

    @app.exception_handler(StoreBusy)
    async def _store_busy(request: Request, exc: StoreBusy):
        return _busy(request, exc)

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(request: Request, exc: PoolTimeout):
        return _busy(request, exc)

    @app.exception_handler(DBAPIError)
    async def _db_error(request: Request, exc: DBAPIError):
        if is_busy(exc):
            return _busy(request, exc)
        log_exception(exc, request.method, request.url.path)
        return JSONResponse(status_code=500, content=_INTERNAL)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged by type and place only: the message of an arbitrary exception may quote input data.
        log_exception(exc, request.method, request.url.path)
        return JSONResponse(status_code=500, content=_INTERNAL)


_INTERNAL = {"detail": "internal error", "message_zh": "服务内部错误"}
