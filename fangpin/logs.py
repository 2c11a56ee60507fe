"""Logging set-up with a last line of defence against personal data.

Code must not log names, ID numbers or health status in the first place. Behind that:

- :class:`RedactIds` masks anything shaped like a resident ID (also grouped by spaces or dashes)
  or a mobile number, should one slip into a message;
- :class:`SafeExceptions` drops tracebacks and exception messages from records (they may quote
  SQL parameters, request bodies or validation inputs) and keeps the exception's type and place
  (module:function:line);
- :func:`server_log_config` is the dictConfig of ``fangpin serve``: uvicorn's loggers and the
  root logger through handlers carrying both filters and the request id
  (``serving.middleware.RequestIdFilter``); SQLAlchemy's loggers at WARNING (the engines are
  created with ``hide_parameters`` as well).
"""

from __future__ import annotations

import logging

QUIET = ("alembic", "mlflow", "urllib3", "httpx", "matplotlib", "sqlalchemy")


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


def exception_place(exc: BaseException) -> str:
    """``module:function:line`` where ``exc`` was raised: the innermost frame of the project's
    code, and the innermost frame overall when that is elsewhere (a library)."""
    tb = exc.__traceback__
    own = last = None
    while tb is not None:
        frame = tb.tb_frame
        name = str(frame.f_globals.get("__name__", "?"))
        last = f"{name}:{frame.f_code.co_name}:{tb.tb_lineno}"
        if name.split(".")[0] in ("fangpin", "serving", "models", "pipelines"):
            own = last
        tb = tb.tb_next
    if own is None or own == last:
        return last or "?"
    return f"{own} (in {last})"


class SafeExceptions(logging.Filter):
    """A record with an exception keeps its own message plus the exception's type and place; the
    traceback and the exception's message (``str(exc)``) are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage().strip()} [{type(exc).__name__} at {exception_place(exc)}]"
            record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(show_path=False, rich_tracebacks=False)
    handler.addFilter(RedactIds())
    handler.addFilter(SafeExceptions())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[handler], force=True)
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def server_log_config(level: str = "info") -> dict:
    """The logging dictConfig of the server (``uvicorn.run(log_config=...)``): every handler masks
    ID and phone numbers, drops tracebacks, and prints the request id."""
    filters = {
        "request_id": {"()": "serving.middleware.RequestIdFilter"},
        "redact": {"()": "fangpin.logs.RedactIds"},
        "safe_exc": {"()": "fangpin.logs.SafeExceptions"},
    }
    guard = ["request_id", "safe_exc", "redact"]
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": filters,
        "formatters": {
            "default": {"format": "%(levelname)s %(asctime)s %(name)s [%(request_id)s] %(message)s"},
            "access": {"()": "uvicorn.logging.AccessFormatter", "use_colors": False,
                       "fmt": '%(levelname)s %(asctime)s access [%(request_id)s] %(client_addr)s - '
                              '"%(request_line)s" %(status_code)s'},
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "filters": guard,
                        "stream": "ext://sys.stderr"},
            "access": {"class": "logging.StreamHandler", "formatter": "access", "filters": guard,
                       "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": lvl, "propagate": False},
            "uvicorn.error": {"level": lvl},
            "uvicorn.access": {"handlers": ["access"], "level": lvl, "propagate": False},
            **{name: {"level": "WARNING"} for name in QUIET},
        },
        "root": {"handlers": ["default"], "level": lvl},
    }
