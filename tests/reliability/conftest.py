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

