"""Pipeline commands are registered on the `fangpin` app and cost nothing at import time."""

import logging
import subprocess
import sys

import pytest
from typer.testing import CliRunner


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI callback configures logging for the process (root handlers, quiet third-party
    loggers); undo it so later tests in this worker see logging as pytest set it up."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("alembic", "mlflow", "urllib3", "httpx", "matplotlib")
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for n, lv in levels.items():
        logging.getLogger(n).setLevel(lv)


def test_commands_are_registered():
    from fangpin.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("train", "evaluate", "promote", "rollback", "run"):
        assert cmd in res.output
        sub = runner.invoke(app, [cmd, "--help"])
        assert sub.exit_code == 0, sub.output
    assert "--ledger" in runner.invoke(app, ["run", "--help"]).output


def test_no_heavy_import_at_import_time():
    code = ("import sys, pipelines.cli; "
            "print(sorted(m for m in ('lightgbm', 'mlflow', 'sklearn', 'pandas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_scoring_code_does_not_import_mlflow():
    """A Dask worker that scores imports models.pyfunc and pipelines.score, never MLflow (1.5 s per
    process); the MLflow wrapper class is defined on first use and still pickles by reference."""
    code = ("import sys, pickle, models.pyfunc as m, pipelines.score; before = 'mlflow' in sys.modules; "
            "c = m.ReturnRiskPyfunc; print(before, 'mlflow' in sys.modules, "
            "pickle.loads(pickle.dumps(c())).__class__ is c, c.__module__ + '.' + c.__qualname__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "True", "models.pyfunc.ReturnRiskPyfunc"]


def test_rollback_without_history_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    from fangpin.cli import app

    res = CliRunner().invoke(app, ["rollback", "--workdir", str(tmp_path)])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)  # a user error (tests/unit/test_cli_errors.py)
    assert "Nothing to roll back to" in res.output and "没有可以回退到的版本" in res.output
