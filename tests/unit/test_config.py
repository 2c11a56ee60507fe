from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from fangpin.config import MissingLineError, Params, load_params


def test_repo_params_validate(repo_root):
    p = load_params(repo_root / "params.yaml")
    assert p.labels.horizon_quarters == 2
    assert p.line_for(2021) == 6000
    assert p.line_for(2020) == 5000
    assert p.warnings.verification_days == 15


def test_missing_year_is_an_error_not_a_default():
    p = Params(lines={2021: 6000})
    with pytest.raises(MissingLineError) as exc:
        p.line_for(2030)
    assert "2030" in str(exc.value) and "监测线" in str(exc.value)


def test_unknown_key_is_rejected(tmp_path: Path):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"labels": {"horizon": 2}}), encoding="utf-8")
    with pytest.raises(ValidationError):
        load_params(f)


def test_level_cutoffs_must_be_ordered():
    with pytest.raises(ValidationError):
        Params.model_validate({"levels": {"red": 0.1, "yellow": 0.2, "blue": 0.05}})


def test_state_dir_env_override(tmp_path: Path, monkeypatch, repo_root):
    monkeypatch.setenv("FANGPIN_STATE_DIR", str(tmp_path / "s"))
    assert load_params(repo_root / "params.yaml").paths.state_dir == tmp_path / "s"
