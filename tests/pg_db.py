"""Throwaway PostgreSQL databases for tests (server on 127.0.0.1:5432, trust auth): each test gets
``fangpin_test_<random>``, dropped afterwards, so parallel runs never collide.
``FANGPIN_TEST_PG_URL`` overrides the maintenance URL."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

PG_CANDIDATES = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "postgresql+psycopg://root@127.0.0.1:5432/postgres",
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
)


def pg_admin() -> sa.Engine:
    urls = [os.environ["FANGPIN_TEST_PG_URL"]] if os.environ.get("FANGPIN_TEST_PG_URL") else PG_CANDIDATES
    errors = []
    for url in urls:
        eng = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with eng.connect() as c:
                c.exec_driver_sql("SELECT 1")
            return eng
        except sa.exc.OperationalError as exc:
            errors.append(f"{url}: {type(exc.orig).__name__}")
            eng.dispose()
    pytest.fail("PostgreSQL not reachable (deselect with -m 'not postgres'):\n" + "\n".join(errors))


@contextmanager
def throwaway_pg_db():
    """The URL of a new, empty database; dropped on exit."""
    admin = pg_admin()
    name = f"fangpin_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
