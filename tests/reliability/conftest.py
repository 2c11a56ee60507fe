"""The fault suite (marker ``reliability``): concurrency, busy stores, killed processes, reloads
under load, oversized and malformed inputs. Small and generated in the tests, so CI runs it in a
few minutes on 2 cores. The ingest fixtures of tests/data are shared."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

