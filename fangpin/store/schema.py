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
    MetaData,
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
    """What online scoring needs of one household, as of the ledger's latest scored quarter
    (written by ``fangpin score``; models.features.history_records and snapshot_records). Keyed by
    the keyed hash of 户编号 (fangpin.ids.keyed_hash). ``level``: the combined level the household
    has now (the batch's, raised by department events)."""

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
    data: Mapped[dict] = mapped_column(JSON)  # {"history": …, "snapshot": …}
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HouseholdPersonRow(Base):
    """Person (keyed hash of the ID number, as ingest's person_key) → household, as of the same
    quarter: how a department event finds its household."""

    __tablename__ = "household_persons"

    person_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    household_key: Mapped[str] = mapped_column(String(32), index=True)
    county: Mapped[str] = mapped_column(String(64), index=True)


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
