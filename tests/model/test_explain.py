"""Reasons (models/explain.py): exact TreeSHAP additivity on every explained row, ≤ 4 reasons each
naming the household's own values, honest units, factors taken from the feature spec."""

from __future__ import annotations

import numpy as np
import pytest
from reason_check import check_reason, numbers
from tiny_model import tiny_model

from fangpin.config import load_params
from models import explain as ex

pytestmark = pytest.mark.xdist_group("explain_tiny_model")


@pytest.fixture(scope="module")
def params():
    return load_params()


@pytest.fixture(scope="module")
def trained(params):
    """A tiny model (project training pieces, isotonic calibration) and the frames it scores."""
    model, fr = tiny_model(params, n=1200, quarters=8, seed=5, trees=40, model_version="1")
    spec, cal = model.spec, model.calibrator
    last = int(fr.households["quarter_idx"].max())
    s = model.predict(fr, quarters=[last], explain="none")
    scored = s.frame()
    warned = np.flatnonzero(scored["warning"].to_numpy(dtype=bool))
    Xw = s.X[warned]
    contrib = model.contributions(Xw)
    reasons = ex.explain_rows(spec, cal, Xw, contrib, params.warnings.max_reasons)
    return dict(fr=fr, model=model, scored=scored, warned=warned, X=Xw, contrib=contrib, reasons=reasons, last=last)


def test_the_tiny_model_has_trees_and_warnings(trained):
    assert trained["model"].booster.num_trees() > 3
    assert len(trained["warned"]) > 50


def test_additivity_on_every_explained_row(trained):
    m, X, C = trained["model"], trained["X"], trained["contrib"]
    raw = m.booster.predict(X, raw_score=True)
    np.testing.assert_allclose(C.sum(axis=1), raw, rtol=0, atol=1e-9)
    F, base = ex.factor_contributions(m.spec, C)
    np.testing.assert_allclose(base + F.sum(axis=1), raw, rtol=0, atol=1e-9)
    ex.check_additivity(raw, C)
    with pytest.raises(AssertionError):
        ex.check_additivity(raw + 1e-3, C)


def test_at_most_four_reasons_each_naming_the_households_own_values(trained, params):
    fr, names = trained["fr"], trained["model"].spec.names
    hh = fr.households[fr.households["quarter_idx"] == trained["last"]].set_index("household_id")
    persons = fr.persons[fr.persons["quarter_idx"] == trained["last"]]
    by_hh = dict(tuple(persons.groupby("household_id")))
    hids = trained["scored"]["household_id"].to_numpy()[trained["warned"]]
    n_reasons = 0
    for x, rs, hid in zip(trained["X"], trained["reasons"], hids, strict=True):
        assert len(rs) <= params.warnings.max_reasons
        for r in rs:
            check_reason(r, x, names, hh.loc[hid], by_hh.get(hid))
            n_reasons += 1
    assert n_reasons > len(hids)  # most warnings carry reasons


def test_the_value_check_can_fail(trained):
    x, names = trained["X"][0], trained["model"].spec.names
    real = trained["reasons"][0][0]
    assert numbers(real["text"])
    fake = dict(real, text=real["text"] + "，另有987,654,321元")
    with pytest.raises(AssertionError):
        check_reason(fake, x, names)


def test_units_ranking_and_direction(trained):
    m, C = trained["model"], trained["contrib"]
    F, _ = ex.factor_contributions(m.spec, C)
    keys = ex.factors_of(m.spec).keys
    raw = C.sum(axis=1)
    downs = 0
    for i, rs in enumerate(trained["reasons"]):
        shown = [r["logodds"] for r in rs]
        assert shown == sorted(shown, key=lambda v: -abs(v))  # most influential first
        for r in rs:
            lo = F[i, keys.index(r["factor"])]
            assert r["logodds"] == pytest.approx(lo, abs=1e-4)
            assert r["direction"] == ("up" if lo > 0 else "down")
            expect = 100 * (m.calibrator(raw[i:i + 1])[0] - m.calibrator(raw[i:i + 1] - lo)[0])
            assert r["prob_pp"] == pytest.approx(expect, abs=0.006)
            assert r["text"].endswith(ex.DOWN_LABEL) == (r["direction"] == "down")
            downs += r["direction"] == "down"
        # nothing left out is more influential than what is shown (down factors included)
        hidden = np.delete(np.abs(F[i]), [keys.index(r["factor"]) for r in rs])
        if len(rs) == 4 and len(hidden):
            assert hidden.max() <= min(abs(v) for v in shown) + 1e-4
    assert downs > 0  # risk-lowering factors do appear when they are among the top


def test_factors_come_from_the_spec_and_the_measures_table_knows_them(trained):
    from models.measures import load_table

    spec = trained["model"].spec
    assert ex.factors_of(spec).keys == tuple(dict.fromkeys(spec.groups[n] for n in spec.names))
    table = load_table()
    assert all(table.knows(k) for k in ex.factors_of(spec).keys)
    assert set(ex.SENTENCES) == set(ex.factors_of(spec).keys)  # every factor has a real sentence


def test_rule_hits_are_not_reasons(trained):
    """A warning's reasons are its own TreeSHAP factors and nothing else: the rule hits travel
    beside them (with the threshold that fired), never as reasons."""
    m = trained["model"]
    s = m.predict(trained["fr"], quarters=[trained["last"]], explain="warnings")
    hit = [i for i, h in enumerate(s.columns["rule_hits"]) if h]
    assert len(hit) > 10
    X = s.X[hit]
    expected = ex.explain_rows(m.spec, m.calibrator, X, m.contributions(X), m.explain.max_reasons)
    assert [s.columns["reasons"][i] for i in hit] == expected
    keys = set(ex.factors_of(m.spec).keys)
    for i in hit:
        assert all(h["threshold"] and h["rule_id"].startswith("R") for h in s.columns["rule_hits"][i])
        assert {r["factor"] for r in s.columns["reasons"][i]} <= keys


@pytest.mark.parametrize("explain", ["warnings", "in_scope", "none"])
def test_reasons_and_measures_go_to_the_rows_the_method_explains(trained, params, explain):
    m = trained["model"]
    s = m.predict(trained["fr"], quarters=[trained["last"]], explain=explain)
    c = s.columns
    want = c["warning"] & (c["in_scope"] if explain == "in_scope" else explain == "warnings")
    assert want.any() or explain == "none"
    for w, r, ms in zip(want, c["reasons"], c["measures"], strict=True):
        assert (r is not None) == bool(w) and (ms is not None) == bool(w)
        if w:
            assert len(r) <= params.warnings.max_reasons and 1 <= len(ms) <= params.warnings.max_measures
