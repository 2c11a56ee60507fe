"""The fault suite (marker ``reliability``): concurrency, busy stores, killed processes, reloads
under load, oversized and malformed inputs. Small and generated in the tests, so CI runs it in a
few minutes on 2 cores. The ingest fixtures of tests/data are shared."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def params():
    from fangpin.config import load_params

    return load_params()


@pytest.fixture(scope="session")
def tiny_model(params):
    from api_tiny_model import train_tiny

    return train_tiny(params)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """A store URL on SQLite (a file) and on PostgreSQL (a throwaway database)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warnings.db'}"
        return
    from pg_db import throwaway_pg_db

    with throwaway_pg_db() as url:
        yield url

