"""Store functions of clues and of the loop after a warning (tables ``clues``, ``warning_loop``,
``household_ledger``; definitions in fangpin/clues.py).

Every write runs through the store's write helper (:meth:`fangpin.store.Store.write`: the write
lock taken up front, a bounded wait → StoreBusy / HTTP 503, a lost race → VerificationError /
HTTP 409). Functions take the :class:`fangpin.store.Store` they work on.

- :func:`record_clue`: one clue, in one transaction — merged into an open clue of the same
  household and channel, joined to the household's open warning (raised to the clue's level, its
  deadline brought forward), a new warning, or recorded only.
- :func:`verified_hook`: run inside a verification's transaction (Store.record_feedback): the
  decision step's deadline starts.
- :func:`apply_readback`: what the next export says (pipelines/readback.py), in one transaction.
- :func:`after_batch_write`: inside a batch run's transaction: people's floors kept on warnings
  the run refreshed, 返贫风险 marked from the households' ledger state.
- Reads: :func:`loops`, :func:`query_clues`, :func:`open_steps`, :func:`conflicts`,
  :func:`county_figures`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from fangpin import clues as fc
from fangpin.store.bulk import bulk_insert
from fangpin.store.history import raise_level
from fangpin.store.schema import ClueRow, FeedbackRow, HouseholdLedgerRow, WarningLoopRow, WarningRow
from fangpin.warnings import (
    LEVEL_RANK,
    STATUS_EXCLUDED,
    STATUS_INCLUDED,
    STATUS_OPEN,
    VerificationError,
    WarningRecord,
    local_date,
    max_level,
)

LEDGER_ACTOR = "全国系统台账"  # who a status change read back from an export is recorded as
_LOOP_COLS = [c.name for c in WarningLoopRow.__table__.columns]


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _dialect(conn):
    if conn.dialect.name not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"unsupported store dialect {conn.dialect.name}")
    return postgresql if conn.dialect.name == "postgresql" else sqlite


def _loop_defaults(warning_id: str, now: datetime, origin: str = fc.SCREENING) -> dict:
    return {"warning_id": warning_id, "origin": origin, "channels": [origin], "clues": 0, "floor_level": None,
            "return_risk": False, "verified_at": None, "decision_due": None, "identified_at": None,
            "identified_quarter": None, "identified_month": None, "support_due": None, "support_at": None,
            "support_source": None, "eliminated_quarter": None, "eliminated_month": None, "ledger_outcome": None,
            "readback_quarter": None, "conflict": None, "updated_at": now}


def origin_of_run(run_id: str | None) -> str:
    """The channel of a warning without a loop row, from the run that wrote it: a department event
    (POST /v1/events, run ``event``) or fangpin's screening (a batch run)."""
    return fc.DEPARTMENT if run_id == "event" else fc.SCREENING


def _loop_for_update(conn, warning_id: str) -> dict | None:
    stmt = select(WarningLoopRow).where(WarningLoopRow.warning_id == warning_id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    r = conn.execute(stmt).mappings().first()
    return dict(r) if r is not None else None


def _put_loop(conn, row: dict, existed: bool) -> None:
    if existed:
        vals = {k: v for k, v in row.items() if k != "warning_id"}
        conn.execute(update(WarningLoopRow).where(WarningLoopRow.warning_id == row["warning_id"]).values(**vals))
    else:
        conn.execute(WarningLoopRow.__table__.insert().values(**row))


def _put_loops(conn, new: list[dict], existing: list[dict]) -> None:
    """:func:`_put_loop` of many rows: one executemany insert of the new loops and one update of
    the existing ones (a read-back changes tens of thousands; a statement each took 2.5 ms)."""
    from sqlalchemy import bindparam

    t = WarningLoopRow.__table__
    if new:
        conn.execute(t.insert(), new)
    if existing:
        cols = [k for k in existing[0] if k != "warning_id"]
        conn.execute(update(t).where(t.c.warning_id == bindparam("_warning_id"))
                     .values({k: bindparam(k) for k in cols}),
                     [{**{k: r[k] for k in cols}, "_warning_id": r["warning_id"]} for r in existing])


def loops(store, warning_ids: Sequence[str]) -> dict[str, dict]:
    """warning id → its warning_loop row (warnings without one are absent: a batch warning of the
    screening channel that nothing has happened to yet)."""
    ids = list(dict.fromkeys(warning_ids))
    out: dict[str, dict] = {}
    with store.engine.connect() as conn:
        for i in range(0, len(ids), 500):
            rows = conn.execute(select(WarningLoopRow).where(WarningLoopRow.warning_id.in_(ids[i:i + 500])))
            out.update({r["warning_id"]: dict(r) for r in rows.mappings()})
    return out


def loop_view(loop: dict | None) -> dict:
    """A warning's loop for readers (API, page): the row's fields, or the screening defaults."""
    base = _loop_defaults("", datetime.now(UTC))
    base.pop("warning_id")
    base.pop("updated_at")
    if loop:
        base.update({k: v for k, v in loop.items() if k in base})
    return base


# ------------------------------------------------------------------------------------- clues


@dataclass(frozen=True)
class ClueIn:
    """A clue as received (checked by the caller: channel known, text filtered)."""

    channel: str
    county: str
    township: str
    village: str | None
    household_id: str | None  # 户编号 (None: not found in the ledger)
    person_key: str | None  # keyed hash of the ID number given
    id_masked: str | None
    text: str
    received_by: str
    received_at: datetime
    key_id: str | None
    source: str  # api | page | event
    household_key: str | None = None  # keyed hash of 户编号: the online history row (its level is kept in step)


@dataclass(frozen=True)
class Scored:
    """What scoring the household said (serving: the one re-scoring path of /v1/events)."""

    in_scope: bool
    level: str | None  # the household's combined level (model, rules) — None below every level
    probability: float | None
    reasons: list = field(default_factory=list)
    candidate: WarningRecord | None = None  # the warning the clue would create (its content)


@dataclass(frozen=True)
class ClueResult:
    clue_id: str
    outcome: str  # fangpin.clues.OUTCOMES
    warning_id: str | None
    level: str | None
    deadline: date | None
    return_risk: bool
    repeats: int
    created: bool  # a clue row was inserted (False: merged into an open clue)


def _open_clue(conn, c: ClueIn, today: date, merge_days: int):
    """The household's (else the person's) open clue of the same channel: its warning still open,
    or without a warning and received within ``merge_days``."""
    who = (ClueRow.household_id == c.household_id) if c.household_id else (ClueRow.person_key == c.person_key)
    if not c.household_id and not c.person_key:
        return None
    since = datetime.combine(date.fromordinal(today.toordinal() - merge_days), datetime.min.time(), UTC)
    stmt = (select(ClueRow).outerjoin(WarningRow, WarningRow.id == ClueRow.warning_id)
            .where(ClueRow.county == c.county, ClueRow.channel == c.channel, who,
                   or_(WarningRow.status == STATUS_OPEN,
                       and_(ClueRow.warning_id.is_(None), ClueRow.last_received_at >= since)))
            .order_by(ClueRow.recorded_at.desc()).limit(1))
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=ClueRow)
    return conn.execute(stmt).mappings().first()


def _ledger_state(conn, county: str, household_id: str | None):
    if household_id is None:
        return None
    return conn.execute(select(HouseholdLedgerRow).where(
        HouseholdLedgerRow.county == county, HouseholdLedgerRow.household_id == household_id)).mappings().first()


def _open_warning(conn, county: str, household_id: str):
    stmt = (select(WarningRow).where(WarningRow.county == county, WarningRow.household_id == household_id,
                                     WarningRow.status == STATUS_OPEN)
            .order_by(WarningRow.quarter.desc(), WarningRow.level_rank, WarningRow.id).limit(1))
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return conn.execute(stmt).mappings().first()


def _warning_row(rec: WarningRecord, run_id: str, now: datetime) -> dict:
    d = rec.model_dump(mode="json")
    return {**d, "level_rank": LEVEL_RANK[rec.level], "created_at": rec.created_at, "deadline": rec.deadline,
            "updated_at": now, "run_id": run_id, "deferred": bool(rec.deferred)}


def record_clue(store, c: ClueIn, scored: Scored | None, params, now: datetime | None = None, *,
                created_by_event: bool = False) -> ClueResult:
    """Record one clue in one write transaction (module doc). ``scored`` is None when the household
    is not in the ledger (``c.household_id`` None). The clue's warning level is the more urgent of
    the scored level and the channel's floor (fangpin.clues.warning_level); its verification is due
    by fangpin.clues.verification_due from the day the clue was received."""
    if c.channel not in fc.CHANNELS:
        raise fc.ClueError(f"未知线索渠道：{c.channel}（可选：{'、'.join(fc.CHANNELS)}）")
    now = _utc(now) or datetime.now(UTC)
    received = fc.local_received(c.received_at, now)
    today, day = local_date(now), local_date(received)
    floor = fc.floor_of(c.channel, params)
    if c.source == "event" and scored is not None and scored.in_scope:
        # the level a department's event lifted the household to is its floor: the quarter's batch,
        # re-run from the export without that event, must not lower it (after_batch_write)
        floor = max_level((floor, scored.level))
    report = {"received_at": received.isoformat(), "received_by": c.received_by, "text": c.text,
              "channel": c.channel}

    def run(conn) -> ClueResult:
        old = _open_clue(conn, c, today, params.clues.merge_days)
        if old is not None:  # a duplicate: merged into the open clue, never repeated
            reports = list(old["reports"] or []) + [report]
            conn.execute(update(ClueRow).where(ClueRow.id == old["id"]).values(
                repeats=ClueRow.repeats + 1, reports=reports, last_received_at=max(_utc(old["last_received_at"]),
                                                                                    received)))
            if old["warning_id"] is not None:
                lp = _loop_for_update(conn, old["warning_id"])
                row = lp or _loop_defaults(old["warning_id"], now)
                row.update(clues=int(row["clues"]) + 1, updated_at=now)
                _put_loop(conn, row, lp is not None)
            return ClueResult(old["id"], fc.MERGED, old["warning_id"], old["level"], old["deadline"],
                              bool(old["return_risk"]), int(old["repeats"]) + 1, False)

        state = _ledger_state(conn, c.county, c.household_id)
        rr = state is not None and fc.is_return_risk(state["monitor_category"], state["risk_eliminated"])
        level = fc.warning_level(scored.level if scored and scored.in_scope else None, c.channel, params)
        warning_id, deadline, outcome = None, None, None
        if c.household_id is None:
            outcome = fc.UNMATCHED
            deadline = fc.verification_due(floor or "红", c.channel, day, params)
            level = None
        elif scored is None or not scored.in_scope:
            outcome, level = fc.MONITORED, None
        else:
            w = _open_warning(conn, c.county, c.household_id)
            if w is not None:
                outcome, warning_id = fc.JOINED, w["id"]
                due = fc.verification_due(level or w["level"], c.channel, day, params) if level else w["deadline"]
                new_level = max_level((w["level"], level))
                deadline = min(w["deadline"], due)
                vals = {"deadline": deadline, "updated_at": now}
                if new_level != w["level"]:
                    vals.update(level=new_level, level_rank=LEVEL_RANK[new_level])
                    cand = scored.candidate
                    if cand is not None:  # raised: the newer scoring's content comes with the level
                        vals.update(probability=cand.probability,
                                    rule_hits=[h.model_dump(mode="json") for h in cand.rule_hits],
                                    reasons=[r.model_dump(mode="json") for r in cand.reasons],
                                    measures=[m.model_dump(mode="json") for m in cand.measures])
                changed = conn.execute(update(WarningRow).where(WarningRow.id == w["id"],
                                                                WarningRow.status == STATUS_OPEN).values(**vals)).rowcount
                if changed != 1:
                    raise VerificationError("该预警状态已被他人更新，请刷新后重试")
                level = new_level
                raise_level(conn, c.household_key, c.county, level)
                if created_by_event:
                    outcome = fc.CREATED
                lp = _loop_for_update(conn, w["id"])
                row = lp or _loop_defaults(w["id"], now, origin_of_run(w["run_id"]))
                if c.channel not in row["channels"]:
                    row["channels"] = list(row["channels"]) + [c.channel]
                row.update(clues=int(row["clues"]) + 1, floor_level=max_level((row["floor_level"], floor)),
                           return_risk=bool(row["return_risk"]) or rr, updated_at=now)
                _put_loop(conn, row, lp is not None)
            elif level is None:
                outcome = fc.NOT_WARNED
            else:
                cand = scored.candidate
                if cand is None:
                    raise ValueError("a clue that becomes a warning needs the scored candidate record")
                deadline = fc.verification_due(level, c.channel, day, params)
                rec = cand.model_copy(update={"level": level, "deadline": deadline, "created_at": now,
                                              "deferred": False})
                same = conn.execute(select(WarningRow.id, WarningRow.status, WarningRow.deadline).where(
                    WarningRow.quarter == rec.quarter, WarningRow.household_id == rec.household_id,
                    WarningRow.model_version == rec.model_version)).first()
                if same is not None:  # this quarter's warning exists and is verified (an open one was joined)
                    outcome, warning_id, deadline = fc.KEPT_CLOSED, same.id, None
                    level = None
                else:
                    conn.execute(WarningRow.__table__.insert(), [_warning_row(rec, "clue", now)])
                    raise_level(conn, c.household_key, c.county, level)
                    row = _loop_defaults(rec.id, now, c.channel)
                    row.update(clues=1, floor_level=floor, return_risk=rr)
                    _put_loop(conn, row, False)
                    outcome, warning_id = fc.CREATED, rec.id
        cid = fc.clue_id()
        conn.execute(ClueRow.__table__.insert().values(
            id=cid, channel=c.channel, county=c.county, township=c.township, village=c.village,
            household_id=c.household_id, person_key=c.person_key, id_masked=c.id_masked, text=c.text,
            received_by=c.received_by, received_at=received, last_received_at=received, recorded_at=now,
            key_id=c.key_id, source=c.source, outcome=outcome, warning_id=warning_id,
            level=(scored.level if scored else None), probability=(scored.probability if scored else None),
            reasons=(scored.reasons if scored else None), deadline=deadline, return_risk=rr, repeats=0,
            reports=[]))
        return ClueResult(cid, outcome, warning_id, level, deadline, rr, 0, True)

    return store.write(run)


def query_clues(store, *, scope=None, county: str | None = None, township: str | None = None,
                channel: str | None = None, outcome: str | None = None, household_id: str | None = None,
                limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
    """Clues matching the filters, newest first, each with its warning's status; and the total."""
    conds = []
    for col, val in ((ClueRow.county, county), (ClueRow.township, township), (ClueRow.channel, channel),
                     (ClueRow.outcome, outcome), (ClueRow.household_id, household_id)):
        if val is not None:
            conds.append(col == val)
    if scope is not None:
        conds += scope.conditions(ClueRow)
    with store.engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(ClueRow).where(*conds))
        rows = conn.execute(
            select(ClueRow, WarningRow.status.label("warning_status"))
            .outerjoin(WarningRow, WarningRow.id == ClueRow.warning_id).where(*conds)
            .order_by(ClueRow.last_received_at.desc(), ClueRow.id).limit(limit).offset(offset)).mappings()
        items = [{**dict(r), "received_at": _utc(r["received_at"]), "last_received_at": _utc(r["last_received_at"]),
                  "recorded_at": _utc(r["recorded_at"])} for r in rows]
    return items, int(total or 0)


# ------------------------------------------------------------------------- verification hook


def verified_hook(params, now: datetime | None = None):
    """For Store.record_feedback: inside the verification's transaction, a 纳入监测 outcome starts
    the decision step (``warnings.decision`` from the verification day); either outcome records the
    verification day."""
    def hook(conn, warning_id: str, status: str, when: datetime) -> None:
        t = _utc(now) or datetime.now(UTC)
        day = local_date(_utc(when) or t)
        lp = _loop_for_update(conn, warning_id)
        row = lp or _loop_defaults(warning_id, t)
        row.update(verified_at=day, updated_at=t)
        if status == STATUS_INCLUDED and row["identified_at"] is None:
            row["decision_due"] = fc.step_deadline(params.warnings.decision, day, params.warnings)
        _put_loop(conn, row, lp is not None)

    return hook


def record_support_plan(store, warning_id: str, *, on: date, params, now: datetime | None = None,
                        audit: dict | None = None) -> dict:
    """A cadre records the household's support plan (the step after identification). Only after an
    export showed the identification, and once."""
    now = _utc(now) or datetime.now(UTC)

    def run(conn) -> dict:
        w = conn.execute(select(WarningRow.id, WarningRow.status).where(WarningRow.id == warning_id)).first()
        if w is None:
            raise KeyError(warning_id)
        lp = _loop_for_update(conn, warning_id)
        if lp is None or lp["identified_at"] is None:
            raise VerificationError("台账尚未显示该户已识别为监测对象，不能登记帮扶计划")
        if lp["support_at"] is not None:
            raise VerificationError("该户帮扶计划已登记，不能重复登记")
        lp.update(support_at=min(on, local_date(now)), support_source="cadre", updated_at=now)
        _put_loop(conn, lp, True)
        if audit is not None:
            conn.execute(_audit_insert(), store.audit_row(**audit, outcome="support_plan", at=now))
        return lp

    return store.write(run)


def _audit_insert():
    from fangpin.store.schema import AuditRow

    return AuditRow.__table__.insert()


# ---------------------------------------------------------------------------------- read-back


def readback_targets(store, max_quarter: str) -> list[dict]:
    """Warnings a read-back looks at: every warning of a quarter up to ``max_quarter`` whose loop is
    not finished (ledger outcome not 已消除), with its loop fields."""
    cols = [WarningRow.id, WarningRow.quarter, WarningRow.county, WarningRow.township, WarningRow.village,
            WarningRow.household_id, WarningRow.status, WarningRow.level, WarningRow.run_id]
    lcols = [getattr(WarningLoopRow, c) for c in _LOOP_COLS if c != "warning_id"]
    stmt = (select(*cols, *lcols, WarningLoopRow.warning_id.label("loop_id"))
            .outerjoin(WarningLoopRow, WarningLoopRow.warning_id == WarningRow.id)
            .where(WarningRow.quarter <= max_quarter,
                   or_(WarningLoopRow.ledger_outcome.is_(None), WarningLoopRow.ledger_outcome != fc.ELIMINATED)))
    with store.engine.connect() as conn:
        res = conn.execute(stmt)
        keys = list(res.keys())
        return [dict(zip(keys, r, strict=True)) for r in res.all()]


def apply_readback(store, changes: Iterable[dict], ledger_rows: Iterable[dict], *, now: datetime,
                   audit_key: str | None = None) -> dict:
    """Write a read-back in one transaction. ``changes``: per warning ``{"warning_id", "loop"
    (the full new loop row), "loop_existed", "status" (new status or None), "from_status",
    "reason", "household_id"}``; ``ledger_rows``: household_ledger rows (upserted). A status read
    back from the ledger wins over feedback: it is written with a feedback row by
    ``全国系统台账`` and the reason."""
    changes = list(changes)
    ledger_rows = list(ledger_rows)

    def run(conn) -> dict:
        n_status = 0
        _put_loops(conn, [ch["loop"] for ch in changes if not ch["loop_existed"]],
                   [ch["loop"] for ch in changes if ch["loop_existed"]])
        for ch in changes:
            if ch.get("status"):
                done = conn.execute(update(WarningRow).where(WarningRow.id == ch["warning_id"],
                                                             WarningRow.status == ch["from_status"])
                                    .values(status=ch["status"], status_reason=ch["reason"], updated_at=now)).rowcount
                if done != 1:
                    raise VerificationError("预警状态在回读过程中被他人更新，请重新运行回读")
                conn.execute(FeedbackRow.__table__.insert().values(
                    warning_id=ch["warning_id"], from_status=ch["from_status"], to_status=ch["status"],
                    reason=ch["reason"], actor=LEDGER_ACTOR, visited_at=now, key_id=audit_key, recorded_at=now))
                n_status += 1
        if ledger_rows:  # a newer export's state replaces an older one's, never the reverse
            _dialect(conn)
            keep = [c.name for c in HouseholdLedgerRow.__table__.columns if c.name not in ("county", "household_id")]
            bulk_insert(conn, HouseholdLedgerRow, ledger_rows, {}, update=(["county", "household_id"], keep),
                        update_where="excluded.quarter >= household_ledger.quarter", convert=("updated_at",))
        return {"loops": len(changes), "status_changes": n_status, "households": len(ledger_rows)}

    return store.write(run)


# ------------------------------------------------------------------------- inside a batch write


def after_batch_write(conn, quarter: str, model_version: str, run_id: str, now: datetime) -> None:
    """Inside a batch run's transaction, on the warnings it wrote: a warning a people channel
    reported keeps that channel's floor (the run refreshed its level from the model), and a warning
    of a household the ledger shows eliminated is marked 返贫风险."""
    floors = conn.execute(
        select(WarningRow.id, WarningRow.level, WarningLoopRow.floor_level)
        .join(WarningLoopRow, WarningLoopRow.warning_id == WarningRow.id)
        .where(WarningRow.quarter == quarter, WarningRow.model_version == model_version,
               WarningRow.run_id == run_id, WarningLoopRow.floor_level.is_not(None))).all()
    for wid, level, floor in floors:
        lv = max_level((level, floor))
        if lv != level:
            conn.execute(update(WarningRow).where(WarningRow.id == wid).values(level=lv, level_rank=LEVEL_RANK[lv]))
    eliminated = (select(WarningRow.id)
                  .join(HouseholdLedgerRow, and_(HouseholdLedgerRow.county == WarningRow.county,
                                                 HouseholdLedgerRow.household_id == WarningRow.household_id))
                  .where(WarningRow.quarter == quarter, WarningRow.model_version == model_version,
                         WarningRow.run_id == run_id, HouseholdLedgerRow.monitor_category.is_not(None),
                         HouseholdLedgerRow.risk_eliminated.is_(True), HouseholdLedgerRow.quarter <= quarter))
    ids = [r[0] for r in conn.execute(eliminated)]
    if not ids:
        return
    have = {r[0] for r in conn.execute(select(WarningLoopRow.warning_id).where(WarningLoopRow.warning_id.in_(ids)))}
    conn.execute(update(WarningLoopRow).where(WarningLoopRow.warning_id.in_(list(have)))
                 .values(return_risk=True, updated_at=now))
    new = [{**_loop_defaults(i, now), "return_risk": True} for i in ids if i not in have]
    if new:
        conn.execute(WarningLoopRow.__table__.insert(), new)


def clue_warning_ids():
    """A select of the warnings some clue reported (kept by a batch re-run that no longer warns)."""
    return select(ClueRow.warning_id).where(ClueRow.warning_id.is_not(None))


# -------------------------------------------------------------------------------------- reads


def _scoped(conds: list, scope, county: str | None, township: str | None, table=WarningRow) -> list:
    if county is not None:
        conds.append(table.county == county)
    if township is not None:
        conds.append(table.township == township)
    if scope is not None:
        conds += scope.conditions(table)
    return conds


_STEP_COLS = [WarningRow.id, WarningRow.quarter, WarningRow.county, WarningRow.township, WarningRow.village,
              WarningRow.household_id, WarningRow.head_name, WarningRow.id_masked, WarningRow.level,
              WarningRow.probability, WarningRow.status, WarningRow.deadline, WarningRow.model_version,
              WarningLoopRow.origin, WarningLoopRow.channels, WarningLoopRow.return_risk, WarningLoopRow.decision_due,
              WarningLoopRow.identified_at, WarningLoopRow.support_due, WarningLoopRow.support_at,
              WarningLoopRow.ledger_outcome, WarningLoopRow.verified_at]


def open_steps(store, today: date, *, scope=None, county: str | None = None, township: str | None = None,
               overdue_only: bool = False) -> list[dict]:
    """Every warning waiting on a step (fangpin.clues.current_step), with the step: open warnings
    (verification), verified 纳入监测 not yet identified (decision), identified without a support
    plan (support plan). Earliest deadline first. ``overdue_only``: steps past their deadline."""
    conds = _scoped([], scope, county, township)
    waiting = or_(WarningRow.status == STATUS_OPEN,
                  and_(WarningRow.status == STATUS_INCLUDED, WarningLoopRow.identified_at.is_(None),
                       WarningLoopRow.decision_due.is_not(None)),
                  and_(WarningRow.status == STATUS_INCLUDED, WarningLoopRow.identified_at.is_not(None),
                       WarningLoopRow.support_at.is_(None),
                       or_(WarningLoopRow.ledger_outcome.is_(None), WarningLoopRow.ledger_outcome != fc.ELIMINATED)))
    if overdue_only:
        waiting = or_(and_(WarningRow.status == STATUS_OPEN, WarningRow.deadline < today),
                      and_(WarningRow.status == STATUS_INCLUDED, WarningLoopRow.identified_at.is_(None),
                           WarningLoopRow.decision_due < today),
                      and_(WarningRow.status == STATUS_INCLUDED, WarningLoopRow.identified_at.is_not(None),
                           WarningLoopRow.support_at.is_(None), WarningLoopRow.support_due < today,
                           or_(WarningLoopRow.ledger_outcome.is_(None),
                               WarningLoopRow.ledger_outcome != fc.ELIMINATED)))
    stmt = (select(*_STEP_COLS).outerjoin(WarningLoopRow, WarningLoopRow.warning_id == WarningRow.id)
            .where(*conds, waiting))
    out = []
    with store.engine.connect() as conn:
        for r in conn.execute(stmt).mappings():
            d = dict(r)
            step = fc.current_step(d["status"], d["deadline"], d, today)
            if step is None or (overdue_only and not step.overdue):
                continue
            d.update(step=step.name, step_label=step.label, due=step.due, days_left=step.days_left,
                     overdue=step.overdue, due_text=step.text, origin=d["origin"] or fc.SCREENING,
                     channels=d["channels"] or [fc.SCREENING], return_risk=bool(d["return_risk"]))
            out.append(d)
    out.sort(key=lambda d: (d["due"] or date.max, -d["probability"], d["id"]))
    return out


def conflicts(store, *, scope=None, county: str | None = None, limit: int = 200) -> list[dict]:
    """Warnings whose verification feedback the ledger contradicted (the ledger won), newest first."""
    conds = _scoped([WarningLoopRow.conflict.is_not(None)], scope, county, None)
    stmt = (select(WarningRow.id, WarningRow.quarter, WarningRow.county, WarningRow.township, WarningRow.village,
                   WarningRow.household_id, WarningRow.level, WarningRow.status, WarningLoopRow.conflict,
                   WarningLoopRow.readback_quarter, WarningLoopRow.updated_at)
            .join(WarningLoopRow, WarningLoopRow.warning_id == WarningRow.id).where(*conds)
            .order_by(WarningLoopRow.updated_at.desc(), WarningRow.id).limit(limit))
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def county_rows(store, *, scope=None, county: str | None = None) -> tuple[list[dict], list[dict], list[dict]]:
    """The raw rows the county view aggregates: every warning with its loop (no personal fields),
    every clue (channel, place, outcome, received), every household's ledger state."""
    wcols = [WarningRow.id, WarningRow.quarter, WarningRow.county, WarningRow.township, WarningRow.village,
             WarningRow.level, WarningRow.probability, WarningRow.status, WarningRow.deadline,
             WarningRow.created_at, WarningRow.run_id]
    lcols = [WarningLoopRow.origin, WarningLoopRow.channels, WarningLoopRow.return_risk, WarningLoopRow.verified_at,
             WarningLoopRow.decision_due, WarningLoopRow.identified_at, WarningLoopRow.identified_quarter,
             WarningLoopRow.support_due, WarningLoopRow.support_at, WarningLoopRow.eliminated_quarter,
             WarningLoopRow.ledger_outcome, WarningLoopRow.conflict]
    with store.engine.connect() as conn:
        ws = [dict(r) for r in conn.execute(
            select(*wcols, *lcols).outerjoin(WarningLoopRow, WarningLoopRow.warning_id == WarningRow.id)
            .where(*_scoped([], scope, county, None))).mappings()]
        cs = [dict(r) for r in conn.execute(
            select(ClueRow.id, ClueRow.channel, ClueRow.county, ClueRow.township, ClueRow.village, ClueRow.outcome,
                   ClueRow.received_at, ClueRow.warning_id, ClueRow.repeats)
            .where(*_scoped([], scope, county, None, ClueRow))).mappings()]
        hs = [dict(r) for r in conn.execute(
            select(HouseholdLedgerRow.county, HouseholdLedgerRow.township, HouseholdLedgerRow.village,
                   HouseholdLedgerRow.quarter, HouseholdLedgerRow.monitor_category, HouseholdLedgerRow.monitor_since,
                   HouseholdLedgerRow.risk_eliminated, HouseholdLedgerRow.eliminated_at)
            .where(*_scoped([], scope, county, None, HouseholdLedgerRow))).mappings()]
    return ws, cs, hs


def counties(store, scope=None) -> list[str]:
    """Counties with warnings or clues (within the scope)."""
    with store.engine.connect() as conn:
        a = {r[0] for r in conn.execute(select(WarningRow.county).where(*_scoped([], scope, None, None)).distinct())}
        b = {r[0] for r in conn.execute(select(ClueRow.county).where(*_scoped([], scope, None, None, ClueRow))
                                         .distinct())}
    return sorted(a | b)


STATUS_ORDER = (STATUS_OPEN, STATUS_INCLUDED, STATUS_EXCLUDED)
