"""ORM tables of the warning store (SQLAlchemy 2). The schema is created and changed only by the
Alembic migrations in ``fangpin/store/migrations``; a test checks that they match these models."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ModelRun(Base):
    """One write of a quarter's warnings (a scoring run), committed with its warnings."""

    __tablename__ = "model_runs"

    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    quarter: Mapped[str] = mapped_column(String(6), index=True)
    model_version: Mapped[str] = mapped_column(String(64))
    counties: Mapped[list] = mapped_column(JSON)
    n_warnings: Mapped[int] = mapped_column(Integer)
    n_inserted: Mapped[int] = mapped_column(Integer)
    n_updated: Mapped[int] = mapped_column(Integer)
    n_removed: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WarningRow(Base):
    __tablename__ = "warnings"
    __table_args__ = (
        UniqueConstraint("quarter", "household_id", "model_version", name="uq_warnings_key"),
        Index("ix_warnings_place", "county", "township", "village"),
        Index("ix_warnings_order", "quarter", "level_rank", "deadline"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    quarter: Mapped[str] = mapped_column(String(6))
    county: Mapped[str] = mapped_column(String(64))
    township: Mapped[str] = mapped_column(String(64))
    village: Mapped[str] = mapped_column(String(64))
    household_id: Mapped[str] = mapped_column(String(64))
    head_name: Mapped[str | None] = mapped_column(String(64))
    id_masked: Mapped[str | None] = mapped_column(String(32))
    level: Mapped[str] = mapped_column(String(2))
    level_rank: Mapped[int] = mapped_column(SmallInteger)
    probability: Mapped[float] = mapped_column(Float)
    rule_hits: Mapped[list] = mapped_column(JSON)
    reasons: Mapped[list] = mapped_column(JSON)
    measures: Mapped[list] = mapped_column(JSON)
    model_version: Mapped[str] = mapped_column(String(64))
    ruleset_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deadline: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    base_rate: Mapped[float | None] = mapped_column(Float)  # the county base rate the figures start from
    other_pp: Mapped[float | None] = mapped_column(Float)  # 其他因素, percentage points
    reference_period: Mapped[str | None] = mapped_column(String(32))
    deferred: Mapped[bool] = mapped_column(Boolean, default=False)  # 红 candidate moved to 黄 by capacity


class FeedbackRow(Base):
    """Status history: every verification outcome recorded on a warning."""

    __tablename__ = "warning_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    warning_id: Mapped[str] = mapped_column(ForeignKey("warnings.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(64))  # who verified (cadre name or role, as entered)
    visited_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # when, as reported
    key_id: Mapped[str | None] = mapped_column(String(32))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64))  # HMAC-SHA256(server secret, key), hex
    role: Mapped[str] = mapped_column(String(16))
    scope_county: Mapped[str | None] = mapped_column(String(64))  # None: all counties
    scope_township: Mapped[str | None] = mapped_column(String(64))  # None: the whole county
    label: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditRow(Base):
    """Who scored, read or changed what. Never a name, full ID number or health status: household
    ids are keyed hashes."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    key_id: Mapped[str | None] = mapped_column(String(32), index=True)
    endpoint: Mapped[str] = mapped_column(String(128))
    household_hashes: Mapped[list] = mapped_column(JSON)
    n_households: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str | None] = mapped_column(String(64))
    levels: Mapped[list] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(64))


class LevelThresholdRow(Base):
    """The level cut-offs of one township and quarter as a batch run computed them for one model
    version (models/levels.py), and its workload: what the API needs to give a household the
    level the batch gave it, and what the county sees of each township's capacity."""

    __tablename__ = "level_thresholds"

    quarter: Mapped[str] = mapped_column(String(6), primary_key=True)
    county: Mapped[str] = mapped_column(String(64), primary_key=True)
    township: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    t_red: Mapped[float | None] = mapped_column(Float)  # raw-score cut-offs; NULL: +inf (none)
    t_yellow: Mapped[float | None] = mapped_column(Float)
    t_blue: Mapped[float | None] = mapped_column(Float)
    t_capacity: Mapped[float | None] = mapped_column(Float)  # NULL: -inf (every 红 candidate fits)
    n_in_scope: Mapped[int] = mapped_column(Integer)
    n_red_wanted: Mapped[int] = mapped_column(Integer)
    n_red: Mapped[int] = mapped_column(Integer)
    n_yellow: Mapped[int] = mapped_column(Integer)
    n_blue: Mapped[int] = mapped_column(Integer)
    shortfall: Mapped[int] = mapped_column(Integer)
    capacity: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(String(32))
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TaskRow(Base):
    """保障缺口 tasks (fangpin/tasks.py): one per household, quarter and rule routed to a department."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("quarter", "household_id", "rule_id", name="uq_tasks_key"),
        Index("ix_tasks_place", "county", "township", "village"),
        Index("ix_tasks_order", "quarter", "deadline"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    quarter: Mapped[str] = mapped_column(String(6))
    county: Mapped[str] = mapped_column(String(64))
    township: Mapped[str] = mapped_column(String(64))
    village: Mapped[str] = mapped_column(String(64))
    household_id: Mapped[str] = mapped_column(String(64))
    head_name: Mapped[str | None] = mapped_column(String(64))
    id_masked: Mapped[str | None] = mapped_column(String(32))
    rule_id: Mapped[str] = mapped_column(String(64))
    gap: Mapped[str] = mapped_column(String(32))
    department: Mapped[str] = mapped_column(String(32), index=True)
    measure: Mapped[str] = mapped_column(String(128))
    detail: Mapped[str] = mapped_column(Text)
    ruleset_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deadline: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), index=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)


class WebSessionRow(Base):
    """A signed-in session of the cadre page. The cookie holds a random token; only its keyed hash
    is stored. Logging out (or revoking the key) ends the session on the server, so a copy of the
    cookie taken before stops working."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # HMAC-SHA256(server secret, token), hex
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class HouseholdHistoryRow(Base):
    """A household of the online history as written before migration 0009, a row each (since
    then: :class:`HouseholdBlockRow`). Still read for counties not scored since; a county's next
    run deletes its rows. Keyed by the keyed hash of 户编号 (fangpin.ids.keyed_hash). ``level``:
    the batch's combined level (raised since 0009 in :class:`HouseholdLevelRow`). Its history and
    snapshot are row ``block_row`` of the block ``block_key`` (:class:`HistoryBlockRow`); ``data``
    holds them as JSON only in rows written before blocks (a store scored before migration 0006)."""

    __tablename__ = "household_history"

    household_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    household_id: Mapped[str] = mapped_column(String(64))
    county: Mapped[str] = mapped_column(String(64), index=True)
    township: Mapped[str] = mapped_column(String(64))
    village: Mapped[str] = mapped_column(String(64))
    quarter: Mapped[str] = mapped_column(String(6))
    level: Mapped[str | None] = mapped_column(String(2))
    head_name: Mapped[str | None] = mapped_column(String(64))  # for a warning raised by an event; never logged
    id_masked: Mapped[str | None] = mapped_column(String(32))
    data: Mapped[dict | None] = mapped_column(JSON)  # {"history": …, "snapshot": …} (before 0006)
    block_key: Mapped[str | None] = mapped_column(String(32))
    block_row: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HouseholdBlockRow(Base):
    """The households of the online history, as of the ledger's latest scored quarter (written
    by ``fangpin score``), not a row each but in blocks: the households of one county and one
    batch chunk (``part``) whose keys (keyed hashes of 户编号, fangpin.ids.keyed_hash) share their
    first ``history.HOUSEHOLD_BUCKET_BITS`` bits (``bucket``). ``payload``: a zstd frame of an
    Arrow IPC stream with a row per household: its key, 户编号, place, the batch's combined level,
    head's name (never logged), masked ID number, and where its history and snapshot are (row
    ``block_row`` of :class:`HistoryBlockRow` ``block_key``; or ``data``, JSON). A million rows
    a row each were most of the batch's serial store writes (docs/decisions.md, "Households in
    blocks"). Keyed by county first (SQLite: WITHOUT ROWID), so a county's rows are deleted by
    that range and a lookup probes its county's parts of one bucket."""

    __tablename__ = "household_blocks"
    __table_args__ = (PrimaryKeyConstraint("county", "bucket", "part"), {"sqlite_with_rowid": False})

    county: Mapped[str] = mapped_column(String(64))
    bucket: Mapped[int] = mapped_column(Integer)
    part: Mapped[str] = mapped_column(String(32))
    quarter: Mapped[str] = mapped_column(String(6))
    households: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class HouseholdLevelRow(Base):
    """A household's level raised after its quarter's batch (by a department event,
    ``POST /v1/events``, or a clue): its level is the more urgent of this and the batch's
    (:class:`HouseholdBlockRow`). Also the row that concurrent raises of one household lock.
    A county's rows go when its online history is written again."""

    __tablename__ = "household_levels"

    household_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    county: Mapped[str] = mapped_column(String(64), index=True)
    level: Mapped[str | None] = mapped_column(String(2))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HistoryBlockRow(Base):
    """The histories and snapshots of up to ``history.block_households`` households of one
    county, neighbours in the ledger (same village, then township): an Arrow record batch
    (IPC message without its schema, which is :class:`HistorySchemaRow` ``schema_key``; a zstd
    frame of it since 2026-12-01, plain before) with
    the columns ``history`` and ``snapshot`` (fangpin.store.history)."""

    __tablename__ = "history_blocks"

    block_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    county: Mapped[str] = mapped_column(String(64), index=True)
    quarter: Mapped[str] = mapped_column(String(6))
    schema_key: Mapped[str] = mapped_column(String(32))
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class HistorySchemaRow(Base):
    """The Arrow schema of history blocks (serialized), keyed by a hash of itself."""

    __tablename__ = "history_schemas"

    schema_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class PersonBlockRow(Base):
    """Person → household map (keyed hashes: ingest's person_key, the history's household_key), as
    of the history's quarter: how a department event finds its household. Not a row per person
    but blocks: the persons of one county and one batch chunk whose keys share their first
    ``history.PERSON_BUCKET_BITS`` bits (``bucket``), as ``payload`` = 32 bytes per person (its
    key's 16 bytes, then its household's), sorted by person key. A province is tens of millions
    of persons; written a row each, the map was the largest part of the batch's serial store
    writes (docs/decisions.md, "The person map in blocks"). Keyed by county first (SQLite: the
    table is its key's B-tree, WITHOUT ROWID), so a county's blocks are deleted by that range;
    ``part`` (the run and chunk) orders a county's blocks: a person in two is given the first."""

    __tablename__ = "person_blocks"
    __table_args__ = (PrimaryKeyConstraint("county", "bucket", "part"), {"sqlite_with_rowid": False})

    county: Mapped[str] = mapped_column(String(64))
    bucket: Mapped[int] = mapped_column(Integer)
    part: Mapped[str] = mapped_column(String(32))
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class PlaceContextRow(Base):
    """Local context of a place as of a quarter (models.features.place_contexts): a village
    (``village`` set) or a township (``village`` = ''). Per-township values may be added to
    ``data`` (e.g. level thresholds)."""

    __tablename__ = "place_context"

    county: Mapped[str] = mapped_column(String(64), primary_key=True)
    township: Mapped[str] = mapped_column(String(64), primary_key=True)
    village: Mapped[str] = mapped_column(String(64), primary_key=True)
    quarter: Mapped[str] = mapped_column(String(6))
    data: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DepartmentEventRow(Base):
    """A department event received by ``POST /v1/events`` (部门筛查预警), stored once
    (``event_key``: fangpin.ids.event_key). ``household_key`` is null when it matched nobody."""

    __tablename__ = "department_events"

    event_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    person_key: Mapped[str] = mapped_column(String(32), index=True)
    household_key: Mapped[str | None] = mapped_column(String(32), index=True)
    county: Mapped[str] = mapped_column(String(64))
    event_date: Mapped[date] = mapped_column(Date)
    department: Mapped[str] = mapped_column(String(16))
    event_type: Mapped[str] = mapped_column(String(16))
    amount: Mapped[float | None] = mapped_column(Float)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str | None] = mapped_column(String(32))


class ClueRow(Base):
    """A clue from one of the channels (fangpin/clues.py): who reported what about which household,
    and what became of it (a new warning, joined to an open one, recorded only). Duplicates of an
    open clue (same household, same channel) are merged into it (``repeats``, ``reports``). Never
    an ID number: the person is kept as a keyed hash and a masked form; text fields are checked."""

    __tablename__ = "clues"
    __table_args__ = (
        Index("ix_clues_place", "county", "township", "village"),
        Index("ix_clues_household", "county", "household_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), index=True)
    county: Mapped[str] = mapped_column(String(64))
    township: Mapped[str] = mapped_column(String(64))
    village: Mapped[str | None] = mapped_column(String(64))
    household_id: Mapped[str | None] = mapped_column(String(64))  # 户编号 when the household is known
    person_key: Mapped[str | None] = mapped_column(String(32), index=True)  # keyed hash of the ID number given
    id_masked: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)  # what was reported (first report)
    received_by: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(8))  # api | page | event
    outcome: Mapped[str] = mapped_column(String(16))  # fangpin.clues.OUTCOMES
    warning_id: Mapped[str | None] = mapped_column(ForeignKey("warnings.id", ondelete="SET NULL"), index=True)
    level: Mapped[str | None] = mapped_column(String(2))  # the household's level when the clue was scored
    probability: Mapped[float | None] = mapped_column(Float)
    reasons: Mapped[list | None] = mapped_column(JSON)  # reasons attached when scored
    deadline: Mapped[date | None] = mapped_column(Date)  # verification (or village check) due
    return_risk: Mapped[bool] = mapped_column(Boolean, default=False)
    repeats: Mapped[int] = mapped_column(Integer, default=0)  # merged duplicates
    reports: Mapped[list] = mapped_column(JSON)  # [{received_at, received_by, text}] of the merged duplicates


class WarningLoopRow(Base):
    """What happened to a warning after it was created (one row per warning, created when needed):
    the channels that found it, the deadlines of its later steps, what the next exports said
    (pipelines/readback.py) and the conflicts between the ledger and the verification feedback."""

    __tablename__ = "warning_loop"

    warning_id: Mapped[str] = mapped_column(ForeignKey("warnings.id", ondelete="CASCADE"), primary_key=True)
    origin: Mapped[str] = mapped_column(String(16))  # the channel that created the warning
    channels: Mapped[list] = mapped_column(JSON)  # every channel that reported the household (origin first)
    clues: Mapped[int] = mapped_column(Integer, default=0)  # clues joined (merged duplicates included)
    floor_level: Mapped[str | None] = mapped_column(String(2))  # a people channel's floor (clues.floors)
    return_risk: Mapped[bool] = mapped_column(Boolean, default=False)  # 返贫风险: after the risk was eliminated
    verified_at: Mapped[date | None] = mapped_column(Date)  # verification outcome 纳入监测 recorded
    decision_due: Mapped[date | None] = mapped_column(Date)
    identified_at: Mapped[date | None] = mapped_column(Date)  # the read-back that first showed the identification
    identified_quarter: Mapped[str | None] = mapped_column(String(6))
    identified_month: Mapped[int | None] = mapped_column(Integer)  # 识别监测时间, YYYYMM
    support_due: Mapped[date | None] = mapped_column(Date)
    support_at: Mapped[date | None] = mapped_column(Date)
    support_source: Mapped[str | None] = mapped_column(String(8))  # ledger | cadre
    eliminated_quarter: Mapped[str | None] = mapped_column(String(6))
    eliminated_month: Mapped[int | None] = mapped_column(Integer)  # 消除监测时间, YYYYMM
    ledger_outcome: Mapped[str | None] = mapped_column(String(8))  # fangpin.clues.LEDGER_OUTCOMES
    readback_quarter: Mapped[str | None] = mapped_column(String(6))  # newest export quarter matched
    conflict: Mapped[str | None] = mapped_column(Text)  # ledger vs feedback, listed for the county
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HouseholdLedgerRow(Base):
    """Each household's monitoring state as the newest export read back says it (households that
    are or were monitoring objects only): what marks a new warning 返贫风险 and where
    identifications concentrate."""

    __tablename__ = "household_ledger"
    __table_args__ = (Index("ix_household_ledger_place", "county", "township", "village"),)

    county: Mapped[str] = mapped_column(String(64), primary_key=True)
    household_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    township: Mapped[str] = mapped_column(String(64))
    village: Mapped[str] = mapped_column(String(64))
    quarter: Mapped[str] = mapped_column(String(6))  # the export quarter this state is from
    monitor_category: Mapped[str | None] = mapped_column(String(16))
    monitor_since: Mapped[int | None] = mapped_column(Integer)  # YYYYMM
    risk_eliminated: Mapped[bool | None] = mapped_column(Boolean)
    eliminated_at: Mapped[int | None] = mapped_column(Integer)  # YYYYMM
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
