"""Fixtures of the API tests: a tiny real model (trained in seconds with the project's own
training pieces), a warning store seeded through the store's functions, and the app under a
TestClient (lifespan run)."""

from __future__ import annotations

import pytest
from api_tiny_model import make_client, train_tiny
from seed_warnings import seed_store

from fangpin.config import load_params


@pytest.fixture(scope="session")
def params():
    return load_params()


@pytest.fixture(scope="session")
def tiny_model(params):
    return train_tiny(params)


@pytest.fixture
def seeded(tmp_path, params):
    s = seed_store(f"sqlite:///{tmp_path / 'warnings.db'}", params)
    yield s
    s.store.dispose()


@pytest.fixture
def client(params, seeded, tiny_model):
    with make_client(params, seeded, tiny_model) as c:
        yield c


