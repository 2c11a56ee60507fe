"""JSON endpoints: scoring, warnings and feedback, health, model info, admin reload.

Every handler is a plain ``def``: FastAPI runs it in its thread pool, so model and store calls never
block the event loop. Every request that scores, reads or changes a warning leaves an audit row.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request

from fangpin import quarters as fq
from fangpin.store import ApiKeyInfo, WarningNotFound
from fangpin.warnings import VerificationError, WarningRecord
from serving import auth
from serving.batcher import ModelNotLoaded
from serving.errors import ApiError
from serving.schemas import (
    ErrorOut,
    EventsRequest,
    EventsResponse,
    FeedbackIn,
    HealthOut,
    ModelInfo,
    ReadyOut,
    ReloadOut,
    ScoreRequest,
    ScoreResponse,
    TaskOut,
    TaskPageOut,
    TaskStatusIn,
    WarningOut,
    WarningPageOut,
    events_examples,
    feedback_examples,
    score_examples,
)

log = logging.getLogger(__name__)
router = APIRouter()

_ERR = {"model": ErrorOut}
E401 = {401: {**_ERR, "description": "缺少或无效的 API 密钥"}}
E403 = {403: {**_ERR, "description": "无权访问（不说明记录是否存在）"}}
E422 = {422: {**_ERR, "description": "字段有误：指出字段路径与问题（中文 message_zh）"}}
E503 = {503: {**_ERR, "description": "模型未加载"}}
QuarterQ = Annotated[str | None, Query(pattern=r"^\d{4}Q[1-4]$", description="统计季度 YYYYQn",
                                       examples=["2024Q2"])]
PlaceQ = Annotated[str | None, Query(min_length=1, max_length=64)]
WarningId = Annotated[str, Path(min_length=1, max_length=64, description="预警编号")]


def audit(request: Request, who: ApiKeyInfo | None, endpoint: str, *, household_ids=(), levels=(),
          outcome: str, model_version: str | None = None) -> None:
    """Queue the request's audit row (written by the store's batched writer within milliseconds, so a
    read never waits for the write lock; a status change writes its row in its own transaction)."""
    request.app.state.store.audit_enqueue(
        key_id=who.id if who else None, endpoint=endpoint, household_ids=list(household_ids),
        levels=[lvl for lvl in levels if lvl], outcome=outcome, model_version=model_version,
    )


def _out(w: WarningRecord, request: Request) -> WarningOut:
    from fangpin.warnings import local_date

    return WarningOut(**dict(w), overdue=w.is_overdue(local_date(request.app.state.clock())))


# ------------------------------------------------------------------------------------ health


@router.get("/health", response_model=HealthOut, tags=["运维"], summary="存活检查")
async def health() -> HealthOut:
    # on the event loop: answers at once even when every worker thread waits for a busy store
    return HealthOut(status="ok")


@router.get("/ready", response_model=ReadyOut, tags=["运维"], summary="就绪检查（模型已加载、存储可达）",
            responses={503: {"model": ReadyOut, "description": "未就绪"}})
def ready(request: Request):
    from fastapi.responses import JSONResponse

    m = request.app.state.models.current
    try:
        store_ok = bool(request.app.state.store.ping())
    except Exception:  # noqa: BLE001 - reported as not ready
        store_ok = False
    body = ReadyOut(status="ready" if (m and store_ok) else "not ready", model_loaded=m is not None,
                    store_reachable=store_ok, model_version=m.version if m else None)
    return JSONResponse(status_code=200 if (m and store_ok) else 503, content=body.model_dump())


# ------------------------------------------------------------------------------------- model


def _model(request: Request):
    m = request.app.state.models.current
    if m is None:
        raise ApiError(503, "model not loaded", "模型尚未加载，请稍后重试或联系管理员")
    return m


@router.get("/v1/model", response_model=ModelInfo, tags=["模型"], summary="当前模型版本与模型卡",
            responses={**E401, **E503})
def model_info(request: Request, who: ApiKeyInfo = Depends(auth.require(auth.CAN_READ))) -> ModelInfo:
    m = _model(request)
    return ModelInfo(model_uri=m.uri, model_version=m.version, ruleset_version=m.ruleset_version,
                     loaded_at=m.loaded_at, explanations=m.explanations, card=m.card)


@router.post("/v1/admin/reload", response_model=ReloadOut, tags=["模型"],
             summary="切换到当前 @champion 模型（仅管理员；不中断进行中的请求）",
             responses={**E401, **E403, 503: {**_ERR, "description": "新模型加载失败，继续使用原模型"}})
def reload(request: Request, who: ApiKeyInfo = Depends(auth.require(auth.CAN_RELOAD))) -> ReloadOut:
    holder = request.app.state.models
    old = holder.current
    try:
        new = holder.load()
    except Exception as exc:  # noqa: BLE001 - the old model keeps serving
        log.error("reload failed (%s); keeping version %s", type(exc).__name__, old.version if old else None)
        audit(request, who, "POST /v1/admin/reload", outcome="reload_failed",
              model_version=old.version if old else None)
        raise ApiError(503, "reload failed", "新模型加载失败，继续使用原模型") from None
    audit(request, who, "POST /v1/admin/reload", outcome="reloaded", model_version=new.version)
    return ReloadOut(previous_version=old.version if old else None, model_version=new.version,
                     ruleset_version=new.ruleset_version, loaded_at=new.loaded_at)


# ------------------------------------------------------------------------------------- score


@router.post(
    "/v1/score", response_model=ScoreResponse, tags=["评分"],
    summary="对一户或一批户评分：概率、等级、规则触发、原因、建议措施",
    responses={**E401, **E403, 413: {**_ERR, "description": "批量超过上限"}, **E422, **E503},
)
def score(
    request: Request,
    body: Annotated[ScoreRequest, Body(openapi_examples=score_examples())],
    who: ApiKeyInfo = Depends(auth.require(auth.CAN_SCORE)),
) -> ScoreResponse:
    state = request.app.state
    households = body.households
    limit = state.params.serving.max_batch
    if len(households) > limit:
        audit(request, who, "POST /v1/score", outcome="too_large")
        raise ApiError(413, f"batch of {len(households)} exceeds max_batch={limit}",
                       f"批量过大：收到 {len(households)} 户，上限 {limit} 户")
    if not all(who.scope.covers(h.county, h.township) for h in households):
        audit(request, who, "POST /v1/score", household_ids=[h.household_id for h in households],
              outcome="forbidden")
        raise auth.Forbidden()
    _model(request)  # 503 at once when no model is loaded
    try:
        m, results = state.batcher.submit(households).result(timeout=state.params.serving.score_timeout_s)
    except ModelNotLoaded:
        raise ApiError(503, "model not loaded", "模型尚未加载，请稍后重试或联系管理员") from None
    except TimeoutError:
        audit(request, who, "POST /v1/score", household_ids=[h.household_id for h in households],
              outcome="timeout")
        raise ApiError(503, "scoring timed out", "评分超时，请稍后重试") from None
    audit(request, who, "POST /v1/score", household_ids=[r.household_id for r in results],
          levels=[r.level for r in results], outcome="scored", model_version=m.version)
    return ScoreResponse(model_version=m.version, ruleset_version=m.ruleset_version, results=results)


# ------------------------------------------------------------------------------------ events


@router.post(
    "/v1/events", response_model=EventsResponse, tags=["部门事件"],
    summary="部门推送预警事件：按证件号码找到户，立即重新评分，等级提高时生成或提高预警",
    responses={**E401, **E403, 413: {**_ERR, "description": "批量超过上限"}, **E422, **E503},
)
def events(
    request: Request,
    body: Annotated[EventsRequest, Body(openapi_examples=events_examples())],
    who: ApiKeyInfo = Depends(auth.require(auth.CAN_EVENTS)),
) -> EventsResponse:
    """Each event joins its household through the keyed hash of its ID number (the person → household
    map of the ledger's latest scored quarter, within the key's county). A new event is stored once
    (the same event again is counted as a duplicate and changes nothing); an event that matches
    nobody is stored and counted. Every household with a new event is re-scored at once from its
    stored snapshot, history and all its events (serving.scoring.rescore); when its combined level
    rises above the level it had, a warning of the re-scored quarter is created, or an open one
    raised, with its reasons and measures (fangpin.store.history.raise_warning), and shows on the
    cadre page."""
    from fangpin.ids import event_key, keyed_hashes
    from fangpin.store import history as hs
    from fangpin.warnings import severity
    from serving.clue_intake import event_clue
    from serving.scoring import rescored

    state = request.app.state
    evs = body.events
    limit = state.params.serving.max_batch
    if len(evs) > limit:
        audit(request, who, "POST /v1/events", outcome="too_large")
        raise ApiError(413, f"batch of {len(evs)} exceeds max_batch={limit}",
                       f"批量过大：收到 {len(evs)} 条，上限 {limit} 条")
    m = _model(request)
    ctx = state.scoring
    county = who.scope.county
    pks = keyed_hashes([e.id_number for e in evs], ctx.id_key)
    owner = hs.households_of(ctx.store, pks, county)
    rows = []
    for e, pk in zip(evs, pks, strict=True):
        hk, hc = owner.get(pk, (None, county or ""))
        rows.append({"event_key": event_key(pk, e.event_date, e.department, e.event_type, e.amount),
                     "person_key": pk, "household_key": hk, "county": hc, "event_date": e.event_date,
                     "department": e.department, "event_type": e.event_type, "amount": e.amount, "key_id": who.id})
    stored = hs.add_events(ctx.store, rows)
    fresh = list({r["event_key"]: r for r in rows if r["event_key"] in stored}.values())
    matched = [r for r in fresh if r["household_key"] is not None]
    latest: dict[str, int] = {}
    for r in matched:
        qi = fq.to_index(fq.of_date(r["event_date"]))
        latest[r["household_key"]] = max(latest.get(r["household_key"], qi), qi)
    out = []
    if latest:
        keys = sorted(latest)
        known = hs.histories(ctx.store, keys, {r["county"] for r in matched})
        quarters = {k: fq.from_index(max(latest[k], fq.to_index(known[k]["quarter"]))) for k in keys}
        for r in rescored(m, ctx, keys, quarters, known):
            row = r.row
            item = {"household_id": row["household_id"], "quarter": r.quarter, "previous_level": row["level"],
                    "level": r.level, "probability": r.probability, "warning_id": None}
            if not r.in_scope:
                item["warning"] = "out_of_scope"
            elif severity(r.level) <= severity(row["level"]):
                item["warning"] = "not_higher"
            else:
                rec = r.record(r.level, state.params)
                item["warning"] = hs.raise_warning(ctx.store, r.key, rec.model_dump(mode="json"), row["level"])
                item["warning_id"] = rec.id if item["warning"] in ("created", "raised", "kept_closed") else None
                if item["warning"] in ("created", "raised"):
                    # the event that lifted the household is a 部门预警 clue of the county's one list
                    event_clue(request, who, r, rec, [e for e in matched if e["household_key"] == r.key],
                               created=item["warning"] == "created")
            out.append(item)
    counts = hs.event_counts(ctx.store, county)
    audit(request, who, "POST /v1/events", household_ids=[o["household_id"] for o in out],
          levels=[o["level"] for o in out], outcome=f"events:{len(fresh)}", model_version=m.version)
    return EventsResponse(received=len(evs), stored=len(fresh), duplicates=len(evs) - len(fresh),
                          matched=len(matched), unmatched=len(fresh) - len(matched),
                          unmatched_total=counts["unmatched"], rescored=out, model_version=m.version)


# ---------------------------------------------------------------------------------- warnings


@router.get("/v1/warnings", response_model=WarningPageOut, tags=["预警"],
            summary="预警列表（按等级、核实期限排序；分页；仅本密钥范围内）", responses={**E401, **E403, **E422})
def list_warnings(
    request: Request,
    county: PlaceQ = None,
    township: PlaceQ = None,
    village: PlaceQ = None,
    quarter: QuarterQ = None,
    level: Literal["红", "黄", "蓝"] | None = None,
    status: Literal["待核实", "已核实·纳入监测", "已核实·排除"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    who: ApiKeyInfo = Depends(auth.require(auth.CAN_READ)),
) -> WarningPageOut:
    sc = who.scope
    if (county is not None and sc.county is not None and county != sc.county) or (
        township is not None and sc.township is not None and township != sc.township
    ):
        audit(request, who, "GET /v1/warnings", outcome="forbidden")
        raise auth.Forbidden()
    page = request.app.state.store.query_warnings(
        county=county, township=township, village=village, quarter=quarter, level=level, status=status,
        scope=sc, limit=limit, offset=offset,
    )
    audit(request, who, "GET /v1/warnings", household_ids=[w.household_id for w in page.items],
          levels=[w.level for w in page.items], outcome="read")
    return WarningPageOut(items=[_out(w, request) for w in page.items], total=page.total, limit=page.limit,
                          offset=page.offset)


def _warning_in_scope(request: Request, who: ApiKeyInfo, warning_id: str, endpoint: str) -> WarningRecord:
    w = request.app.state.store.get_warning(warning_id)
    if w is None or not who.scope.covers(w.county, w.township):
        # same answer whether the warning is missing or someone else's
        audit(request, who, endpoint, outcome="forbidden")
        raise auth.Forbidden()
    return w


@router.get("/v1/warnings/{warning_id}", response_model=WarningOut, tags=["预警"], summary="一条预警",
            responses={**E401, **E403})
def get_warning(request: Request, warning_id: WarningId,
                who: ApiKeyInfo = Depends(auth.require(auth.CAN_READ))) -> WarningOut:
    w = _warning_in_scope(request, who, warning_id, "GET /v1/warnings/{id}")
    audit(request, who, "GET /v1/warnings/{id}", household_ids=[w.household_id], levels=[w.level],
          outcome="read", model_version=w.model_version)
    return _out(w, request)


@router.post("/v1/warnings/{warning_id}/feedback", response_model=WarningOut, tags=["预警"],
             summary="记录入户核实结果（待核实 → 已核实·纳入监测 / 已核实·排除）",
             responses={**E401, **E403, 409: {**_ERR, "description": "状态变更不允许（如重复结案）"}, **E422})
def feedback(
    request: Request,
    warning_id: WarningId,
    body: Annotated[FeedbackIn, Body(openapi_examples=feedback_examples())],
    who: ApiKeyInfo = Depends(auth.require(auth.CAN_FEEDBACK)),
) -> WarningOut:
    from fangpin.store.loop import verified_hook

    endpoint = "POST /v1/warnings/{id}/feedback"
    w = _warning_in_scope(request, who, warning_id, endpoint)
    try:
        new = request.app.state.store.record_feedback(
            warning_id, body.status, actor=body.actor, reason=body.reason, visited_at=body.visited_at,
            key_id=who.id, audit={"key_id": who.id, "endpoint": endpoint, "household_ids": [w.household_id],
                                  "levels": [w.level], "model_version": w.model_version},
            hook=verified_hook(request.app.state.params, request.app.state.clock()),
        )
    except VerificationError as exc:
        audit(request, who, endpoint, household_ids=[w.household_id], levels=[w.level],
              outcome="rejected", model_version=w.model_version)
        raise ApiError(409, "status change not allowed", str(exc)) from None
    except WarningNotFound:
        audit(request, who, endpoint, outcome="forbidden")
        raise auth.Forbidden() from None
    return _out(new, request)


# ------------------------------------------------------------------------------------- tasks


def _task_out(t, request: Request) -> TaskOut:
    from fangpin.warnings import local_date

    return TaskOut(**t.model_dump(), overdue=t.is_overdue(local_date(request.app.state.clock())))


@router.get("/v1/tasks", response_model=TaskPageOut, tags=["任务"],
            summary="保障缺口任务（按办理期限排序；分页；仅本密钥范围内）", responses={**E401, **E403, **E422})
def list_tasks(
    request: Request,
    county: PlaceQ = None,
    township: PlaceQ = None,
    village: PlaceQ = None,
    quarter: QuarterQ = None,
    department: PlaceQ = None,
    status: Literal["待办理", "办理中", "已办结"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    who: ApiKeyInfo = Depends(auth.require(auth.CAN_READ)),
) -> TaskPageOut:
    sc = who.scope
    if (county is not None and sc.county is not None and county != sc.county) or (
        township is not None and sc.township is not None and township != sc.township
    ):
        audit(request, who, "GET /v1/tasks", outcome="forbidden")
        raise auth.Forbidden()
    page = request.app.state.store.query_tasks(
        county=county, township=township, village=village, quarter=quarter, department=department, status=status,
        scope=sc, limit=limit, offset=offset)
    audit(request, who, "GET /v1/tasks", household_ids=[t.household_id for t in page.items], outcome="read")
    return TaskPageOut(items=[_task_out(t, request) for t in page.items], total=page.total, limit=page.limit,
                       offset=page.offset)


@router.post("/v1/tasks/{task_id}/status", response_model=TaskOut, tags=["任务"],
             summary="更新任务办理状态（待办理 → 办理中 → 已办结）",
             responses={**E401, **E403, 409: {**_ERR, "description": "状态变更不允许（如已办结）"}, **E422})
def task_status(
    request: Request,
    task_id: WarningId,
    body: TaskStatusIn,
    who: ApiKeyInfo = Depends(auth.require(auth.CAN_FEEDBACK)),
) -> TaskOut:
    from fangpin.tasks import TaskError

    endpoint = "POST /v1/tasks/{id}/status"
    store = request.app.state.store
    t = store.get_task(task_id)
    if t is None or not who.scope.covers(t.county, t.township):
        audit(request, who, endpoint, outcome="forbidden")
        raise auth.Forbidden()
    try:
        new = store.set_task_status(task_id, body.status)
    except TaskError as exc:
        audit(request, who, endpoint, household_ids=[t.household_id], outcome="rejected")
        raise ApiError(409, "status change not allowed", str(exc)) from None
    audit(request, who, endpoint, household_ids=[t.household_id], outcome=f"task:{new.status}")
    return _task_out(new, request)
