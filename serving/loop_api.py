"""JSON endpoints of the loop after a warning: clues from every channel, the steps' deadlines and
what is overdue per township, the support plan, a warning's loop (channels, read-back).

Plain ``def`` handlers (FastAPI's thread pool). Every endpoint is scoped to the key and audited;
every store write goes through the store's write helper (409 on a lost race, 503 when busy). The
clock is ``app.state.clock`` (tests move it).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request

from fangpin import clues as fc
from fangpin.store import ApiKeyInfo
from fangpin.warnings import VerificationError, local_date
from serving import auth
from serving.api import E401, E403, E422, E503, PlaceQ, WarningId, _warning_in_scope, audit
from serving.errors import ApiError
from serving.schemas import (
    ClueIn,
    ClueListItem,
    ClueOut,
    CluePageOut,
    ErrorOut,
    LoopOut,
    OverdueItem,
    OverdueOut,
    OverdueTownship,
    StepOut,
    SupportPlanIn,
)

router = APIRouter()
_ERR = {"model": ErrorOut}
E409 = {409: {**_ERR, "description": "状态冲突（如已被他人更新、已登记）"}}


def now_of(request: Request) -> datetime:
    """The app's clock (``app.state.clock``: an aware UTC datetime)."""
    return request.app.state.clock()


def today_of(request: Request) -> date:
    return local_date(now_of(request))


def step_out(step) -> StepOut | None:
    if step is None:
        return None
    return StepOut(step=step.name, label=step.label, due=step.due, days_left=step.days_left, overdue=step.overdue,
                   text=step.text)


def _check_place(who: ApiKeyInfo, county: str | None, township: str | None) -> None:
    sc = who.scope
    if (county is not None and sc.county is not None and county != sc.county) or (
            township is not None and sc.township is not None and township != sc.township):
        raise auth.Forbidden()


# ------------------------------------------------------------------------------------ overdue


def overdue_by_township(items: list[dict]) -> list[OverdueTownship]:
    """Overdue steps (fangpin.store.loop.open_steps rows) grouped per township, most overdue first."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for d in items:
        groups.setdefault((d["county"], d["township"]), []).append(d)
    out = []
    for (county, township), rows in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        rows.sort(key=lambda d: (d["days_left"], -d["probability"], d["id"]))
        by_step = {s: sum(1 for d in rows if d["step"] == s) for s in fc.STEPS}
        out.append(OverdueTownship(county=county, township=township, overdue=len(rows), by_step=by_step, items=[
            OverdueItem(warning_id=d["id"], quarter=d["quarter"], county=d["county"], township=d["township"],
                        village=d["village"], household_id=d["household_id"], head_name=d["head_name"],
                        id_masked=d["id_masked"], level=d["level"], status=d["status"], origin=d["origin"],
                        return_risk=d["return_risk"], step=d["step"], step_label=d["step_label"], due=d["due"],
                        days_overdue=-d["days_left"]) for d in rows]))
    return out


@router.get("/v1/overdue", response_model=OverdueOut, tags=["期限"],
            summary="逾期预警（按乡镇：入户核实、认定、帮扶计划各环节逾期；仅本密钥范围内）",
            responses={**E401, **E403, **E422})
def overdue(
    request: Request,
    county: PlaceQ = None,
    township: PlaceQ = None,
    who: ApiKeyInfo = Depends(auth.require(auth.CAN_READ)),
) -> OverdueOut:
    """Every warning whose current step (verification, decision, support plan) is past its deadline
    today (the app's clock), per township, with the days overdue."""
    from fangpin.store.loop import open_steps

    try:
        _check_place(who, county, township)
    except auth.Forbidden:
        audit(request, who, "GET /v1/overdue", outcome="forbidden")
        raise
    today = today_of(request)
    items = open_steps(request.app.state.store, today, scope=who.scope, county=county, township=township,
                       overdue_only=True)
    audit(request, who, "GET /v1/overdue", household_ids=[d["household_id"] for d in items],
          levels=[d["level"] for d in items], outcome="read")
    return OverdueOut(today=today, total=len(items), townships=overdue_by_township(items))


# --------------------------------------------------------------------------------- the loop


def loop_out(w, loop: dict | None, today: date) -> LoopOut:
    from fangpin.store.loop import loop_view, origin_of_run

    v = loop_view(loop)
    if loop is None:
        v.update(origin=origin_of_run(None), channels=[origin_of_run(None)])
    step = fc.current_step(w.status, w.deadline, v, today)
    return LoopOut(warning_id=w.id, **v, step=step_out(step))


@router.get("/v1/warnings/{warning_id}/loop", response_model=LoopOut, tags=["预警"],
            summary="预警的后续环节：渠道、各环节期限、台账回读结论", responses={**E401, **E403})
def warning_loop(request: Request, warning_id: WarningId,
                 who: ApiKeyInfo = Depends(auth.require(auth.CAN_READ))) -> LoopOut:
    from fangpin.store.loop import loops

    endpoint = "GET /v1/warnings/{id}/loop"
    w = _warning_in_scope(request, who, warning_id, endpoint)
    lp = loops(request.app.state.store, [w.id]).get(w.id)
    audit(request, who, endpoint, household_ids=[w.household_id], levels=[w.level], outcome="read",
          model_version=w.model_version)
    return loop_out(w, lp, today_of(request))


@router.post("/v1/warnings/{warning_id}/support-plan", response_model=LoopOut, tags=["预警"],
             summary="登记帮扶计划已制定（台账显示已识别为监测对象之后）",
             responses={**E401, **E403, **E409, **E422})
def support_plan(request: Request, warning_id: WarningId, body: SupportPlanIn,
                 who: ApiKeyInfo = Depends(auth.require(auth.CAN_FEEDBACK))) -> LoopOut:
    from fangpin.store.loop import loops, record_support_plan

    endpoint = "POST /v1/warnings/{id}/support-plan"
    w = _warning_in_scope(request, who, warning_id, endpoint)
    try:
        fc.check_text(body.actor, "登记人", 64)
    except fc.ClueError as exc:
        raise ApiError(422, "personal number in text", str(exc)) from None
    now = now_of(request)
    try:
        record_support_plan(request.app.state.store, w.id, on=body.planned_on or local_date(now),
                            params=request.app.state.params, now=now,
                            audit={"key_id": who.id, "endpoint": endpoint, "household_ids": [w.household_id],
                                   "levels": [w.level], "model_version": w.model_version})
    except VerificationError as exc:
        audit(request, who, endpoint, household_ids=[w.household_id], outcome="rejected")
        raise ApiError(409, "support plan not allowed", str(exc)) from None
    return loop_out(w, loops(request.app.state.store, [w.id]).get(w.id), local_date(now))


# -------------------------------------------------------------------------------------- clues


@router.get("/v1/clues", response_model=CluePageOut, tags=["线索"],
            summary="线索清单（各渠道，最新在前；仅本密钥范围内）", responses={**E401, **E403, **E422})
def list_clues(
    request: Request,
    county: PlaceQ = None,
    township: PlaceQ = None,
    channel: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    who: ApiKeyInfo = Depends(auth.require(auth.CAN_READ)),
) -> CluePageOut:
    from fangpin.store.loop import query_clues

    try:
        _check_place(who, county, township)
    except auth.Forbidden:
        audit(request, who, "GET /v1/clues", outcome="forbidden")
        raise
    items, total = query_clues(request.app.state.store, scope=who.scope, county=county, township=township,
                               channel=channel, limit=limit, offset=offset)
    audit(request, who, "GET /v1/clues", household_ids=[c["household_id"] for c in items if c["household_id"]],
          outcome="read")
    return CluePageOut(items=[ClueListItem(**{k: c[k] for k in ClueListItem.model_fields if k in c},
                                           outcome_text=fc.OUTCOME_LABEL[c["outcome"]]) for c in items],
                       total=total, limit=limit, offset=offset)


@router.post("/v1/clues", response_model=ClueOut, tags=["线索"],
             summary="登记一条线索（农户自主申报、干部排查、部门预警、群众反映、村级排查）：立即评分，生成预警或并入已有预警",
             responses={**E401, **E403, **E409, **E422, **E503})
def post_clue(
    request: Request,
    body: Annotated[ClueIn, Body(openapi_examples=clue_examples())],
    who: ApiKeyInfo = Depends(auth.require(auth.CAN_CLUE)),
) -> ClueOut:
    """The household is found by its 户编号 (or the keyed hash of the ID number given, which is
    never stored) in the ledger's latest scored quarter, scored at once through the same path as
    ``POST /v1/events`` (stored snapshot and history → the model's one method → reasons), and the
    clue becomes a warning with a deadline, joins the household's open warning, or is merged into
    an open clue of the same household and channel. 农户自主申报 and 群众反映 are always a warning
    (``clues.floors``), whatever the score. A household not in the ledger is recorded for the
    village to check (county and township needed)."""
    from serving.clue_intake import intake

    try:
        return intake(request, who, body, source="api")
    except fc.ClueError as exc:
        audit(request, who, "POST /v1/clues", outcome="rejected")
        raise ApiError(422, "clue not accepted", str(exc)) from None
    except auth.Forbidden:
        audit(request, who, "POST /v1/clues", outcome="forbidden")
        raise
    except VerificationError as exc:
        audit(request, who, "POST /v1/clues", outcome="conflict")
        raise ApiError(409, "conflict", str(exc)) from None


def clue_examples() -> dict:
    return {
        "自主申报": {"summary": "农户自主申报（按户编号）", "value": {
            "channel": "农户自主申报", "household_id": "610923001000123", "text": "家中老人住院，自付费用较高，申请纳入监测",
            "received_by": "李娜"}},
        "群众反映": {"summary": "群众反映（台账外的户，填写县和乡镇）", "value": {
            "channel": "群众反映", "household_id": "610923009999999", "county": "青石县", "township": "兴兴镇",
            "village": "康沟村", "text": "邻居反映该户因灾房屋受损", "received_by": "王强"}},
    }
