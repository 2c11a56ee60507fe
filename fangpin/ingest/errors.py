"""File-level errors: a file that cannot be read at all (the message is for the clerk, in Chinese)."""

from __future__ import annotations

from pathlib import Path


class FileError(Exception):
    """A whole file cannot be ingested. ``message`` names the file (and the column when one is
    at fault) and tells the clerk what to fix."""

    def __init__(self, path: Path | str, message: str, *, column: str | None = None, code: str = "file"):
        super().__init__(message)
        self.path = Path(path)
        self.message = message
        self.column = column
        self.code = code

    def to_dict(self) -> dict:
        return {"file": self.path.name, "path": str(self.path), "code": self.code, "column": self.column,
                "message": self.message}
