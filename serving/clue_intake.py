"""A clue from any channel → the household, scored at once → a warning, joined, merged or recorded
(fangpin/clues.py; store: fangpin.store.loop.record_clue). Used by ``POST /v1/clues``, the cadre
page's form, and ``POST /v1/events`` (each event that lifts its household is a 部门预警 clue).

The household is found by the keyed hash of its 户编号, or of the ID number given (which is hashed
at once and never kept), in the online history the last batch run left (fangpin.store.history),
within the key's scope. It is re-scored through the same path as ``/v1/events``
(serving.scoring.rescored: stored snapshot and history → the model's one method → reasons), at the
later of the ledger's quarter and the quarter the clue was received in.
"""

from __future__ import annotations

from datetime import date

from fastapi import Request

from fangpin import clues as fc
from fangpin import quarters as fq
from fangpin.store import ApiKeyInfo
from fangpin.warnings import local_date
from serving import auth
from serving.errors import ApiError
from serving.schemas import ClueIn, ClueOut


def _quarter_of(d: date) -> str:
    return fq.fmt(d.year, (d.month - 1) // 3 + 1)


def _scored(request: Request, key: str, row: dict, received: date, channel: str):
    """Re-score the household (the /v1/events path) and the candidate warning at the clue's level."""
    from fangpin.store.loop import Scored
    from serving.scoring import rescored

    state = request.app.state
    m = state.models.current
    if m is None:
        raise ApiError(503, "model not loaded", "模型尚未加载，请稍后重试或联系管理员")
    q = fq.from_index(max(fq.to_index(row["quarter"]), fq.to_index(_quarter_of(received))))
    (r,) = rescored(m, state.scoring, [key], {key: q}, {key: row}, explain="all")
    level = fc.warning_level(r.level if r.in_scope else None, channel, state.params)
    cand = r.record(level, state.params, state.clock()) if r.in_scope and level else None
    return Scored(in_scope=r.in_scope, level=r.level, probability=r.probability, reasons=r.reasons,
                  candidate=cand), m.version


def intake(request: Request, who: ApiKeyInfo, body: ClueIn, source: str) -> ClueOut:
    """Record one clue (module doc). Raises fangpin.clues.ClueError (the caller's 422),
    serving.auth.Forbidden (outside the key's scope) or ApiError (503: no model)."""
    from fangpin.ids import keyed_hashes, mask
    from fangpin.store import history as hs
    from fangpin.store.loop import ClueIn as StoredClue
    from fangpin.store.loop import record_clue

    state = request.app.state
    params, ctx, now = state.params, state.scoring, state.clock()
    limit = params.clues.max_text_chars
    text = fc.check_text(body.text, "反映内容", limit)
    received_by = fc.check_text(body.received_by, "接收人", 64)
    if not text or not received_by:
        raise fc.ClueError("须填写反映内容和接收人")
    for text_, what in ((body.village, "村"), (body.county, "县"), (body.township, "乡镇")):
        fc.check_text(text_, what, 64)
    received = fc.local_received(body.received_at, now)
    county = who.scope.county
    person_key = id_masked = None
    key = None
    if body.id_number:
        person_key = keyed_hashes([body.id_number.upper()], ctx.id_key)[0]
        id_masked = mask(body.id_number.upper())
    if body.household_id:
        key = keyed_hashes([body.household_id.strip()], ctx.id_key)[0]
    elif person_key is not None:
        key = hs.households_of(ctx.store, [person_key], county).get(person_key, (None, None))[0]
    # a county's key finds its county's households only (another county's: as if unknown)
    row = hs.histories(ctx.store, [key], [county] if county is not None else None).get(key) if key else None
    if row is not None and not who.scope.covers(row["county"], row["township"]):
        raise auth.Forbidden()
    scored, version = None, None
    if row is not None:
        place = (row["county"], row["township"], row["village"])
        scored, version = _scored(request, key, row, local_date(received), body.channel)
    else:
        place = (body.county or county, body.township or who.scope.township, body.village)
        if not place[0] or not place[1]:
            raise fc.ClueError("台账中未找到该户：请填写该户所在的县和乡镇")
        if not who.scope.covers(place[0], place[1]):
            raise auth.Forbidden()
    clue = StoredClue(channel=body.channel, county=place[0], township=place[1], village=place[2],
                      household_id=row["household_id"] if row else None, person_key=person_key,
                      id_masked=id_masked, text=text, received_by=received_by, received_at=received,
                      key_id=who.id, source=source, household_key=key if row else None)
    res = record_clue(state.store, clue, scored, params, now)
    state.store.audit_enqueue(key_id=who.id, endpoint="POST /v1/clues" if source == "api" else "POST /cadre/clues",
                              household_ids=[row["household_id"]] if row else [],
                              levels=[res.level] if res.level else [], outcome=f"clue:{res.outcome}",
                              model_version=version)
    return ClueOut(clue_id=res.clue_id, outcome=res.outcome, outcome_text=fc.OUTCOME_LABEL[res.outcome],
                   channel=body.channel, household_id=clue.household_id, county=place[0], township=place[1],
                   warning_id=res.warning_id, level=res.level, probability=scored.probability if scored else None,
                   deadline=res.deadline, return_risk=res.return_risk, repeats=res.repeats,
                   reasons=scored.reasons if scored else [], model_version=version)


def event_clue(request: Request, who: ApiKeyInfo, r, rec, events: list[dict], created: bool) -> None:
    """A department event that created or raised its household's warning (POST /v1/events), as a
    部门预警 clue joined to that warning: the county's one list of clues shows it, and further
    events of the household are merged into it while the warning is open."""
    from fangpin.store.loop import ClueIn as StoredClue
    from fangpin.store.loop import Scored, record_clue

    state = request.app.state
    now = state.clock()
    text = "；".join(f"{e['department']}：{e['event_type']}（{e['event_date'].isoformat()}"
                    + (f"，{e['amount']:,.0f}元" if e.get("amount") is not None else "") + "）" for e in events)
    row = r.row
    clue = StoredClue(channel=fc.DEPARTMENT, county=row["county"], township=row["township"], village=row["village"],
                      household_id=row["household_id"], person_key=events[0]["person_key"] if events else None,
                      id_masked=None, text=text or fc.DEPARTMENT, received_by="部门推送", received_at=now,
                      key_id=who.id, source="event", household_key=r.key)
    record_clue(state.store, clue, Scored(in_scope=True, level=r.level, probability=r.probability, reasons=r.reasons,
                                          candidate=rec), state.params, now, created_by_event=created)
