"""Ledger ingest: county exports (../shared/ledger-contract.md) → canonical tables (docs/data-model.md).

Public API (imported lazily so that the CLI starts without loading pandas):

- ``ingest(ledger_paths, event_paths, out_dir, params, append=False) -> IngestReport``
- ``load_tables(dir) -> Tables`` (households, persons, events, lines, oracle, report)
- ``prepare(frame, headers, table, source_file)`` / ``build_ledger`` / ``build_events`` /
  ``join_households``: the same normalisation and validation on in-memory frames.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "ingest": "fangpin.ingest.core",
    "load_tables": "fangpin.ingest.core",
    "IngestReport": "fangpin.ingest.core",
    "Tables": "fangpin.ingest.core",
    "OUTPUT_FILES": "fangpin.ingest.core",
    "prepare": "fangpin.ingest.tables",
    "build_ledger": "fangpin.ingest.tables",
    "build_events": "fangpin.ingest.tables",
    "join_households": "fangpin.ingest.tables",
    "FileError": "fangpin.ingest.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fangpin.ingest' has no attribute {name!r}")
