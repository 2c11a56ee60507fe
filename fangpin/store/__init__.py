"""The warning store: warnings by quarter, verification feedback, API keys, audit trail.

SQLAlchemy 2 over a SQLite file by default (``<state_dir>/warnings.db``) or PostgreSQL by URL
(``FANGPIN_STORE_URL`` or ``params.warnings.store_url``, e.g.
``postgresql+psycopg://user@host/db``). The schema is managed by the Alembic migrations shipped in
this package; ``score`` and ``serve`` call :func:`upgrade` (or ``Store.from_params(params)``) at start-up.
"""

from importlib import import_module

__all__ = [
    "ROLES", "ApiKeyInfo", "Feedback", "Page", "Scope", "Store", "WarningNotFound", "WriteResult",
    "make_engine", "store_url", "upgrade",
]


def __getattr__(name: str):
    """The package's names, imported on first use: a batch worker that only encodes history
    blocks (``fangpin.store.history``) does not import Alembic and the repository (~0.3 s a
    process)."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module("fangpin.store.migrate" if name == "upgrade" else "fangpin.store.repo"), name)
    globals()[name] = value
    return value
