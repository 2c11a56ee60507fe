"""The warning store: warnings by quarter, verification feedback, API keys, audit trail.

SQLAlchemy 2 over a SQLite file by default (``<state_dir>/warnings.db``) or PostgreSQL by URL
(``FANGPIN_STORE_URL`` or ``params.warnings.store_url``, e.g.
``postgresql+psycopg://user@host/db``). The schema is managed by the Alembic migrations shipped in
this package; ``score`` and ``serve`` call :func:`upgrade` (or ``Store.from_params(params)``) at start-up.
"""

from fangpin.store.migrate import upgrade
from fangpin.store.repo import (
    ROLES,
    ApiKeyInfo,
    Feedback,
    Page,
    Scope,
    Store,
    WarningNotFound,
    WriteResult,
    make_engine,
    store_url,
)

__all__ = [
    "ROLES", "ApiKeyInfo", "Feedback", "Page", "Scope", "Store", "WarningNotFound", "WriteResult",
    "make_engine", "store_url", "upgrade",
]
