"""The cadre page: server-rendered Chinese HTML for township staff on their phones.

Sign in with a township key (the signed session cookie holds only a random session token whose
hash the store keeps: logging out ends the session on the server), see the township's open
warnings by deadline, then risk, each with the list it is on (入户核实 / 月度走访 / 半年复核;
overdue ones marked), and apart from them the township's open 保障缺口 tasks with their
department; open a warning to see the household, the reasons (inline-SVG bars drawn from the
figures that add up to the probability minus the county base rate, with the 其他因素 line), rule
hits, the household's tasks, suggested support, and record the visit outcome. Forms carry a
per-session CSRF token; the cookie is SameSite=strict. No external assets.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from fangpin.tasks import TASK_DOING, TASK_OPEN
from fangpin.warnings import (
    LEVEL_LABEL,
    STATUS_EXCLUDED,
    STATUS_INCLUDED,
    STATUS_OPEN,
    VerificationError,
    WarningRecord,
    local_date,
    visit_list,
)

HERE = Path(__file__).resolve().parent
router = APIRouter(include_in_schema=False)
OPEN_LIMIT = 500
SESSION_SECONDS = 8 * 3600


def session_secret(params) -> str:
    """The session-signing secret, derived from the server secret (never the secret itself)."""
    from fangpin.ids import load_key

    w = params.warnings
    secret = load_key(params.paths.state_dir, w.key_secret_env, w.key_secret_file)
    return hmac.new(secret, b"cadre-session", hashlib.sha256).hexdigest()


def setup(app, params, store) -> None:
    from fastapi.templating import Jinja2Templates

    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(LEVEL_LABEL=LEVEL_LABEL)
    templates.env.filters["pct"] = lambda p: f"{100 * float(p):.1f}%"
    templates.env.filters["pct2"] = lambda p: f"{100 * float(p):.2f}%"
    templates.env.filters["pp"] = lambda v: f"{'+' if v >= 0 else '−'}{abs(float(v)):.2f} 个百分点"
    app.state.templates = templates


# ------------------------------------------------------------------------------------ helpers


def _csrf(request: Request) -> str:
    tok = request.session.get("csrf")
    if not tok:
        tok = secrets.token_urlsafe(24)
        request.session["csrf"] = tok
    return tok


def _csrf_ok(request: Request, token: str | None) -> bool:
    expected = request.session.get("csrf") or ""
    return bool(token) and bool(expected) and hmac.compare_digest(expected, token)


CADRE_ROLES = frozenset({"township_cadre"})


def _signed_in(request: Request, roles: frozenset[str] = CADRE_ROLES):
    """The session's key, checked against the store on every request: an ended session (logout),
    an expired one or a revoked key is out; a key of another role is not signed in here (its
    session stays, for its own pages)."""
    sid = request.session.get("sid")
    if not sid:
        return None
    k = request.app.state.store.session_key(sid)
    if k is None:
        request.session.pop("sid", None)
        return None
    return k if k.role in roles else None


def _render(request: Request, name: str, status_code: int = 200, **ctx) -> HTMLResponse:
    ctx.setdefault("csrf", _csrf(request))
    return request.app.state.templates.TemplateResponse(request, name, ctx, status_code=status_code)


def _today(request: Request):
    """Today by the app's clock (``app.state.clock``)."""
    return local_date(request.app.state.clock())


def _to_login() -> RedirectResponse:
    return RedirectResponse("/cadre/login", status_code=303)


def _audit(request: Request, who, endpoint: str, warnings=(), outcome: str = "read") -> None:
    request.app.state.store.audit_enqueue(
        key_id=who.id if who else None, endpoint=endpoint,
        household_ids=[w.household_id for w in warnings], levels=[w.level for w in warnings],
        outcome=outcome, model_version=warnings[0].model_version if len(warnings) == 1 else None,
    )


def _pp(v: float) -> str:
    return f"{'+' if v >= 0 else '−'}{abs(v):.2f} 个百分点"


def reason_bars(w: WarningRecord, width: int = 300, bar_h: int = 18, gap: int = 10) -> dict:
    """Geometry of the inline-SVG bar chart, drawn from the figures: one bar per reason and one for
    其他因素, length ∝ |percentage points| (the numbers beside them, which add up to the
    probability minus the county base rate)."""
    rows = [{"pp": r.prob_pp, "up": r.direction == "up", "text": r.text, "kind": "reason"} for r in w.reasons]
    if w.other_pp is not None and rows:
        rows.append({"pp": w.other_pp, "up": w.other_pp >= 0, "text": "其他因素", "kind": "other"})
    top = max((abs(r["pp"]) for r in rows), default=0.0) or 1.0
    label_room = 120  # the "+8.53 个百分点" label to the right of the longest bar
    bars = []
    for i, r in enumerate(rows):
        length = max(2.0, (width - label_room) * abs(r["pp"]) / top)
        bars.append({"y": i * (bar_h + gap), "w": round(length, 1), "h": bar_h, "up": r["up"], "kind": r["kind"],
                     "label": _pp(r["pp"]), "text": r["text"], "pp": r["pp"]})
    total = None
    if w.base_rate is not None and w.other_pp is not None:
        total = round(sum(r["pp"] for r in rows), 2)
    return {"bars": bars, "width": width, "height": max(0, len(bars) * (bar_h + gap) - gap), "total": total}


# -------------------------------------------------------------------------------------- pages


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/cadre/", status_code=303)


@router.get("/cadre/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _render(request, "login.html", error=None, **login_ctx(cadre=True))


@router.post("/cadre/login", response_class=HTMLResponse)
def login(request: Request, key: Annotated[str, Form(max_length=200)] = "",
          csrf: Annotated[str, Form(max_length=100)] = ""):
    return sign_in(request, key, csrf, CADRE_ROLES, "/cadre/", login_ctx(cadre=True), "不是乡镇干部的密钥")


def login_ctx(cadre: bool) -> dict:
    """What the login page says (the cadre page's or the county view's)."""
    if cadre:
        return {"heading": "乡镇干部登录", "hint": "请输入本乡镇的访问密钥（由县级管理员发放）。", "action": "/cadre/login"}
    return {"heading": "县级视图登录", "hint": "请输入县级或分析人员的访问密钥（由县级管理员发放）。",
            "action": "/county/login"}


def sign_in(request: Request, key: str, csrf: str, roles: frozenset[str], dest: str, ctx: dict, wrong_role: str):
    """Sign in with a key of ``roles`` (failed attempts limited and audited, as for the API); the
    session is opened on the server and the CSRF token renewed."""
    from serving.middleware import _audit_failure, client_of, key_id_of

    if not _csrf_ok(request, csrf):
        return _render(request, "login.html", 400, error="页面已过期，请重新登录。", **ctx)
    store, limiter = request.app.state.store, request.app.state.auth_limiter
    key = key.strip()
    kid = key_id_of(key)
    who = [("addr", client_of(request.scope))] + ([("key", kid)] if kid else [])
    wait = limiter.blocked(*who)
    if wait > 0:
        return _render(request, "login.html", 429, error=f"密钥验证失败次数过多，请 {int(wait) + 1} 秒后再试。", **ctx)
    info = store.verify_key(key)
    if info is None or info.role not in roles:
        limiter.fail(*who)
        _audit_failure(store, request.scope, kid, "auth_failed")
        return _render(request, "login.html", 401, error=f"密钥无效，或{wrong_role}。", **ctx)
    old = request.session.get("sid")
    if old:
        store.end_session(old)
    request.session.clear()
    request.session["sid"] = store.open_session(info.id, SESSION_SECONDS)
    request.session["csrf"] = secrets.token_urlsafe(24)  # new token after sign-in
    return RedirectResponse(dest, status_code=303)


@router.post("/cadre/logout")
def logout(request: Request, csrf: Annotated[str, Form(max_length=100)] = ""):
    if _csrf_ok(request, csrf):
        request.app.state.store.end_session(request.session.get("sid"))
        request.session.clear()
    return _to_login()


@router.post("/county/logout")
def county_logout(request: Request, csrf: Annotated[str, Form(max_length=100)] = ""):
    if _csrf_ok(request, csrf):
        request.app.state.store.end_session(request.session.get("sid"))
        request.session.clear()
    return RedirectResponse("/county/login", status_code=303)


@router.get("/cadre/", response_class=HTMLResponse)
def warning_list(request: Request):
    who = _signed_in(request)
    if who is None:
        return _to_login()
    return _list_page(request, who, clue_saved=request.query_params.get("clue"))


def _list_page(request: Request, who, status_code: int = 200, clue_error: str | None = None,
               clue_form: dict | None = None, clue_saved: str | None = None) -> HTMLResponse:
    from fangpin import clues as fc
    from fangpin.store.loop import loops, open_steps, query_clues

    store = request.app.state.store
    page = store.query_warnings(scope=who.scope, status=STATUS_OPEN, limit=OPEN_LIMIT)
    today = _today(request)
    w_params = request.app.state.params.warnings
    items = [{"w": w, "overdue": w.is_overdue(today), "days_left": (w.deadline - today).days,
              "list": visit_list(w.level, w_params, w.deferred)} for w in page.items]
    tasks = store.query_tasks(scope=who.scope, status=[TASK_OPEN, TASK_DOING], limit=OPEN_LIMIT)
    task_items = [{"t": t, "overdue": t.is_overdue(today), "days_left": (t.deadline - today).days}
                  for t in tasks.items]
    later = [d for d in open_steps(store, today, scope=who.scope) if d["step"] != fc.VERIFICATION][:OPEN_LIMIT]
    marks = loops(store, [w.id for w in page.items])
    for it in items:
        lp = marks.get(it["w"].id) or {}
        it.update(return_risk=bool(lp.get("return_risk")), channels=lp.get("channels") or [])
    clues, clues_total = query_clues(store, scope=who.scope, limit=20)
    for c in clues:
        c["outcome_text"] = fc.OUTCOME_LABEL[c["outcome"]]
        step = fc.Step(fc.VERIFICATION, c["deadline"], today) if c["deadline"] and c["warning_status"] in (
            None, STATUS_OPEN) else None
        c["due_text"], c["overdue"] = (step.text, step.overdue) if step else ("", False)
    _audit(request, who, "GET /cadre/", page.items)
    return _render(request, "list.html", status_code, who=who, items=items, total=page.total, shown=len(items),
                   tasks=task_items, tasks_total=tasks.total, later=later, clues=clues, clues_total=clues_total,
                   channels=fc.CHANNELS, clue_error=clue_error, clue_form=clue_form or {},
                   clue_saved=fc.OUTCOME_LABEL.get(clue_saved or ""))


_CLUE_FIELDS = {"channel": "线索渠道", "household_id": "户编号", "id_number": "证件号码（18位）", "village": "村",
                "text": "反映内容", "received_by": "接收人"}


def _clue_form_error(errors: list[dict]) -> str:
    """The first problem of the clue form in Chinese (never the value: it may be an ID number)."""
    err = errors[0] if errors else {}
    loc = [p for p in err.get("loc", ()) if isinstance(p, str)]
    if not loc:  # a check across fields: its message is Chinese already
        return str(err.get("msg", "线索填写有误。")).removeprefix("Value error, ")
    return f"{_CLUE_FIELDS.get(loc[-1], loc[-1])}填写有误，请检查后重新提交。"


@router.post("/cadre/clues", response_class=HTMLResponse)
def submit_clue(
    request: Request,
    channel: Annotated[str, Form(max_length=16)] = "",
    household_id: Annotated[str, Form(max_length=64)] = "",
    id_number: Annotated[str, Form(max_length=40)] = "",
    village: Annotated[str, Form(max_length=64)] = "",
    text: Annotated[str, Form(max_length=2000)] = "",
    received_by: Annotated[str, Form(max_length=64)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
):
    """登记线索: the same intake as POST /v1/clues (serving.clue_intake)."""
    from pydantic import ValidationError

    from fangpin.clues import ClueError
    from serving.auth import Forbidden
    from serving.clue_intake import intake
    from serving.errors import ApiError
    from serving.schemas import ClueIn

    who = _signed_in(request)
    if who is None:
        return _to_login()
    form = {"channel": channel, "household_id": household_id, "village": village, "text": text,
            "received_by": received_by}  # the ID number is never sent back to the page
    if not _csrf_ok(request, csrf):
        return _list_page(request, who, 400, "页面已过期，请刷新后重新提交。", form)
    try:
        body = ClueIn(channel=channel, household_id=household_id.strip() or None,
                      id_number=id_number.strip().upper() or None, village=village.strip() or None,
                      text=text, received_by=received_by)
    except ValidationError as exc:
        return _list_page(request, who, 422, _clue_form_error(exc.errors()), form)
    endpoint = "POST /cadre/clues"
    try:
        res = intake(request, who, body, source="page")
    except ClueError as exc:
        _audit(request, who, endpoint, outcome="rejected")
        return _list_page(request, who, 422, str(exc), form)
    except Forbidden:
        _audit(request, who, endpoint, outcome="forbidden")
        return _list_page(request, who, 403, "该户不在本乡镇范围内。", form)
    except (ApiError, VerificationError) as exc:
        _audit(request, who, endpoint, outcome="rejected")
        msg = exc.message_zh if isinstance(exc, ApiError) else str(exc)
        return _list_page(request, who, getattr(exc, "status", 409), msg, form)
    return RedirectResponse(f"/cadre/?clue={res.outcome}#clues", status_code=303)


@router.get("/cadre/w/{warning_id}", response_class=HTMLResponse)
def warning_page(request: Request, warning_id: str):
    who, w, refused = _warning_of(request, warning_id, "GET /cadre/w/{id}")
    if refused is not None:
        return refused
    _audit(request, who, "GET /cadre/w/{id}", [w])
    return _page(request, who, w)


def _warning_of(request: Request, warning_id: str, endpoint: str):
    """The signed-in cadre and the warning they asked for: ``(who, w, None)``, or the response
    that refuses them — the sign-in page, or 403 for a warning outside their scope (audited)."""
    who = _signed_in(request)
    if who is None:
        return None, None, _to_login()
    w = request.app.state.store.get_warning(warning_id[:64])
    if w is None or not who.scope.covers(w.county, w.township):
        _audit(request, who, endpoint, outcome="forbidden")
        return who, None, _render(request, "forbidden.html", 403, who=who)
    return who, w, None


def _page(request: Request, who, w: WarningRecord, status_code: int = 200, error: str | None = None,
          form: dict | None = None) -> HTMLResponse:
    from fangpin.store.loop import loops, query_clues
    from serving.loop_api import loop_out

    today = _today(request)
    store = request.app.state.store
    history = store.feedback_history(w.id)
    tasks = store.query_tasks(household_id=w.household_id, quarter=w.quarter, limit=20).items
    loop = loop_out(w, loops(store, [w.id]).get(w.id), today)
    clues = [c for c in query_clues(store, county=w.county, household_id=w.household_id, limit=20)[0]
             if c["warning_id"] == w.id]
    return _render(
        request, "warning.html", status_code, who=who, w=w, overdue=w.is_overdue(today), loop=loop,
        clues=clues, today=today,
        chart=reason_bars(w), history=history, error=error, form=form or {}, tasks=tasks,
        visit=visit_list(w.level, request.app.state.params.warnings, w.deferred),
        saved={"1": "已记录核实结果。", "plan": "已登记帮扶计划。"}.get(request.query_params.get("saved", "")),
        outcomes=[("included", STATUS_INCLUDED), ("excluded", STATUS_EXCLUDED)],
    )


@router.post("/cadre/w/{warning_id}/outcome", response_class=HTMLResponse)
def record_outcome(
    request: Request,
    warning_id: str,
    outcome: Annotated[str, Form(max_length=20)] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
    actor: Annotated[str, Form(max_length=64)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
):
    endpoint = "POST /cadre/w/{id}/outcome"
    who, w, refused = _warning_of(request, warning_id, endpoint)
    if refused is not None:
        return refused
    form = {"outcome": outcome, "reason": reason, "actor": actor}
    if not _csrf_ok(request, csrf):
        return _page(request, who, w, 400, "页面已过期，请刷新后重新提交。", form)
    status = {"included": STATUS_INCLUDED, "excluded": STATUS_EXCLUDED}.get(outcome)
    if status is None:
        return _page(request, who, w, 422, "请选择核实结论。", form)
    from fangpin.store.loop import verified_hook

    try:
        request.app.state.store.record_feedback(
            w.id, status, actor=actor, reason=reason.strip() or None, key_id=who.id,
            audit={"key_id": who.id, "endpoint": endpoint, "household_ids": [w.household_id],
                   "levels": [w.level], "model_version": w.model_version},
            hook=verified_hook(request.app.state.params, request.app.state.clock()))
    except VerificationError as exc:
        _audit(request, who, endpoint, [w], outcome="rejected")
        return _page(request, who, w, 409, str(exc), form)
    return RedirectResponse(f"/cadre/w/{w.id}?saved=1", status_code=303)


@router.post("/cadre/w/{warning_id}/support-plan", response_class=HTMLResponse)
def record_support_plan(
    request: Request,
    warning_id: str,
    actor: Annotated[str, Form(max_length=64)] = "",
    planned_on: Annotated[str, Form(max_length=10)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
):
    """帮扶计划已制定: the step after the export showed the household identified."""
    from datetime import date

    from fangpin.clues import ClueError, check_text
    from fangpin.store.loop import record_support_plan as record

    endpoint = "POST /cadre/w/{id}/support-plan"
    who, w, refused = _warning_of(request, warning_id, endpoint)
    if refused is not None:
        return refused
    form = {"plan_actor": actor, "planned_on": planned_on}
    if not _csrf_ok(request, csrf):
        return _page(request, who, w, 400, "页面已过期，请刷新后重新提交。", form)
    now = request.app.state.clock()
    try:
        on = date.fromisoformat(planned_on) if planned_on.strip() else local_date(now)
    except ValueError:
        return _page(request, who, w, 422, "制定日期格式应为 YYYY-MM-DD。", form)
    try:
        if not actor.strip():
            raise ClueError("须填写登记人")
        check_text(actor, "登记人", 64)
        record(request.app.state.store, w.id, on=on, params=request.app.state.params, now=now,
               audit={"key_id": who.id, "endpoint": endpoint, "household_ids": [w.household_id],
                      "levels": [w.level], "model_version": w.model_version})
    except (ClueError, VerificationError) as exc:
        _audit(request, who, endpoint, [w], outcome="rejected")
        return _page(request, who, w, 409 if isinstance(exc, VerificationError) else 422, str(exc), form)
    return RedirectResponse(f"/cadre/w/{w.id}?saved=plan", status_code=303)
