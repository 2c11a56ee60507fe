"""The FastAPI application: scoring API for county systems and the warning page for cadres.

``create_app()`` builds the app and does nothing else; the lifespan opens the warning store
(migrated to the newest schema) and loads the model from ``params.serving.model_uri``
(``models:/return-risk@champion``) onto ``app.state``. Nothing happens at import time.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
DOCS_STATIC = "/static-docs"  # Swagger UI / ReDoc assets (serving.middleware.DOCS_PATHS)

DESCRIPTION = """\
防贫 fangpin：防止返贫动态监测风险评分服务。

- 县级系统：`POST /v1/score` 对一户或一批户评分（概率、等级、规则触发、原因、建议帮扶措施），按户编号使用台账截至最新季度的
  历史（响应中的 `history` 说明用了哪个季度的台账）；请求体可用 `fangpin households --ledger 台账目录 --events 部门数据目录
  --quarter 2024Q4 -o households.json` 从台账导出（县级系统应发送的内容：台账字段、成员及证件号码、部门事件，不含任何派生字段）；
- 部门：`POST /v1/events` 推送部门预警事件（证件号码、日期、类型、部门、金额），立即按该户台账快照与历史重新评分，等级提高时
  生成或提高预警（乡镇干部页面可见）；未匹配的事件保存并计数，同一事件只保存一次；
- 预警：`GET /v1/warnings`、`GET /v1/warnings/{id}`、`POST /v1/warnings/{id}/feedback`（入户核实结果）；
- 保障缺口任务：`GET /v1/tasks`（住房、饮水、医保、义务教育、兜底缺口，转责任部门办理）、`POST /v1/tasks/{id}/status`；
- 线索：`POST /v1/clues`（各渠道线索，立即评分，生成预警或并入已有预警）、`GET /v1/clues`；
- 期限：`GET /v1/overdue`（各乡镇逾期的入户核实、认定、帮扶计划）、`GET /v1/warnings/{id}/loop`、`POST /v1/warnings/{id}/support-plan`；
- 认证：请求头 `X-API-Key`；每个密钥有角色（county_system / department / township_cadre / county / analyst / admin）和范围（县或乡镇），
  只能看到、评分本范围内的户；
- 输入为台账约定的 JSON（字段名为规范英文名；取值可按台账原样填写，与导入台账时同样规范化）；字段有误返回 422，指出字段路径与问题（`message_zh`）。

乡镇干部的预警页面在 `/cadre/`，县级视图在 `/county/`。
"""


def _system_clock():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def create_app(params=None, *, store=None, loader=None, load_model: bool = True, clock=None) -> FastAPI:
    """Build the app. ``params`` defaults to :func:`fangpin.config.load_params`; ``store`` to the
    configured warning store; ``loader(params, uri) -> LoadedModel`` to the registered pyfunc;
    ``clock() -> datetime`` (aware, UTC) to the system clock: every deadline, "剩 n 天" and overdue
    list reads it (tests move it)."""
    from fastapi.staticfiles import StaticFiles
    from starlette.middleware.sessions import SessionMiddleware

    from fangpin.config import load_params
    from serving import api, county, errors, loop_api, pages
    from serving.middleware import FailureLimiter, Guard, RequestContext

    params = params if params is not None else load_params()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from functools import partial

        from fangpin.ids import params_key
        from fangpin.store import Store
        from serving.batcher import Batcher
        from serving.model import ModelHolder, default_loader
        from serving.scoring import Context, StoredThresholds, score_households

        p = params
        st = store if store is not None else Store.from_params(p)
        app.state.params = p
        app.state.store = st
        holder = ModelHolder(loader or default_loader, p, p.serving.model_uri)
        app.state.models = holder
        pages.setup(app, p, st)
        if load_model:
            holder.try_load()
        thresholds = StoredThresholds(st, p.serving.thresholds_refresh_s)
        app.state.thresholds = thresholds
        app.state.scoring = Context(store=st, id_key=params_key(p), params=p, thresholds=thresholds)
        batcher = Batcher(holder, partial(score_households, ctx=app.state.scoring),
                          max_households=p.serving.batch_households)
        app.state.batcher = batcher
        batcher.start()
        yield
        batcher.stop()
        if store is None:
            st.dispose()  # writes the audit rows still queued
        else:
            st.flush_audit(timeout=30)

    # Swagger UI served from the fastapi-offline package's static files, never a CDN (county
    # intranets have no internet); no ReDoc, whose bundle always fetches a logo from its CDN
    app = FastAPIOffline(
        static_url=DOCS_STATIC,
        redoc_url=None,
        title="防贫 fangpin 风险评分与预警 API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "评分", "description": "对台账中的户评分"},
            {"name": "部门事件", "description": "部门预警事件实时推送与重新评分"},
            {"name": "预警", "description": "预警查询与入户核实反馈"},
            {"name": "任务", "description": "保障缺口任务：转责任部门办理"},
            {"name": "线索", "description": "各渠道线索：农户自主申报、干部排查、部门预警、群众反映、村级排查"},
            {"name": "期限", "description": "各环节期限与逾期清单"},
            {"name": "模型", "description": "模型版本、模型卡与热切换"},
            {"name": "运维", "description": "存活与就绪检查"},
        ],
    )
    errors.install(app)
    sv = params.serving
    # Signed (not encrypted) session cookie of the cadre page: holds only a session id (checked
    # against the store on every request, so logging out ends it everywhere) and a CSRF token.
    # SameSite=strict keeps it off cross-site form posts; forms also carry the CSRF token. Secure
    # (HTTPS only) when the service is reached over HTTPS.
    app.add_middleware(SessionMiddleware, secret_key=pages.session_secret(params),
                       session_cookie="fangpin_session", max_age=pages.SESSION_SECONDS, same_site="strict",
                       https_only=sv.https)
    # added last = outermost: request id, headers and errors around everything; then the key
    # check and the body limit, before FastAPI reads a body
    app.state.auth_limiter = FailureLimiter(sv.auth_failures, sv.auth_window_s)
    app.add_middleware(Guard, body_limit=sv.body_limit, form_limit=sv.max_form_bytes,
                       limiter=app.state.auth_limiter)
    app.add_middleware(RequestContext, https=sv.https)
    app.state.clock = clock or _system_clock
    app.include_router(api.router)
    app.include_router(loop_api.router)
    app.include_router(pages.router)
    app.include_router(county.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app
