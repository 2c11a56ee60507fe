"""Behaviour of a tiny trained model: the guardrail invariant, directional and invariance tests,
exact explanations, determinism. One small model is trained per worker (a few seconds)."""

import copy

import numpy as np
import pytest
from canonical_frames import make_frames
from online import alone

from fangpin.config import Params
from fangpin.ids import check_char
from models import levels as lv
from models.pyfunc import RiskModel
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
def online(trained):
    """150 households of the last quarter as each is scored alone: records, histories, contexts
    and the batch's result for them."""
    frames, *_, model = trained
    t = int(frames.households["quarter_idx"].max())
    return alone(model, frames, t, 150, seed=3)


def _predict(model, recs, online, explain="none"):
    _, hist, ctx, _, cuts, _ = online
    return model.predict(recs, histories=hist, contexts=ctx, thresholds=cuts, explain=explain).frame()


def test_a_household_scored_alone_with_its_history_scores_as_in_the_batch(trained, online):
    model = trained[3]
    recs, hist, ctx, batch, cuts, _ = online
    s = model.predict(recs, histories=hist, contexts=ctx, thresholds=cuts, explain="warnings").columns
    np.testing.assert_allclose(s["probability"], batch["probability"], rtol=0, atol=1e-12)
    for c in ("model_level", "rule_level", "combined_level", "deferred", "rule_hits", "reasons", "summary",
              "measures"):
        assert s[c].tolist() == batch[c].tolist(), c
    assert s["warning"].sum() > 5 and len(set(s["history"])) == 1 and s["history"][0].startswith("ledger:")


def test_every_rule_hit_is_a_warning_or_a_task_on_every_scored_row(trained):
    from fangpin.config import load_params

    frames, _, _, model = trained
    routes = load_params().tasks.routes
    out = model.predict(frames, explain="none").frame()
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


def _directional(model, online, change):
    records = online[0]
    before = _predict(model, records, online)
    changed = [change(copy.deepcopy(r)) for r in records]
    after = _predict(model, changed, online)
    before_p, before_l = before["probability"].to_numpy(), lv.rank(before["combined_level"])
    after_p, after_l = after["probability"].to_numpy(), lv.rank(after["combined_level"])
    assert (after_p >= before_p).all(), np.max(before_p - after_p)
    assert (after_l >= before_l).all()
    return before_p, after_p


def test_lower_income_relative_to_the_line_never_lowers_risk(trained, online):
    def lower(r):
        r["income_per_capita"] = r["income_per_capita"] * 0.6
        return r

    before, after = _directional(trained[3], online, lower)
    assert (after > before).any()  # the model does use income


def test_a_new_serious_illness_never_lowers_risk(trained, online):
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

    before, after = _directional(trained[3], online, ill)
    assert (after > before).any()  # the model does use illness (a model ignoring it fails here)


def test_a_damaged_house_never_lowers_risk(trained, online):
    def damaged(r):
        q = r["quarter"]
        r["unsafe_housing"] = True
        r["events"] = r["events"] + [{"event_date": f"{q[:4]}-0{3 * int(q[-1])}-01", "event_type": "房屋受损",
                                      "department": "住建", "amount": 30000.0}]
        return r

    _, after = _directional(trained[3], online, damaged)
    out = _predict(trained[3], [damaged(copy.deepcopy(r)) for r in online[0]], online)
    assert out["warning"].all()  # R04 is a rule hit, hence a warning


def test_name_id_and_ethnicity_do_not_change_the_score(trained, online):
    model, records = trained[3], online[0]
    base = _predict(model, records, online, explain="warnings")
    changed = copy.deepcopy(records)
    for r in changed:
        for i, m in enumerate(r["members"]):
            m["name"] = f"改名{i}"
            m["ethnicity"] = "藏族" if m.get("ethnicity") != "藏族" else "汉族"
            m["id_number"] = OTHER_ID
    other = _predict(model, changed, online, explain="warnings")
    assert np.array_equal(base["probability"].to_numpy(), other["probability"].to_numpy())
    assert base["rule_hits"].tolist() == other["rule_hits"].tolist()
    assert base["combined_level"].tolist() == other["combined_level"].tolist()
    assert base["reasons"].tolist() == other["reasons"].tolist()


def test_batch_frames_invariance_on_persons(trained):
    frames, _, _, model = trained
    p = frames.persons.copy()
    p["ethnicity"] = "回族"
    p["name"] = None
    p["person_key"] = "k" + p["person_key"]
    from models.features import Frames

    a = model.predict(frames, explain="none").columns["probability"]
    b = model.predict(Frames(frames.households, p, frames.events, frames.lines), explain="none").columns["probability"]
    assert np.array_equal(a, b)


def test_explanations_are_exact_and_only_on_warnings(trained, online):
    model = trained[3]
    s = model.predict(online[0], histories=online[1], contexts=online[2], thresholds=online[4], explain="warnings")
    w = s.columns["warning"]
    assert w.any() and not w.all()
    assert all((r is not None) == bool(x) for r, x in zip(s.columns["reasons"], w, strict=True))
    contrib = model.contributions(s.X[w])
    np.testing.assert_allclose(contrib.sum(axis=1), s.columns["raw_score"][w], rtol=0, atol=1e-9)
    assert "ethnicity" not in model.feature_names


def test_probabilities_are_calibrated_and_monotone_in_raw_score(trained):
    frames, _, _, model = trained
    out = model.predict(frames, explain="none").frame()
    order = np.argsort(out["raw_score"].to_numpy())
    p = out["probability"].to_numpy()[order]
    assert (np.diff(p) >= 0).all() and p.min() >= 0 and p.max() <= 1


def test_training_is_deterministic(trained):
    frames, params, ds, model = trained
    again, _, _ = fit(ds, params)
    assert again.booster.model_to_string() == model.booster.model_to_string()
    assert again.calibrator == model.calibrator


def test_saved_model_scores_identically(trained, online, tmp_path):
    model = trained[3]
    model.save(tmp_path / "m")
    back = RiskModel.load(tmp_path / "m")
    a, b = _predict(model, online[0], online, "warnings"), _predict(back, online[0], online, "warnings")
    assert np.array_equal(a["probability"].to_numpy(), b["probability"].to_numpy())
    assert a["reasons"].tolist() == b["reasons"].tolist() and a["measures"].tolist() == b["measures"].tolist()
    assert back.spec == model.spec and back.ruleset == model.ruleset and back.measures == model.measures


def test_a_model_saved_before_measures_and_settings_were_artifacts_still_loads(trained, tmp_path):
    """Versions registered before the measures table, the explanation settings and the reference
    figures travelled with the model load with the packaged table and the defaults."""
    from models.measures import load_table
    from models.pyfunc import ARTIFACTS, OPTIONAL_ARTIFACTS

    model = trained[3]
    model.save(tmp_path / "m")
    for k in OPTIONAL_ARTIFACTS:
        (tmp_path / "m" / ARTIFACTS[k]).unlink()
    back = RiskModel.load(tmp_path / "m")
    assert back.measures == load_table() and back.reference == {} and back.explain.max_reasons == 4
