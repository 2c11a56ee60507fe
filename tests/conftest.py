"""Suite-wide test set-up.

- The ID-hashing key comes from the environment, so no test creates a key file in the repo.
- MLflow and the warning store point into a per-session temporary directory unless a test sets
  its own; tests never write into the repository.
- `samples_dir` is ../shared/samples beside the repository (as in CI).
- `db_url`: a warning-store URL on SQLite (a file) and on PostgreSQL (a throwaway database).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ.setdefault("FANGPIN_ID_KEY", "fangpin-test-key-not-secret")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    d = SHARED / "samples"
    if not d.is_dir():
        pytest.fail(f"shared samples not found at {d}: CI clones the repo with shared/ beside it")
    return d


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory, monkeypatch):
    """Keep local state (key files, SQLite stores, MLflow) out of the repo."""
    state = tmp_path_factory.getbasetemp() / "fangpin-state"
    state.mkdir(exist_ok=True)
    monkeypatch.setenv("FANGPIN_STATE_DIR", str(state))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{state}/mlflow.db")
    yield


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A store URL on SQLite (a file) and on PostgreSQL (a throwaway database, tests/pg_db.py)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warnings.db'}"
        return
    from pg_db import throwaway_pg_db

    with throwaway_pg_db() as url:
        yield url
