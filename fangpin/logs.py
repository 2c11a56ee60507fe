"""Logging set-up with a last line of defence against personal data.

Code must not log names, ID numbers or health status in the first place; the filter below also
masks anything that looks like an 18-character resident ID, should one slip into a message.
"""

from __future__ import annotations

import logging


def redact(text: str) -> str:
    """ID numbers (also grouped by spaces or dashes) and phone numbers masked (fangpin.ids)."""
    from fangpin.ids import redact_numbers

    return redact_numbers(text)


class RedactIds(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        red = redact(msg)
        if red != msg:
            record.msg, record.args = red, ()
        return True


def setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(show_path=False, rich_tracebacks=False)
    handler.addFilter(RedactIds())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[handler], force=True)
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
