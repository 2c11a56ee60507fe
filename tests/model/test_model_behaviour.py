"""Behaviour of a tiny trained model: the guardrail invariant, directional and invariance tests,
exact explanations, determinism. One small model is trained per worker (a few seconds)."""

import copy

import numpy as np
import pytest
from canonical_frames import make_frames

from fangpin.config import Params
from fangpin.ids import check_char
from models import levels as lv
from models.pyfunc import RiskModel, records_from_frames
from pipelines.train import build_dataset, fit

OTHER_ID = "11010519491231002" + check_char("11010519491231002")  # generated, valid checksum

pytestmark = pytest.mark.xdist_group("tiny_model")


def tiny_params() -> Params:
    p = Params(lines={2021: 6000.0, 2022: 6500.0, 2023: 6900.0, 2024: 7300.0, 2025: 7600.0})
    model = p.model.model_copy(update={"n_estimators": 60, "min_child_samples": 20, "num_leaves": 7,
                                       "early_stopping_rounds": 20, "num_threads": 1})
    return p.model_copy(update={"model": model})


@pytest.fixture(scope="module")
def trained():
    frames = make_frames(1500, 9, seed=11)
    params = tiny_params()
    ds = build_dataset(frames, params)
    model, split, info = fit(ds, params)
    model.lines = dict(frames.lines)
    return frames, params, ds, model


@pytest.fixture(scope="module")
def records(trained):
    frames, *_ = trained
    t = int(frames.households["quarter_idx"].max())
    return records_from_frames(frames, t, 150, seed=3)


def test_every_rule_hit_is_a_warning_or_a_task_on_every_scored_row(trained):
    from fangpin.config import load_params

    frames, _, _, model = trained
    routes = load_params().tasks.routes
    out = model.score(frames, explain="none")
    assert len(out) == len(frames.households)
    comb = lv.rank(out["combined_level"])
    floor = lv.floor_ranks(out["rule_hits"].to_numpy(), model.levels)
    has_hit = out["rule_hits"].map(len).to_numpy() > 0
    assert has_hit.sum() > 0
    assert (has_hit == (lv.rank(out["rule_level"]) > 0)).all()
    deferred = out["deferred"].to_numpy(dtype=bool)
    # a hit of a rule with a floor is a warning of at least that floor (a 红 candidate beyond the
    # township's capacity: 黄); a hit of a rule without one is a task
    assert ((comb >= floor) | (deferred & (floor == 3) & (comb == 2))).all()
    assert (comb[floor > 0] > 0).all()
    for hits in out["rule_hits"]:
        assert all(model.levels.rule_floors.get(h["rule_id"]) is not None or h["rule_id"] in routes for h in hits)
    assert ((comb >= lv.rank(out["model_level"])) | deferred).all()
    assert (out["warning"].to_numpy() == (comb > 0)).all()


def _scores(model, recs):
    out = model.score_records(recs, explain="none")
    return out["probability"].to_numpy(), lv.rank(out["combined_level"])


def _directional(model, records, change):
    before_p, before_l = _scores(model, records)
    changed = [change(copy.deepcopy(r)) for r in records]
    after_p, after_l = _scores(model, changed)
    assert (after_p >= before_p).all(), np.max(before_p - after_p)
    assert (after_l >= before_l).all()
    return before_p, after_p


def test_lower_income_relative_to_the_line_never_lowers_risk(trained, records):
    def lower(r):
        r["income_per_capita"] = r["income_per_capita"] * 0.6
        return r

    before, after = _directional(trained[3], records, lower)
    assert (after > before).any()  # the model does use income


def test_a_new_serious_illness_never_lowers_risk(trained, records):
    def ill(r):
        q = r["quarter"]
        day = {"1": "02-10", "2": "05-10", "3": "08-10", "4": "11-10"}[q[-1]]
        r["events"] = r["events"] + [
            {"event_date": f"{q[:4]}-{day}", "event_type": "重大疾病", "department": "卫健", "amount": None},
            {"event_date": f"{q[:4]}-{day}", "event_type": "住院", "department": "医保", "amount": 20000.0}]
        for m in r["members"]:
            if m["health"] == "健康":
                m["health"] = "患有大病"
                break
        return r

    _directional(trained[3], records, ill)


def test_a_damaged_house_never_lowers_risk(trained, records):
    def damaged(r):
        q = r["quarter"]
        r["unsafe_housing"] = True
        r["events"] = r["events"] + [{"event_date": f"{q[:4]}-0{3 * int(q[-1])}-01", "event_type": "房屋受损",
                                      "department": "住建", "amount": 30000.0}]
        return r

    _, after = _directional(trained[3], records, damaged)
    out = trained[3].score_records([damaged(copy.deepcopy(r)) for r in records], explain="none")
    assert out["warning"].all()  # R04 is a rule hit, hence a warning


def test_name_id_and_ethnicity_do_not_change_the_score(trained, records):
    model = trained[3]
    base = model.score_records(records)
    changed = copy.deepcopy(records)
    for r in changed:
        for i, m in enumerate(r["members"]):
            m["name"] = f"改名{i}"
            m["ethnicity"] = "藏族" if m.get("ethnicity") != "藏族" else "汉族"
            m["id_number"] = OTHER_ID
    other = model.score_records(changed)
    assert np.array_equal(base["probability"].to_numpy(), other["probability"].to_numpy())
    assert base["rule_hits"].tolist() == other["rule_hits"].tolist()
    assert base["combined_level"].tolist() == other["combined_level"].tolist()


def test_batch_frames_invariance_on_persons(trained):
    frames, _, _, model = trained
    p = frames.persons.copy()
    p["ethnicity"] = "回族"
    p["name"] = None
    p["person_key"] = "k" + p["person_key"]
    from models.features import Frames

    a = model.score(frames, explain="none")["probability"].to_numpy()
    b = model.score(Frames(frames.households, p, frames.events, frames.lines), explain="none")["probability"]
    assert np.array_equal(a, b.to_numpy())


def test_explanations_are_exact_and_only_on_warnings(trained, records):
    model = trained[3]
    out = model.score_records(records)
    assert out["warning"].any()
    for _, row in out.iterrows():
        e = row["explanation"]
        if not row["warning"]:
            assert e is None
            continue
        total = e["base_value"] + sum(f["contribution"] for f in e["features"].values())
        assert abs(total - row["raw_score"]) < 1e-6
        assert list(e["features"]) == list(model.feature_names)
        assert "ethnicity" not in e["features"]


def test_probabilities_are_calibrated_and_monotone_in_raw_score(trained):
    frames, _, _, model = trained
    out = model.score(frames, explain="none")
    order = np.argsort(out["raw_score"].to_numpy())
    p = out["probability"].to_numpy()[order]
    assert (np.diff(p) >= 0).all() and p.min() >= 0 and p.max() <= 1


def test_training_is_deterministic(trained):
    frames, params, ds, model = trained
    again, _, _ = fit(ds, params)
    assert again.booster.model_to_string() == model.booster.model_to_string()
    assert again.calibrator == model.calibrator


def test_saved_model_scores_identically(trained, records, tmp_path):
    model = trained[3]
    model.save(tmp_path / "m")
    back = RiskModel.load(tmp_path / "m")
    a, b = model.score_records(records), back.score_records(records)
    assert np.array_equal(a["probability"].to_numpy(), b["probability"].to_numpy())
    assert back.spec == model.spec and back.ruleset == model.ruleset
