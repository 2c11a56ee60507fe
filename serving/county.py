"""The county view ``/county/``: server-rendered Chinese HTML for county staff and analysts, on a
phone or a desktop. Sign in with a key of role ``county`` (county scope), ``analyst`` or ``admin``
(a county, or every county: then a county is chosen on the page). Shows, per township, warnings by
level and channel, visits due and overdue, verification outcomes, identifications read back from
the next export, support plans on time, eliminated and 返贫; the funnel per quarter; where
predicted risk and identifications concentrate; the conflicts between the ledger and the
feedback; every clue of the county in one list. Charts are SVG documents drawn by matplotlib on
the server (``/county/charts/<name>.svg``): nothing is loaded from outside the app.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fangpin import clues as fc
from serving import auth
from serving.pages import _render, _signed_in, _today, login_ctx, sign_in

router = APIRouter(include_in_schema=False)
QuarterQ = Annotated[str | None, Query(pattern=r"^(\d{4}Q[1-4])?$")]  # empty: every quarter (the form's 全部季度)
CountyQ = Annotated[str | None, Query(max_length=64)]
CLUE_LIMIT = 100
# an SVG image document: no script can run in it, its own inline styles draw it
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"


def _to_login() -> RedirectResponse:
    return RedirectResponse("/county/login", status_code=303)


def _county_of(request: Request, who, county: str | None) -> str | None:
    """The county shown: the key's own, else the one asked for (an every-county key), else the
    first with data. A county outside the key's scope → None (403)."""
    from fangpin.store.loop import counties

    if who.scope.county is not None:
        return who.scope.county if county in (None, who.scope.county) else None
    known = counties(request.app.state.store, who.scope)
    if county is not None:
        return county
    return known[0] if known else ""


def _audit(request: Request, who, endpoint: str, household_ids=(), outcome: str = "read") -> None:
    request.app.state.store.audit_enqueue(key_id=who.id, endpoint=endpoint, household_ids=list(household_ids),
                                          levels=[], outcome=outcome)


def _figures(request: Request, who, county: str, quarter: str | None) -> dict:
    from fangpin.store.loop import county_rows
    from serving.county_figures import figures

    ws, cs, hs = county_rows(request.app.state.store, scope=who.scope, county=county)
    return figures(ws, cs, hs, _today(request), request.app.state.params, quarter=quarter)


@router.get("/county/login", response_class=HTMLResponse)
def county_login_form(request: Request) -> HTMLResponse:
    return _render(request, "login.html", error=None, home="/county/", **login_ctx(cadre=False))


@router.post("/county/login", response_class=HTMLResponse)
def county_login(request: Request, key: Annotated[str, Form(max_length=200)] = "",
                 csrf: Annotated[str, Form(max_length=100)] = ""):
    return sign_in(request, key, csrf, auth.CAN_COUNTY_VIEW, "/county/", {**login_ctx(cadre=False), "home": "/county/"},
                   "不是县级或分析人员的密钥")


@router.get("/county/", response_class=HTMLResponse)
def county_view(request: Request, county: CountyQ = None, quarter: QuarterQ = None):
    from fangpin.store.loop import conflicts, counties, open_steps, query_clues
    from serving.county_figures import FUNNEL
    from serving.loop_api import overdue_by_township

    who = _signed_in(request, auth.CAN_COUNTY_VIEW)
    if who is None:
        return _to_login()
    county, quarter = county or None, quarter or None
    shown = _county_of(request, who, county)
    if shown is None:
        _audit(request, who, "GET /county/", outcome="forbidden")
        return _render(request, "forbidden.html", 403, who=who, home="/county/")
    store = request.app.state.store
    today = _today(request)
    figs = _figures(request, who, shown, quarter)
    overdue = overdue_by_township(open_steps(store, today, scope=who.scope, county=shown, overdue_only=True))
    clue_items, clue_total = query_clues(store, scope=who.scope, county=shown, limit=CLUE_LIMIT)
    for c in clue_items:
        step = fc.Step(fc.VERIFICATION, c["deadline"], today) if c["deadline"] and c["warning_status"] in (
            None, "待核实") and c["outcome"] in (fc.CREATED, fc.JOINED, fc.UNMATCHED, fc.MERGED) else None
        c["due_text"] = step.text if step else ""
        c["overdue"] = bool(step and step.overdue)
        c["outcome_text"] = fc.OUTCOME_LABEL[c["outcome"]]
    conf = conflicts(store, scope=who.scope, county=shown)
    _audit(request, who, "GET /county/",
           household_ids=[c["household_id"] for c in clue_items if c["household_id"]] + [c["household_id"] for c in conf])
    choices = counties(store, who.scope) if who.scope.county is None else [shown]
    return _render(request, "county.html", who=who, home="/county/", county=shown, counties=choices,
                   quarter=quarter, figs=figs, funnel_stages=FUNNEL, overdue=overdue, clues=clue_items,
                   clue_total=clue_total, conflicts=conf, today=today, origins=fc.ORIGINS, channels=fc.CHANNELS,
                   query=request.url.query, soon=request.app.state.params.warnings.due_soon_days)


@router.get("/county/charts/{name}.svg")
def county_chart(request: Request, name: str, county: CountyQ = None, quarter: QuarterQ = None):
    from serving.county_figures import CHARTS

    who = _signed_in(request, auth.CAN_COUNTY_VIEW)
    if who is None:
        return Response(status_code=401)
    county, quarter = county or None, quarter or None
    shown = _county_of(request, who, county)
    if shown is None or name not in CHARTS:
        return Response(status_code=403 if shown is None else 404)
    svg = CHARTS[name](_figures(request, who, shown, quarter))
    _audit(request, who, f"GET /county/charts/{name}.svg")
    return Response(svg, media_type="image/svg+xml", headers={"Content-Security-Policy": SVG_CSP})
