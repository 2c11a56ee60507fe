"""The online history in the warning store: what scoring one household alone needs of the ledger.

``fangpin score`` writes, for the counties it scored and as of the quarter it scored (when that
is not older than what is stored), one row per household (its history and snapshot, keyed by the
keyed hash of 户编号), the person → household map and every place's context
(fangpin.store.schema). The API reads them per request (:func:`histories`, :func:`contexts`) and
``POST /v1/events`` adds department events (:func:`add_events`) and raises warnings
(:func:`raise_warning`). Functions take the :class:`fangpin.store.Store` they work on.

Why a table and not a memory-mapped file: ``/v1/events`` writes (new events, the household's new
level, warnings) in transactions that several API processes share, and a primary-key lookup of a
request's households costs well under a millisecond on both SQLite and PostgreSQL
(docs/benchmarks.md, "Online history").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from fangpin.store.schema import (
    DepartmentEventRow,
    HouseholdHistoryRow,
    HouseholdPersonRow,
    PlaceContextRow,
    WarningRow,
)
from fangpin.warnings import LEVEL_RANK, STATUS_OPEN, severity

_INSERT_BATCH = 2000
_SQLITE_BULK_CACHE_KIB = 512 * 1024  # page cache of a bulk history write (SQLite)


def _now() -> datetime:
    return datetime.now(UTC)


def _dialect(conn):
    if conn.dialect.name not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"unsupported store dialect {conn.dialect.name}")
    return postgresql if conn.dialect.name == "postgresql" else sqlite


def _batches(rows: Iterable[dict], n: int = _INSERT_BATCH):
    batch: list[dict] = []
    for r in rows:
        batch.append(r)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def _bulk_insert(conn, table, rows: Iterable[dict], constants: dict, skip_conflicts: tuple[str, ...] = ()) -> int:
    """Insert ``rows`` (dicts of the table's columns, ``data`` as JSON text) into ``table`` with
    the same ``constants`` on every row, in executemany batches straight to the database driver:
    the values are converted once per column type, not once per row by SQLAlchemy (a province's
    history is millions of rows). ``skip_conflicts``: ON CONFLICT (these) DO NOTHING."""
    from operator import itemgetter

    cols = [c for c in table.__table__.columns if c.name not in constants]
    ph = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    pg = conn.dialect.name == "postgresql"
    names = [c.name for c in cols] + list(constants)
    marks = [f"CAST({ph} AS JSON)" if (pg and n == "data") else ph for n in names]
    sql = f"INSERT INTO {table.__tablename__} ({', '.join(names)}) VALUES ({', '.join(marks)})"
    if skip_conflicts:
        sql += f" ON CONFLICT ({', '.join(skip_conflicts)}) DO NOTHING"

    def processed(name, value):  # the driver value of a constant, as SQLAlchemy would bind it
        proc = table.__table__.c[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        return proc(value) if proc else value

    tail = tuple(processed(n, v) for n, v in constants.items())
    get = itemgetter(*[c.name for c in cols])
    n = 0
    if not pg:  # keys are hashes, so index pages are hit at random: a page cache that holds them
        conn.exec_driver_sql(f"PRAGMA cache_size=-{_SQLITE_BULK_CACHE_KIB}")
    try:
        for batch in _batches(rows, 20_000):
            conn.exec_driver_sql(sql, [get(r) + tail for r in batch])
            n += len(batch)
    finally:
        if not pg:
            conn.exec_driver_sql("PRAGMA cache_size=-2000")  # SQLite's default again (pooled connection)
    return n


def stored_quarter(store, counties: Sequence[str]) -> str | None:
    """The newest quarter of the stored history of these counties (None when there is none)."""
    with store.engine.connect() as conn:
        return conn.scalar(select(func.max(HouseholdHistoryRow.quarter)).where(
            HouseholdHistoryRow.county.in_(list(counties))))


def write_history(store, quarter: str, counties: Sequence[str], households: Iterable[dict],
                  persons: Iterable[dict], places: Iterable[dict]) -> dict:
    """Replace the history of ``counties`` by that of ``quarter``, in one transaction; nothing is
    written when the store already holds a newer quarter for them (scoring an old quarter again
    never takes the online history back in time). ``data`` of households and places is JSON text
    (as batch scoring writes it). Returns the counts written (or ``skipped``)."""
    from fangpin import quarters as fq

    counties = sorted(set(counties))
    newest = stored_quarter(store, counties)
    if newest is not None and fq.to_index(newest) > fq.to_index(quarter):
        return {"skipped": f"the store holds {newest}", "households": 0, "persons": 0, "places": 0}
    now = _now()
    out = {"households": 0, "persons": 0, "places": 0}

    def run(conn):
        for table in (HouseholdHistoryRow, HouseholdPersonRow, PlaceContextRow):
            conn.execute(delete(table).where(table.county.in_(counties)))
        out["households"] = _bulk_insert(conn, HouseholdHistoryRow, households, {"quarter": quarter, "updated_at": now})
        # a person listed in two households of the quarter (ingest reports it) maps to the first
        out["persons"] = _bulk_insert(conn, HouseholdPersonRow, persons, {}, skip_conflicts=("person_key",))
        out["places"] = _bulk_insert(conn, PlaceContextRow, places, {"updated_at": now})

    store.write(run, retry=False)  # the rows are generators: consumed once
    return out


def histories(store, household_keys: Sequence[str]) -> dict[str, dict]:
    """The stored rows of these households (by keyed 户编号 hash), each with the department
    events received since (``api_events``)."""
    if not household_keys:
        return {}
    cols = [HouseholdHistoryRow.household_key, HouseholdHistoryRow.household_id, HouseholdHistoryRow.county,
            HouseholdHistoryRow.township, HouseholdHistoryRow.village, HouseholdHistoryRow.quarter,
            HouseholdHistoryRow.level, HouseholdHistoryRow.head_name, HouseholdHistoryRow.id_masked,
            HouseholdHistoryRow.data]
    keys = list(dict.fromkeys(household_keys))
    with store.engine.connect() as conn:
        rows = {r.household_key: {**r._mapping, "api_events": []}
                for r in conn.execute(select(*cols).where(HouseholdHistoryRow.household_key.in_(keys)))}
        if rows:
            ev = conn.execute(select(DepartmentEventRow).where(DepartmentEventRow.household_key.in_(list(rows))))
            for e in ev.mappings():
                rows[e["household_key"]]["api_events"].append(
                    {"person_key": e["person_key"], "event_date": e["event_date"].isoformat(),
                     "department": e["department"], "event_type": e["event_type"], "amount": e["amount"]})
    return rows


def contexts(store, places: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], dict]:
    """Context of each (county, township, village): the township's values merged with the
    village's (models.features.context_columns), when both describe the same quarter."""
    places = list(dict.fromkeys(places))
    if not places:
        return {}
    wanted = {k for c, t, v in places for k in ((c, t, ""), (c, t, v))}
    with store.engine.connect() as conn:
        rows = conn.execute(select(PlaceContextRow.county, PlaceContextRow.township, PlaceContextRow.village,
                                   PlaceContextRow.quarter, PlaceContextRow.data).where(
            tuple_(PlaceContextRow.county, PlaceContextRow.township, PlaceContextRow.village).in_(sorted(wanted))))
        got = {(r.county, r.township, r.village): {**r.data, "quarter": r.quarter} for r in rows}
    out = {}
    for c, t, v in places:
        m = merge_context(got.get((c, t, "")), got.get((c, t, v)))
        if m is not None:
            out[(c, t, v)] = m
    return out


def merge_context(township: dict | None, village: dict | None) -> dict | None:
    """A place's context: its township's values with its village's, when both describe the same
    quarter (else the township's alone)."""
    if township is None and village is None:
        return None
    if township is not None and village is not None and township["quarter"] != village["quarter"]:
        village = None
    return {**(township or {}), **(village or {})}


def households_of(store, person_keys: Sequence[str], county: str | None) -> dict[str, tuple[str, str]]:
    """person_key → (household_key, county) for the persons known in ``county`` (None: any)."""
    if not person_keys:
        return {}
    stmt = select(HouseholdPersonRow.person_key, HouseholdPersonRow.household_key, HouseholdPersonRow.county).where(
        HouseholdPersonRow.person_key.in_(list(dict.fromkeys(person_keys))))
    if county is not None:
        stmt = stmt.where(HouseholdPersonRow.county == county)
    with store.engine.connect() as conn:
        return {r.person_key: (r.household_key, r.county) for r in conn.execute(stmt)}


def add_events(store, rows: Sequence[dict]) -> set[str]:
    """Store department events (:class:`fangpin.store.schema.DepartmentEventRow` fields); an event
    already stored (same ``event_key``) is not stored again. Returns the keys stored now."""
    if not rows:
        return set()
    now = _now()
    unique = [{**r, "received_at": now} for r in {r["event_key"]: r for r in rows}.values()]

    def run(conn):
        # one statement that says which rows it inserted (the same event again: not inserted)
        stmt = (_dialect(conn).insert(DepartmentEventRow).on_conflict_do_nothing(index_elements=["event_key"])
                .returning(DepartmentEventRow.event_key))
        return set(conn.execute(stmt, unique).scalars())

    return store.write(run)


def event_counts(store, county: str | None = None) -> dict:
    """Stored department events: total and unmatched (no household), optionally in one county."""
    conds = [] if county is None else [DepartmentEventRow.county == county]
    with store.engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(DepartmentEventRow).where(*conds))
        unmatched = conn.scalar(select(func.count()).select_from(DepartmentEventRow).where(
            *conds, DepartmentEventRow.household_key.is_(None)))
    return {"events": int(total or 0), "unmatched": int(unmatched or 0)}


def raise_warning(store, household_key: str, record: dict, previous_level: str | None) -> str:
    """Record a household's new combined level after a department event, in one transaction: its
    history row takes ``record["level"]``, and the warning (``record``: a WarningRecord in its JSON
    form) is created, or an open one of the same quarter and model version is raised to it; a
    closed (verified) warning is left as it is. Only when the level is higher than both
    ``previous_level`` and the household's stored level. Returns what happened: ``created``,
    ``raised``, ``kept_closed`` or ``not_higher``."""
    level = record["level"]

    def run(conn) -> str:
        # the household's row is locked first (PostgreSQL; SQLite: the write transaction holds the
        # store's lock), so concurrent events of one household decide one after the other
        conn.execute(update(HouseholdHistoryRow).where(HouseholdHistoryRow.household_key == household_key)
                     .values(updated_at=HouseholdHistoryRow.updated_at))
        stored = conn.scalar(select(HouseholdHistoryRow.level).where(
            HouseholdHistoryRow.household_key == household_key))
        if severity(level) <= max(severity(previous_level), severity(stored)):
            return "not_higher"
        conn.execute(update(HouseholdHistoryRow).where(HouseholdHistoryRow.household_key == household_key)
                     .values(level=level, updated_at=_now()))
        existing = conn.execute(select(WarningRow.id, WarningRow.status, WarningRow.level).where(
            WarningRow.quarter == record["quarter"], WarningRow.household_id == record["household_id"],
            WarningRow.model_version == record["model_version"])).first()
        now = _now()
        if existing is None:
            row = {**record, "level_rank": LEVEL_RANK[level], "created_at": datetime.fromisoformat(record["created_at"]),
                   "deadline": date.fromisoformat(record["deadline"]), "updated_at": now,
                   "run_id": "event"}
            conn.execute(WarningRow.__table__.insert(), [row])
            return "created"
        if existing.status != STATUS_OPEN:
            return "kept_closed"
        conn.execute(update(WarningRow).where(WarningRow.id == existing.id).values(
            level=level, level_rank=LEVEL_RANK[level], probability=record["probability"],
            rule_hits=record["rule_hits"], reasons=record["reasons"], measures=record["measures"],
            ruleset_version=record["ruleset_version"], base_rate=record.get("base_rate"),
            other_pp=record.get("other_pp"), reference_period=record.get("reference_period"),
            deferred=record.get("deferred", False), deadline=date.fromisoformat(record["deadline"]),
            updated_at=now))
        return "raised"

    return store.write(run)
