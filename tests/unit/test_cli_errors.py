"""Every user error of the pipeline commands reads as one Chinese sentence and its English twin,
exit code 2, no traceback; `fangpin --debug` shows the traceback. Run through the CLI (Typer's
runner on the real app, and once as the installed console script in a fresh working directory)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from canonical_frames import LINES, make_frames, write_frames
from typer.testing import CliRunner

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """A private MLflow store per test (no @champion from another test), logging restored after."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("FANGPIN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("FANGPIN_PARAMS", raising=False)
    monkeypatch.delenv("FANGPIN_DEBUG", raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _params(d: Path, **sections) -> Path:
    p = {"lines": {int(k): v for k, v in LINES.items()}, **sections}
    f = d / "params.yaml"
    f.write_text(yaml.safe_dump(p, allow_unicode=True), encoding="utf-8")
    return f


def _ingested(w: Path, n=300, quarters=6, **change) -> Path:
    """A working directory with ingest output (canonical frames), and its params.yaml."""
    fr = make_frames(n, quarters, seed=2)
    for k, v in change.items():
        setattr(fr, k, v(getattr(fr, k)))
    write_frames(fr, w / "data" / "ingested")
    return _params(w)


def _invoke(args: list[str]):
    from fangpin.cli import app

    return CliRunner().invoke(app, args)


def _assert_sentences(res, *needles: str) -> None:
    out = res.output
    assert res.exit_code == 2, out
    assert "Traceback" not in out and "╭" not in out, out
    lines = [x for x in out.splitlines() if x.strip()]
    zh = [x for x in lines if x.startswith("错误：")]
    en = [x for x in lines if x.startswith("Error: ")]
    assert len(zh) == 1 and len(en) == 1, out
    assert CJK.search(zh[0]) and re.search(r"[A-Za-z]{4,} [a-z]{2,} ", en[0]), out
    for n in needles:
        assert n in out, (n, out)


def _no_line_for_2024(w: Path) -> Path:
    fr = make_frames(300, 12, seed=2)  # reaches 2024
    fr.lines = {k: v for k, v in fr.lines.items() if k < 2024}
    write_frames(fr, w / "data" / "ingested")
    p = {"lines": {k: v for k, v in LINES.items() if k < 2024}}
    (w / "params.yaml").write_text(yaml.safe_dump(p), encoding="utf-8")
    return w / "params.yaml"


def _no_positives(w: Path) -> Path:
    def clear(hh):
        hh = hh.copy()
        for c in ("monitor_category", "monitor_since", "risk_eliminated"):
            hh[c] = None
        return hh

    return _ingested(w, households=clear)


CASES = {
    # command in a working directory without ingest output
    "train, no ingest output": (lambda w: _params(w), ["train"], ["fangpin ingest", "导入"]),
    "retrain, no ingest output": (lambda w: _params(w), ["retrain", "--ledger", "x.csv"], ["fangpin ingest"]),
    # evaluate / promote before training
    "evaluate, not trained": (_ingested, ["evaluate"], ["fangpin train", "train_info.json"]),
    "promote, not trained": (_ingested, ["promote"], ["fangpin train"]),
    # no @champion to score with, nothing to roll back to
    "score, no champion": (_ingested, ["score"], ["@champion", "fangpin promote"]),
    "rollback, no history": (_ingested, ["rollback"], ["roll back", "回退"]),
    # ledgers too short or without positives, a year without a line
    "train, one snapshot": (lambda w: _ingested(w, quarters=1), ["train"], ["labels.horizon_quarters", "已标注"]),
    "train, forced quarter split on a short ledger": (
        lambda w: (_ingested(w, quarters=4), _params(w, model={"split": "quarters"}))[1], ["train"],
        ["model.split", "auto or grouped"]),
    "train, no positives": (_no_positives, ["train"], ["no positives", "正例"]),
    "train, no line for a year": (_no_line_for_2024, ["train"], ["2024", "监测线", "lines"]),
    # run on a ledger path that holds nothing importable
    "run, nothing to ingest": (lambda w: _params(w), ["run", "--ledger", "{w}/nowhere"], ["ingest_report.json"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_two_sentences_and_exit_2(case, tmp_path):
    setup, args, needles = CASES[case]
    w = tmp_path / "w"
    w.mkdir()
    params = setup(w)
    args = [a.format(w=w) for a in args]
    res = _invoke([*args, "--workdir", str(w), "--params", str(params)])
    _assert_sentences(res, *needles)


def test_params_file_errors_are_sentences_too(tmp_path):
    w = tmp_path / "w"
    w.mkdir()
    _assert_sentences(_invoke(["train", "--workdir", str(w), "--params", str(w / "missing.yaml")]),
                      "missing.yaml", "--params")
    bad = w / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"split": "sideways"}}), encoding="utf-8")
    _assert_sentences(_invoke(["train", "--workdir", str(w), "--params", str(bad)]), "model.split")


def test_debug_shows_the_traceback(tmp_path):
    w = tmp_path / "w"
    w.mkdir()
    params = _params(w)
    res = _invoke(["--debug", "train", "--workdir", str(w), "--params", str(params)])
    assert res.exit_code != 0 and res.exception is not None
    from fangpin.errors import MissingInput

    assert isinstance(res.exception, MissingInput)


def test_console_script_in_a_fresh_workdir(tmp_path):
    """The installed `fangpin` command, as a user runs it: two lines on stderr, exit 2; with
    --debug the traceback."""
    exe = Path(sys.executable).with_name("fangpin")
    w = tmp_path / "fresh"
    w.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db", "COLUMNS": "200"}
    env.pop("MPLBACKEND", None)
    r = subprocess.run([str(exe), "evaluate", "--workdir", str(w)], capture_output=True, text=True, env=env,
                       cwd=w, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 2 and lines[0].startswith("错误：") and lines[1].startswith("Error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    r = subprocess.run([str(exe), "--debug", "evaluate", "--workdir", str(w)], capture_output=True, text=True,
                       env=env, cwd=w, timeout=120)
    assert r.returncode == 1 and "Traceback" in r.stderr and "MissingInput" in r.stderr
