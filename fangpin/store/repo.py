"""Repository functions of the warning store: warnings by quarter, verification feedback, API keys
and the audit trail, over SQLAlchemy 2 (SQLite file by default, PostgreSQL by URL)."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, delete, event, func, select, update

from fangpin.ids import contains_personal_number
from fangpin.store.schema import ApiKeyRow, AuditRow, FeedbackRow, ModelRun, WarningRow, WebSessionRow
from fangpin.warnings import (
    LEVEL_RANK,
    LEVELS,
    STATUS_OPEN,
    STATUSES,
    VerificationError,
    WarningRecord,
    check_transition,
    contains_full_id,
)

log = logging.getLogger(__name__)

# county: county staff and leaders (the county view /county/), as opposed to county_system (a machine)
ROLES = ("county_system", "department", "township_cadre", "county", "analyst", "admin")
KEY_PREFIX = "fpk"
# Fields a re-run refreshes; id, created_at, deadline and the verification status are kept.
_REFRESHED = (
    "county", "township", "village", "head_name", "id_masked", "level", "level_rank", "probability",
    "rule_hits", "reasons", "measures", "ruleset_version", "updated_at", "run_id", "base_rate", "other_pp",
    "reference_period", "deferred",
)

_AUDIT_INSERT = AuditRow.__table__.insert()


class WarningNotFound(KeyError):
    pass


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


# ----------------------------------------------------------------------------------------- engine


def store_url(params) -> str:
    """``FANGPIN_STORE_URL``, else ``params.warnings.store_url``, else a SQLite file under the
    state dir (``<state_dir>/warnings.db``)."""
    env = os.environ.get("FANGPIN_STORE_URL")
    if env:
        return env
    if params.warnings.store_url:
        return params.warnings.store_url
    state = Path(params.paths.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state.resolve() / 'warnings.db'}"


SQLITE_AUTOCHECKPOINT = 1000  # pages: SQLite's default WAL auto-checkpoint


def make_engine(url: str, *, wait_s: float = 5.0, connections: int = 8) -> Engine:
    """An engine with JSON kept readable (UTF-8, not \\u escapes; orjson) and statement parameters
    kept out of error messages and logs (``hide_parameters``: they may be feedback text). SQLite
    gets foreign keys, WAL with synchronous=NORMAL, a busy timeout of ``wait_s``, and real
    transactions (SQLAlchemy's documented pysqlite recipe: the driver's own implicit BEGIN handling
    is switched off and BEGIN is emitted explicitly: ``BEGIN IMMEDIATE`` on connections marked as
    writers, see fangpin.store.tx). A file store and PostgreSQL keep at most ``connections``
    pooled connections; a call that finds none free within ``wait_s`` fails (→ StoreBusy)."""
    import orjson  # UTF-8 JSON text, ~10x faster than json.dumps (a quarter's write serialises 3 per warning)

    from fangpin.store.tx import WRITE_OPTION

    def dumps(o) -> str:
        return orjson.dumps(o).decode("utf-8")

    common = dict(json_serializer=dumps, hide_parameters=True)
    memory = ":memory:" in url or url in ("sqlite://", "sqlite:///")
    pool = {} if memory else dict(pool_size=connections, max_overflow=0, pool_timeout=wait_s)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": wait_s}, **common, **pool)
        busy_ms = int(wait_s * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
                # WAL + synchronous=NORMAL (SQLite's recommended pairing): every commit is atomic
                # and survives a crash of the process; the WAL is synced at checkpoints, not at
                # each commit, so an OS crash or power loss may roll back the last transactions.
                # Saves an fsync per audited request (~4 ms at FULL on this machine).
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "checkin")
        def _on_checkin(dbapi_conn, _record):  # pragma: no cover - exercised by every test
            # a batch write turns the automatic checkpoint off for its commit
            # (Store.write_quarter_tables): every connection goes back to the pool with it on
            if dbapi_conn is not None and not memory:
                dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT}")

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # pragma: no cover
            # writers take the write lock up front (then wait in the busy handler, bounded by
            # busy_timeout); readers stay deferred and never wait in WAL mode
            write = conn.get_execution_options().get(WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, **common, **pool)


# ------------------------------------------------------------------------------------ value types


@dataclass(frozen=True)
class WriteResult:
    run_id: str
    quarter: str
    model_version: str
    n_warnings: int
    inserted: int
    updated: int
    removed: int


@dataclass(frozen=True)
class Page:
    items: list[WarningRecord]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class Scope:
    """What a key may see: everything (``*``), a county (``县``) or a township (``县/乡镇``)."""

    county: str | None = None
    township: str | None = None

    @classmethod
    def parse(cls, text: str) -> Scope:
        t = (text or "").strip()
        if t == "*":
            return cls()
        parts = [p.strip() for p in t.split("/")]
        if not t or len(parts) > 2 or any(not p for p in parts):
            raise ValueError(f"scope must be '*', 'COUNTY' or 'COUNTY/TOWNSHIP', got {text!r}")
        return cls(parts[0], parts[1] if len(parts) == 2 else None)

    @property
    def kind(self) -> str:
        return "all" if self.county is None else ("county" if self.township is None else "township")

    def conditions(self, table) -> list:
        """SQL conditions keeping the rows of ``table`` (its ``county`` and ``township`` columns)
        within this scope: none for ``*``."""
        if self.county is None:
            return []
        conds = [table.county == self.county]
        if self.township is not None:
            conds.append(table.township == self.township)
        return conds

    def covers(self, county: str, township: str | None = None) -> bool:
        if self.county is None:
            return True
        if county != self.county:
            return False
        return self.township is None or township == self.township

    def __str__(self) -> str:
        if self.county is None:
            return "*"
        return self.county if self.township is None else f"{self.county}/{self.township}"


# role -> scope kinds it may hold
ROLE_SCOPES = {
    "county_system": {"county"},
    "department": {"county"},
    "township_cadre": {"township"},
    "county": {"county"},
    "analyst": {"county", "all"},
    "admin": {"county", "all"},
}


@dataclass(frozen=True)
class ApiKeyInfo:
    id: str
    role: str
    scope: Scope
    label: str | None
    created_at: datetime
    revoked: bool
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class Feedback:
    warning_id: str
    from_status: str
    to_status: str
    reason: str | None
    actor: str
    visited_at: datetime
    recorded_at: datetime
    key_id: str | None = None


@dataclass
class _RunCounts:
    inserted: int = 0
    updated: int = 0
    seen: set[str] = field(default_factory=set)
    counties: set[str] = field(default_factory=set)


# ------------------------------------------------------------------------------------------ store


def _row_to_record(r: WarningRow) -> WarningRecord:
    return WarningRecord(
        id=r.id, quarter=r.quarter, county=r.county, township=r.township, village=r.village,
        household_id=r.household_id, head_name=r.head_name, id_masked=r.id_masked, level=r.level,
        probability=r.probability, rule_hits=r.rule_hits, reasons=r.reasons, measures=r.measures,
        model_version=r.model_version, ruleset_version=r.ruleset_version,
        created_at=_utc(r.created_at), deadline=r.deadline, status=r.status, status_reason=r.status_reason,
        base_rate=r.base_rate, other_pp=r.other_pp, reference_period=r.reference_period, deferred=bool(r.deferred),
    )


_CONVERTED = ("created_at", "deadline", "rule_hits", "reasons", "measures")  # bound as SQLAlchemy binds them


def _stored_columns(batch):
    """A checked batch of fangpin.warnings.record_schema (validate_table) in the warnings table's
    columns: level_rank added, created_at as UTC timestamps (a naive text is UTC), deadline as
    dates; ``deferred`` false when missing. ``updated_at`` and ``run_id`` are the run's."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = pa.Table.from_batches([batch])
    try:
        created = t.column("created_at").cast(pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid:  # naive ISO texts (validate_table allows them): UTC
        parsed = {v: _utc(datetime.fromisoformat(v)) for v in pc.unique(t.column("created_at")).to_pylist()}
        created = pa.array([parsed[v] for v in t.column("created_at").to_pylist()], pa.timestamp("us", tz="UTC"))
    levels = t.column("level").to_pylist()
    return (t.drop_columns(["created_at", "deadline", "deferred"])
            .append_column("created_at", created)
            .append_column("deadline", t.column("deadline").cast(pa.date32()))
            .append_column("deferred", pc.fill_null(t.column("deferred"), False))
            .append_column("level_rank", pa.array([LEVEL_RANK[v] for v in levels], pa.int16())))


KEY_CACHE_SECONDS = 5.0  # a verified API key is trusted this long without a store lookup


class Store:
    """The warning store. ``secret`` keys the HMAC of API keys and of audited household ids.

    Verified API keys are remembered for ``key_cache_s`` seconds (by their HMAC, never the
    plaintext), so a client's requests do not each query the key table. Revoking through this
    Store takes effect at once; a revocation made elsewhere (``fangpin keys revoke`` in another
    process) within ``key_cache_s``. ``key_cache_s=0`` checks the store on every request."""

    def __init__(self, url_or_engine: str | Engine, secret: bytes, *, migrate: bool = False,
                 key_cache_s: float = KEY_CACHE_SECONDS, wait_s: float = 5.0, connections: int = 8):
        from fangpin.store.tx import AuditWriter, Writer

        if not secret:
            raise ValueError("the store needs a non-empty server secret")
        self.engine = (make_engine(url_or_engine, wait_s=wait_s, connections=connections)
                       if isinstance(url_or_engine, str) else url_or_engine)
        self.wait_s = float(wait_s)
        self._writer = Writer(self.engine, wait_s, connections)
        self._audit = AuditWriter(self._write_audit_rows)
        self._secret = bytes(secret)
        self._key_cache_s = float(key_cache_s)
        self._key_cache: dict[str, tuple[ApiKeyInfo, float]] = {}
        self._key_gen = 0  # bumped by every revocation: a lookup that raced one is not remembered
        if migrate:
            from fangpin.store.migrate import upgrade

            upgrade(self.engine)

    @classmethod
    def from_params(cls, params, *, migrate: bool = True) -> Store:
        """The configured store (see :func:`store_url`), migrated to the newest schema."""
        from fangpin.ids import load_key

        w = params.warnings
        secret = load_key(params.paths.state_dir, w.key_secret_env, w.key_secret_file)
        return cls(store_url(params), secret, migrate=migrate, key_cache_s=params.serving.key_cache_seconds,
                   wait_s=w.store_wait_s, connections=w.store_connections)

    def dispose(self) -> None:
        self._audit.close()
        self.engine.dispose()

    def write(self, fn, *, retry: bool = True):
        """``fn(conn)`` in one write transaction that takes the write lock up front and waits at
        most ``wait_s`` for it (fangpin.store.tx.Writer); a busy store raises StoreBusy."""
        return self._writer.run(fn, retry=retry)

    def checkpoint(self) -> None:
        """SQLite file store: copy the WAL's pages into the database file now (a PASSIVE
        checkpoint: readers and writers go on meanwhile). A batch write leaves this to its caller,
        which runs it beside its next work (fangpin score: the read-back) instead of inside the
        commit. Elsewhere nothing to do."""
        if self.engine.dialect.name != "sqlite" or self.engine.url.database in (None, "", ":memory:"):
            return
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(select(1))
        return True

    # ------------------------------------------------------------------------------- warnings

    def write_quarter_tables(
        self,
        tables: Iterable,
        quarter: str,
        model_version: str,
        *,
        counties: Iterable[str] | None = None,
        batch_size: int = 5000,
        tasks=None,
        thresholds=None,
    ) -> WriteResult:
        """Write one quarter's warnings of one model version, atomically and idempotently: Arrow
        tables of :func:`fangpin.warnings.record_schema` (what batch scoring writes), each checked
        with :func:`fangpin.warnings.validate_table` (the WarningRecord rules, in bulk) and inserted
        with executemany batches of ``batch_size`` rows.

        All in ONE transaction: a run that fails or is killed half way leaves the store exactly as
        before. Keyed on (quarter, household_id, model_version): a re-run updates the content of
        existing warnings (level, probability, reasons, measures …) but keeps their id, creation
        time, deadline and verification status/feedback; it never duplicates. Open (待核实)
        warnings of the same quarter and model version in the run's counties that the new run no
        longer produces are removed; verified ones are always kept. ``counties`` sets that scope
        explicitly (default: the counties present in the tables). ``tables`` may be a lazy
        iterable (e.g. chunks of a batch scorer); it is consumed inside the transaction. An item
        of it that is a callable instead of a table is called with the connection: what else the
        run writes in the same transaction (batch scoring's online history, chunk by chunk); an
        item that is a :class:`fangpin.store.levels_tasks.Tasks` holds 保障缺口 tasks
        (fangpin.tasks.task_schema), written where it comes (batch scoring: each chunk's after
        its warnings).

        ``tasks`` / ``thresholds``: callables returning more of the run's task tables and its level
        cut-off rows (models.levels), called after the warnings are written and stored in the same
        transaction. When the run gave tasks (either way), open tasks of the quarter in its
        counties that it no longer produces are removed (fangpin/store/levels_tasks.py)."""
        import pyarrow.compute as pc

        from fangpin.store.bulk import bulk_insert, first_repeat
        from fangpin.store.levels_tasks import Tasks, TaskWrite
        from fangpin.warnings import validate_table

        run_id = uuid.uuid4().hex
        started = _now()
        counts = _RunCounts()

        task_w, with_tasks = TaskWrite(quarter, run_id), [False]

        def run(conn):
            if conn.dialect.name == "sqlite":  # the commit does not checkpoint (Store.checkpoint)
                conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")

            def flush(batch) -> None:
                households = batch.column("household_id").to_pylist()
                existing = conn.scalar(
                    select(func.count()).select_from(WarningRow).where(
                        WarningRow.quarter == quarter, WarningRow.model_version == model_version,
                        WarningRow.household_id.in_(households))
                )
                counts.updated += existing
                counts.inserted += len(households) - existing
                bulk_insert(conn, WarningRow, [_stored_columns(batch)], {"updated_at": _now(), "run_id": run_id},
                            update=(["quarter", "household_id", "model_version"], _REFRESHED),
                            convert=_CONVERTED)

            for table in tables:
                if isinstance(table, Tasks):  # a chunk's tasks, as they come
                    task_w.add(conn, table.table)
                    with_tasks[0] = True
                    continue
                if callable(table):  # rows of other tables, in this transaction (e.g. the online history)
                    table(conn)
                    continue
                validate_table(table)
                for b in table.to_batches(max_chunksize=batch_size):
                    if not b.num_rows:
                        continue
                    other = pc.or_(pc.not_equal(b.column("quarter"), quarter),
                                   pc.not_equal(b.column("model_version"), model_version))
                    hids = b.column("household_id").to_pylist()
                    if pc.any(other).as_py():
                        i = pc.index(other, True).as_py()
                        raise ValueError(f"warning for household {hids[i]} is for {b.column('quarter')[i].as_py()}/"
                                         f"{b.column('model_version')[i].as_py()}, not {quarter}/{model_version}")
                    twice = first_repeat(hids, counts.seen)
                    if twice is not None:
                        raise ValueError(f"household {twice} appears twice in the run for {quarter}")
                    counts.counties.update(pc.unique(b.column("county")).to_pylist())
                    flush(b)

            scope = sorted(set(counties) if counties is not None else counts.counties)
            from fangpin.store.loop import after_batch_write, clue_warning_ids

            after_batch_write(conn, quarter, model_version, run_id, _now())
            removed = 0
            if scope:
                removed = conn.execute(
                    delete(WarningRow).where(
                        WarningRow.quarter == quarter,
                        WarningRow.model_version == model_version,
                        WarningRow.county.in_(scope),
                        WarningRow.run_id != run_id,
                        WarningRow.status == STATUS_OPEN,
                        WarningRow.id.not_in(clue_warning_ids()),  # a clue's warning stays until verified
                    )
                ).rowcount
            if tasks is not None:
                for t in tasks():
                    task_w.add(conn, t)
            if tasks is not None or with_tasks[0]:
                task_w.finish(conn, scope)
            if thresholds is not None:
                from fangpin.store.levels_tasks import write_thresholds

                write_thresholds(conn, thresholds(), quarter, model_version, scope, run_id)
            conn.execute(
                ModelRun.__table__.insert().values(
                    run_id=run_id, quarter=quarter, model_version=model_version, counties=scope,
                    n_warnings=len(counts.seen), n_inserted=counts.inserted, n_updated=counts.updated,
                    n_removed=removed, started_at=started, finished_at=_now(),
                )
            )
            return removed

        # a batch job: it may wait longer than an API request for a busy store; the lazy input
        # is consumed once, so a busy store is retried only before the transaction has begun
        removed = self._writer.run(run, retry=False, wait_s=max(self.wait_s, 60.0))
        result = WriteResult(run_id, quarter, model_version, len(counts.seen), counts.inserted,
                             counts.updated, removed)
        log.info("store: %s %s wrote %d warnings (%d new, %d updated, %d removed)", quarter,
                 model_version, result.n_warnings, result.inserted, result.updated, result.removed)
        return result

    def query_warnings(
        self,
        *,
        county: str | None = None,
        township: str | None = None,
        village: str | None = None,
        quarter: str | None = None,
        level: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        model_version: str | None = None,
        household_id: str | None = None,
        scope: Scope | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        """Warnings matching every given filter, earliest deadline first (deadlines follow the
        level: 红 within the verification days, 黄 the next monthly visit, 蓝 the half-yearly
        review), then the highest probability. ``scope`` restricts to a key's scope."""
        if limit < 1 or offset < 0:
            raise ValueError("limit must be >= 1 and offset >= 0")
        conds = []
        for col, val in ((WarningRow.county, county), (WarningRow.township, township),
                         (WarningRow.village, village), (WarningRow.quarter, quarter),
                         (WarningRow.model_version, model_version),
                         (WarningRow.household_id, household_id)):
            if val is not None:
                conds.append(col == val)
        for col, val, allowed in ((WarningRow.level, level, LEVELS), (WarningRow.status, status, STATUSES)):
            if val is None:
                continue
            vals = [val] if isinstance(val, str) else list(val)
            bad = [v for v in vals if v not in allowed]
            if bad:
                raise ValueError(f"unknown {col.key} {bad}; allowed: {list(allowed)}")
            conds.append(col.in_(vals))
        if scope is not None:
            conds += scope.conditions(WarningRow)
        with self.engine.connect() as conn:
            total = conn.scalar(select(func.count()).select_from(WarningRow).where(*conds))
        stmt = (
            select(WarningRow).where(*conds)
            .order_by(WarningRow.deadline, WarningRow.probability.desc(), WarningRow.level_rank, WarningRow.id)
            .limit(limit).offset(offset)
        )
        from sqlalchemy.orm import Session

        with Session(self.engine) as s:
            items = [_row_to_record(r) for r in s.scalars(stmt)]
        return Page(items, int(total or 0), limit, offset)

    def iter_warnings(self, chunk: int = 5000, **filters) -> Iterator[WarningRecord]:
        """Every warning matching the filters, in query order, page by page."""
        offset = 0
        while True:
            page = self.query_warnings(limit=chunk, offset=offset, **filters)
            yield from page.items
            offset += len(page.items)
            if len(page.items) < chunk:
                return

    def get_warning(self, warning_id: str) -> WarningRecord | None:
        from sqlalchemy.orm import Session

        with Session(self.engine) as s:
            row = s.get(WarningRow, warning_id)
            return _row_to_record(row) if row is not None else None

    def record_feedback(
        self,
        warning_id: str,
        status: str,
        *,
        actor: str,
        reason: str | None = None,
        visited_at: datetime | None = None,
        key_id: str | None = None,
        audit: dict | None = None,
        hook=None,
    ) -> WarningRecord:
        """Record a verification outcome. The change is validated (:func:`check_transition`: no
        closing twice, no skipped or backward state, a reason for 排除) in a write transaction that
        holds the lock from the start (SQLite ``BEGIN IMMEDIATE``, PostgreSQL ``SELECT … FOR
        UPDATE``), so of two concurrent closings exactly one succeeds and the other gets a
        VerificationError (HTTP 409); a store busy beyond ``wait_s`` raises StoreBusy (503).
        Free text holding an ID number (also with spaces or dashes) or a phone number is refused.
        ``audit`` (the keywords of :meth:`audit_row`, without the outcome) is written in the same
        transaction, with outcome ``status:<new status>``. ``hook(conn, warning_id, status,
        visited_at)`` runs in the same transaction (fangpin.store.loop.verified_hook: the decision
        step's deadline)."""
        if not actor or not actor.strip():
            raise VerificationError("须填写核实人")
        for text in (reason, actor):
            if contains_personal_number(text):
                raise VerificationError("核实记录中不得填写完整证件号码或电话号码")
        audit_row = None

        def run(conn) -> WarningRow:
            nonlocal audit_row
            now = _now()
            row = conn.execute(select(WarningRow).where(WarningRow.id == warning_id).with_for_update()).first()
            if row is None:
                raise WarningNotFound(warning_id)
            current = row.status
            check_transition(current, status, reason)
            changed = conn.execute(
                update(WarningRow)
                .where(WarningRow.id == warning_id, WarningRow.status == current)
                .values(status=status, status_reason=reason, updated_at=now)
            ).rowcount
            if changed != 1:
                raise VerificationError("该预警状态已被他人更新，请刷新后重试")
            conn.execute(
                FeedbackRow.__table__.insert().values(
                    warning_id=warning_id, from_status=current, to_status=status, reason=reason,
                    actor=actor.strip(), visited_at=_utc(visited_at) or now, key_id=key_id,
                    recorded_at=now,
                )
            )
            if hook is not None:
                hook(conn, warning_id, status, _utc(visited_at) or now)
            if audit is not None:
                audit_row = self.audit_row(**audit, outcome=f"status:{status}", at=now)
                conn.execute(_AUDIT_INSERT, audit_row)
            return conn.execute(select(WarningRow).where(WarningRow.id == warning_id)).first()

        row = self.write(run)
        return _row_to_record(row)

    def feedback_history(self, warning_id: str) -> list[Feedback]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(FeedbackRow).where(FeedbackRow.warning_id == warning_id).order_by(FeedbackRow.id)
            ).mappings()
            return [
                Feedback(r["warning_id"], r["from_status"], r["to_status"], r["reason"], r["actor"],
                         _utc(r["visited_at"]), _utc(r["recorded_at"]), r["key_id"])
                for r in rows
            ]

    def runs(self, quarter: str | None = None) -> list[dict]:
        stmt = select(ModelRun).order_by(ModelRun.finished_at)
        if quarter:
            stmt = stmt.where(ModelRun.quarter == quarter)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    # ------------------------------------------------------- level cut-offs and tasks (levels_tasks)

    def level_thresholds(self, model_version: str) -> dict:
        """{(quarter, county, township): [t_red, t_yellow, t_blue, t_capacity]} of a model version."""
        from fangpin.store.levels_tasks import read_thresholds

        return read_thresholds(self.engine, model_version)

    def workload(self, quarter: str, model_version: str | None = None, scope: Scope | None = None) -> list[dict]:
        """Per township of a quarter: households in scope, 红 wanted / kept, 黄, 蓝, shortfall, capacity."""
        from fangpin.store.levels_tasks import read_workload

        return read_workload(self.engine, quarter, model_version, scope)

    def query_tasks(self, **filters):
        """Tasks matching the filters (fangpin/store/levels_tasks.py:query_tasks)."""
        from fangpin.store.levels_tasks import query_tasks

        return query_tasks(self.engine, **filters)

    def get_task(self, task_id: str):
        from fangpin.store.levels_tasks import get_task

        return get_task(self.engine, task_id)

    def set_task_status(self, task_id: str, status: str):
        from fangpin.store.levels_tasks import set_task_status

        return set_task_status(self.engine, task_id, status)

    # ------------------------------------------------------------------------------- API keys

    def _key_hash(self, key: str) -> str:
        return hmac.new(self._secret, b"api-key\x00" + key.encode("utf-8"), hashlib.sha256).hexdigest()

    def add_key(self, role: str, scope: str | Scope, label: str | None = None) -> tuple[ApiKeyInfo, str]:
        """Create a key; returns its info and the plaintext key (shown once, stored only hashed)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        sc = scope if isinstance(scope, Scope) else Scope.parse(scope)
        if sc.kind not in ROLE_SCOPES[role]:
            raise ValueError(f"role {role} needs a scope of kind {sorted(ROLE_SCOPES[role])}, got {sc.kind} ({sc})")
        key_id = secrets.token_hex(6)
        plaintext = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        now = _now()
        self.write(lambda conn: conn.execute(
            ApiKeyRow.__table__.insert().values(
                id=key_id, key_hash=self._key_hash(plaintext), role=role, scope_county=sc.county,
                scope_township=sc.township, label=label, created_at=now, revoked=False,
            )
        ))
        return ApiKeyInfo(key_id, role, sc, label, now, False), plaintext

    @staticmethod
    def _info(r) -> ApiKeyInfo:
        return ApiKeyInfo(r.id, r.role, Scope(r.scope_county, r.scope_township), r.label,
                          _utc(r.created_at), bool(r.revoked), _utc(r.revoked_at))

    def list_keys(self, include_revoked: bool = True) -> list[ApiKeyInfo]:
        stmt = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if not include_revoked:
            stmt = stmt.where(ApiKeyRow.revoked.is_(False))
        with self.engine.connect() as conn:
            return [self._info(r) for r in conn.execute(stmt)]

    def revoke_key(self, key_id: str) -> ApiKeyInfo:
        self._key_gen += 1
        self._key_cache.clear()

        def run(conn):
            row = conn.execute(select(ApiKeyRow).where(ApiKeyRow.id == key_id).with_for_update()).first()
            if row is None:
                raise KeyError(f"no API key with id {key_id!r}")
            if not row.revoked:
                conn.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id)
                             .values(revoked=True, revoked_at=_now()))
            return conn.execute(select(ApiKeyRow).where(ApiKeyRow.id == key_id)).first()

        row = self.write(run)
        self._key_gen += 1
        self._key_cache.clear()
        return self._info(row)

    def cached_key(self, plaintext: str | None) -> ApiKeyInfo | None:
        """The info of a key verified less than ``key_cache_s`` ago (no store lookup), else None."""
        if not plaintext or self._key_cache_s <= 0:
            return None
        hit = self._key_cache.get(self._key_hash(plaintext))
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def verify_key(self, plaintext: str | None) -> ApiKeyInfo | None:
        """The key's info if ``plaintext`` is a valid, unrevoked key; else None. The hash is
        compared in constant time, and an unknown or malformed key costs the same HMAC.
        Only valid keys are remembered (see the class doc); unknown keys always reach the store."""
        cached = self.cached_key(plaintext)
        if cached is not None:
            return cached
        gen = self._key_gen
        parts = (plaintext or "").split("_", 2)
        computed = self._key_hash(plaintext or "")
        row = None
        if len(parts) == 3 and parts[0] == KEY_PREFIX and len(parts[1]) == 12:
            with self.engine.connect() as conn:
                row = conn.execute(select(ApiKeyRow).where(ApiKeyRow.id == parts[1])).first()
        stored = row.key_hash if row is not None else "0" * 64
        ok = hmac.compare_digest(stored, computed)
        if row is None or not ok or row.revoked:
            return None
        info = self._info(row)
        if self._key_cache_s > 0 and gen == self._key_gen:
            if len(self._key_cache) >= 1024:
                self._key_cache.clear()
            self._key_cache[computed] = (info, time.monotonic() + self._key_cache_s)
        return info

    # ------------------------------------------------------------------------------- sessions

    def _session_hash(self, token: str) -> str:
        return hmac.new(self._secret, b"web-session\x00" + token.encode("utf-8"), hashlib.sha256).hexdigest()

    def open_session(self, key_id: str, ttl_s: float) -> str:
        """Start a cadre-page session for a verified key; returns the token for the cookie (only
        its keyed hash is stored)."""
        token = secrets.token_urlsafe(32)
        now = _now()
        row = {"id": self._session_hash(token), "key_id": key_id, "created_at": now,
               "expires_at": datetime.fromtimestamp(now.timestamp() + ttl_s, UTC), "ended_at": None}
        self.write(lambda conn: conn.execute(WebSessionRow.__table__.insert().values(**row)))
        return token

    def session_key(self, token: str | None) -> ApiKeyInfo | None:
        """The key of a live session: not ended, not expired, key not revoked; else None."""
        if not token:
            return None
        now = _now()
        stmt = (select(ApiKeyRow).join(WebSessionRow, WebSessionRow.key_id == ApiKeyRow.id)
                .where(WebSessionRow.id == self._session_hash(token), WebSessionRow.ended_at.is_(None),
                       WebSessionRow.expires_at > now, ApiKeyRow.revoked.is_(False)))
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return self._info(row) if row is not None else None

    def end_session(self, token: str | None) -> None:
        """End a session (logout): the cookie stops working everywhere at once."""
        if not token:
            return
        h, now = self._session_hash(token), _now()
        self.write(lambda conn: conn.execute(
            update(WebSessionRow).where(WebSessionRow.id == h, WebSessionRow.ended_at.is_(None))
            .values(ended_at=now)))

    # ---------------------------------------------------------------------------------- audit

    def hash_household(self, household_id: str) -> str:
        return hmac.new(self._secret, b"audit\x00" + str(household_id).encode("utf-8"),
                        hashlib.sha256).hexdigest()[:32]

    def audit_row(
        self,
        *,
        key_id: str | None,
        endpoint: str,
        household_ids: Sequence[str] = (),
        model_version: str | None = None,
        levels: Sequence[str] = (),
        outcome: str,
        at: datetime | None = None,
    ) -> dict:
        """One audit row, checked. Household ids are stored as keyed hashes only; free-text fields
        are refused if they carry an ID number, and levels must be 红/黄/蓝 (nothing else)."""
        for name, text in (("endpoint", endpoint), ("outcome", outcome), ("model_version", model_version),
                           ("key_id", key_id)):
            if contains_full_id(text):
                raise ValueError(f"audit {name} must not contain an ID number")
        bad = [lvl for lvl in levels if lvl not in LEVEL_RANK]
        if bad:
            raise ValueError(f"audit levels must be in {LEVELS}, got {bad}")
        return {"at": _utc(at) or _now(), "key_id": key_id, "endpoint": endpoint,
                "household_hashes": [self.hash_household(h) for h in household_ids],
                "n_households": len(household_ids), "model_version": model_version,
                "levels": list(levels), "outcome": str(outcome)}

    def audit_append(self, **row) -> None:
        """Append one audit row now, in its own write transaction (see :meth:`audit_row`)."""
        r = self.audit_row(**row)
        self._write_audit_rows([r])

    def audit_enqueue(self, **row) -> None:
        """Append one audit row through the batched background writer (fangpin.store.tx.AuditWriter):
        the caller never waits for the write lock. Checked at once (:meth:`audit_row`); written
        within milliseconds, in order, and before :meth:`flush_audit` / :meth:`dispose` return."""
        self._audit.put(self.audit_row(**row))

    def flush_audit(self, timeout: float | None = None) -> bool:
        """Wait until every enqueued audit row is written (False if ``timeout`` passed first)."""
        return self._audit.flush(timeout)

    def _write_audit_rows(self, rows: list[dict]) -> None:
        # one constant statement with bound parameters: compiled once, then served from the cache
        self.write(lambda conn: conn.execute(_AUDIT_INSERT, rows))

    def audit_rows(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        key_id: str | None = None,
        household_id: str | None = None,
    ) -> list[dict]:
        """Audit rows in time order; ``household_id`` finds the rows that touched a household
        (through its hash). Rows this process enqueued are written first."""
        self.flush_audit(timeout=max(self.wait_s, 5.0))
        stmt = select(AuditRow).order_by(AuditRow.at, AuditRow.id)
        if since is not None:
            stmt = stmt.where(AuditRow.at >= _utc(since))
        if until is not None:
            stmt = stmt.where(AuditRow.at < _utc(until))
        if key_id is not None:
            stmt = stmt.where(AuditRow.key_id == key_id)
        with self.engine.connect() as conn:
            rows = [
                {**dict(r), "at": _utc(r["at"])}
                for r in conn.execute(stmt).mappings()
            ]
        if household_id is not None:
            h = self.hash_household(household_id)
            rows = [r for r in rows if h in r["household_hashes"]]
        return rows

    def audit_export(self, out: Path, **filters) -> int:
        """Write the audit rows to ``out`` (.csv, else JSON lines); returns the row count."""
        rows = self.audit_rows(**filters)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        cols = ["id", "at", "key_id", "endpoint", "n_households", "household_hashes", "model_version",
                "levels", "outcome"]
        with out.open("w", encoding="utf-8", newline="") as fh:
            if out.suffix.lower() == ".csv":
                wr = csv.writer(fh)
                wr.writerow(cols)
                for r in rows:
                    wr.writerow([r["at"].isoformat() if c == "at" else
                                 ";".join(r[c]) if c in ("household_hashes", "levels") else r[c]
                                 for c in cols])
            else:
                for r in rows:
                    fh.write(json.dumps({c: (r[c].isoformat() if c == "at" else r[c]) for c in cols},
                                        ensure_ascii=False) + "\n")
        return len(rows)
