"""Run the store's Alembic migrations programmatically (at start-up of score and serve)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Bring the store at ``url_or_engine`` to ``revision`` (default: the newest schema)."""
    from fangpin.store.tx import WRITE_OPTION

    engine = create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with engine.connect() as conn:
            # a writer (SQLite: BEGIN IMMEDIATE on a fangpin engine): two processes starting at
            # once wait for each other instead of failing on a lock upgrade
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                cfg = alembic_config(engine.url.render_as_string(hide_password=False))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
