"""The cadre page: server-rendered Chinese HTML for township staff on their phones.

Sign in with a township key (the signed session cookie holds only a random session token whose
hash the store keeps: logging out ends the session on the server), see the township's
open warnings by level and deadline (overdue ones marked), open one to see the household, the
reasons (inline-SVG bars with the sentences), rule hits, suggested support, and record the visit
outcome. Forms carry a per-session CSRF token; the cookie is SameSite=strict. No external assets.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from fangpin.warnings import (
    LEVEL_LABEL,
    STATUS_EXCLUDED,
    STATUS_INCLUDED,
    STATUS_OPEN,
    VerificationError,
    WarningRecord,
    local_date,
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


def _signed_in(request: Request):
    """The session's key, checked against the store on every request: an ended session (logout),
    an expired one or a revoked key is out."""
    sid = request.session.get("sid")
    if not sid:
        return None
    k = request.app.state.store.session_key(sid)
    if k is not None and k.role == "township_cadre":
        return k
    request.session.pop("sid", None)
    return None


def _render(request: Request, name: str, status_code: int = 200, **ctx) -> HTMLResponse:
    ctx.setdefault("csrf", _csrf(request))
    return request.app.state.templates.TemplateResponse(request, name, ctx, status_code=status_code)


def _to_login() -> RedirectResponse:
    return RedirectResponse("/cadre/login", status_code=303)


def _audit(request: Request, who, endpoint: str, warnings=(), outcome: str = "read") -> None:
    request.app.state.store.audit_enqueue(
        key_id=who.id if who else None, endpoint=endpoint,
        household_ids=[w.household_id for w in warnings], levels=[w.level for w in warnings],
        outcome=outcome, model_version=warnings[0].model_version if len(warnings) == 1 else None,
    )


def reason_bars(w: WarningRecord, width: int = 300, bar_h: int = 18, gap: int = 10) -> dict:
    """Geometry of the inline-SVG bar chart: one bar per reason, length ∝ |log-odds|."""
    reasons = list(w.reasons)
    top = max((abs(r.logodds) for r in reasons), default=0.0) or 1.0
    label_room = 110  # the "+8.5 个百分点" label to the right of the longest bar
    bars = []
    for i, r in enumerate(reasons):
        length = max(2.0, (width - label_room) * abs(r.logodds) / top)
        bars.append({
            "y": i * (bar_h + gap), "w": round(length, 1), "h": bar_h, "up": r.direction == "up",
            "label": f"{'+' if r.prob_pp >= 0 else '−'}{abs(r.prob_pp):.1f} 个百分点",
            "text": r.text, "logodds": r.logodds,
        })
    return {"bars": bars, "width": width, "height": max(0, len(bars) * (bar_h + gap) - gap)}


# -------------------------------------------------------------------------------------- pages


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/cadre/", status_code=303)


@router.get("/cadre/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _render(request, "login.html", error=None)


@router.post("/cadre/login", response_class=HTMLResponse)
def login(request: Request, key: Annotated[str, Form(max_length=200)] = "",
          csrf: Annotated[str, Form(max_length=100)] = ""):
    from serving.middleware import _audit_failure, client_of, key_id_of

    if not _csrf_ok(request, csrf):
        return _render(request, "login.html", 400, error="页面已过期，请重新登录。")
    store, limiter = request.app.state.store, request.app.state.auth_limiter
    key = key.strip()
    kid = key_id_of(key)
    who = [("addr", client_of(request.scope))] + ([("key", kid)] if kid else [])
    wait = limiter.blocked(*who)
    if wait > 0:
        return _render(request, "login.html", 429, error=f"密钥验证失败次数过多，请 {int(wait) + 1} 秒后再试。")
    info = store.verify_key(key)
    if info is None or info.role != "township_cadre":
        limiter.fail(*who)
        _audit_failure(store, request.scope, kid, "auth_failed")
        return _render(request, "login.html", 401, error="密钥无效，或不是乡镇干部的密钥。")
    old = request.session.get("sid")
    if old:
        store.end_session(old)
    request.session.clear()
    request.session["sid"] = store.open_session(info.id, SESSION_SECONDS)
    request.session["csrf"] = secrets.token_urlsafe(24)  # new token after sign-in
    return RedirectResponse("/cadre/", status_code=303)


@router.post("/cadre/logout")
def logout(request: Request, csrf: Annotated[str, Form(max_length=100)] = ""):
    if _csrf_ok(request, csrf):
        request.app.state.store.end_session(request.session.get("sid"))
        request.session.clear()
    return _to_login()


@router.get("/cadre/", response_class=HTMLResponse)
def warning_list(request: Request):
    who = _signed_in(request)
    if who is None:
        return _to_login()
    page = request.app.state.store.query_warnings(scope=who.scope, status=STATUS_OPEN, limit=OPEN_LIMIT)
    today = local_date(datetime.now(UTC))
    items = [{"w": w, "overdue": w.is_overdue(today), "days_left": (w.deadline - today).days}
             for w in page.items]
    _audit(request, who, "GET /cadre/", page.items)
    return _render(request, "list.html", who=who, items=items, total=page.total, shown=len(items))


@router.get("/cadre/w/{warning_id}", response_class=HTMLResponse)
def warning_page(request: Request, warning_id: str):
    who = _signed_in(request)
    if who is None:
        return _to_login()
    w = _in_scope(request, who, warning_id, "GET /cadre/w/{id}")
    if w is None:
        return _render(request, "forbidden.html", 403, who=who)
    _audit(request, who, "GET /cadre/w/{id}", [w])
    return _page(request, who, w)


def _in_scope(request: Request, who, warning_id: str, endpoint: str) -> WarningRecord | None:
    w = request.app.state.store.get_warning(warning_id[:64])
    if w is None or not who.scope.covers(w.county, w.township):
        _audit(request, who, endpoint, outcome="forbidden")
        return None
    return w


def _page(request: Request, who, w: WarningRecord, status_code: int = 200, error: str | None = None,
          form: dict | None = None) -> HTMLResponse:
    today = local_date(datetime.now(UTC))
    history = request.app.state.store.feedback_history(w.id)
    return _render(
        request, "warning.html", status_code, who=who, w=w, overdue=w.is_overdue(today),
        chart=reason_bars(w), history=history, error=error, form=form or {},
        saved=request.query_params.get("saved") == "1",
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
    who = _signed_in(request)
    if who is None:
        return _to_login()
    endpoint = "POST /cadre/w/{id}/outcome"
    w = _in_scope(request, who, warning_id, endpoint)
    if w is None:
        return _render(request, "forbidden.html", 403, who=who)
    form = {"outcome": outcome, "reason": reason, "actor": actor}
    if not _csrf_ok(request, csrf):
        return _page(request, who, w, 400, "页面已过期，请刷新后重新提交。", form)
    status = {"included": STATUS_INCLUDED, "excluded": STATUS_EXCLUDED}.get(outcome)
    if status is None:
        return _page(request, who, w, 422, "请选择核实结论。", form)
    try:
        request.app.state.store.record_feedback(
            w.id, status, actor=actor, reason=reason.strip() or None, key_id=who.id,
            audit={"key_id": who.id, "endpoint": endpoint, "household_ids": [w.household_id],
                   "levels": [w.level], "model_version": w.model_version})
    except VerificationError as exc:
        _audit(request, who, endpoint, [w], outcome="rejected")
        return _page(request, who, w, 409, str(exc), form)
    return RedirectResponse(f"/cadre/w/{w.id}?saved=1", status_code=303)
