"""The service in its own process for the fault suite (kill -9, log capture):
``python serve_app.py STORE_URL PORT [--faults]``. Logging is configured exactly as
``fangpin serve`` does (fangpin.logs.server_log_config), with SQLAlchemy's engine logger at INFO so
that the test sees whatever it would print. ``--faults`` makes feedback fail in the ways a bug
would: an exception quoting the submitted text, a database error carrying it as a parameter, and
a pydantic error holding it as input."""

from __future__ import annotations

import logging
import sys


def main() -> None:
    import uvicorn

    from fangpin.config import load_params
    from fangpin.logs import server_log_config
    from fangpin.store import Store
    from serving.app import create_app

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from seed_warnings import SECRET

    url, port = sys.argv[1], int(sys.argv[2])
    params = load_params()
    store = Store(url, SECRET)
    if "--faults" in sys.argv:
        _install_faults(store)
    app = create_app(params, store=store, load_model=False)
    config = server_log_config("debug")
    config["loggers"]["sqlalchemy.engine"] = {"level": "INFO"}
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=config, log_level="debug")


def _install_faults(store) -> None:
    import pydantic
    from sqlalchemy import text

    original = store.record_feedback

    def failing(warning_id, status, *, actor, reason=None, **kw):
        if reason and reason.startswith("A"):
            raise RuntimeError(f"could not save feedback {reason!r} by {actor!r}")
        if reason and reason.startswith("B"):
            # a database error whose statement carries the text as a bound parameter
            with store.engine.begin() as conn:
                conn.execute(text("INSERT INTO no_such_table (x) VALUES (:x)"), {"x": reason})
        if reason and reason.startswith("C"):
            pydantic.TypeAdapter(int).validate_python(reason)  # ValidationError quoting the input
        return original(warning_id, status, actor=actor, reason=reason, **kw)

    store.record_feedback = failing
    logging.getLogger("fangpin.test").info("faults installed")


if __name__ == "__main__":
    main()
