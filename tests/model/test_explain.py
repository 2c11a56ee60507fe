"""Reasons (models/explain.py): exact TreeSHAP additivity on every explained row, ≤ 4 reasons each
naming the household's own values (and, when they raise the risk, the county's comparison),
figures that add up to the probability minus the county base rate, factors taken from the
feature spec."""

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
    """A tiny model (project training pieces, centred isotonic calibration, the reference figures
    training attaches) and the frames it scores."""
    model, fr = tiny_model(params, n=1200, quarters=8, seed=5, trees=40, model_version="1")
    spec, cal = model.spec, model.calibrator
    last = int(fr.households["quarter_idx"].max())
    s = model.predict(fr, quarters=[last], explain="none")
    scored = s.frame()
    warned = np.flatnonzero(scored["warning"].to_numpy(dtype=bool))
    Xw = s.X[warned]
    contrib = model.contributions(Xw)
    county = scored["county"].to_numpy()[warned]
    reasons, summaries = ex.explain_full(spec, cal, Xw, contrib, params.warnings.max_reasons, county=county,
                                         reference=model.reference)
    return dict(fr=fr, model=model, scored=scored, warned=warned, X=Xw, contrib=contrib, reasons=reasons,
                summaries=summaries, county=county, last=last)


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
            check_reason(r, x, names, hh.loc[hid], by_hh.get(hid), trained["model"].reference)
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
            # the factor's share of the walk along the calibration curve, in proportion to its log-odds
            slope = ex.secant_slope(m.calibrator, raw[i:i + 1], C[i:i + 1, -1])[0]
            assert r["prob_pp"] == pytest.approx(100 * slope * lo, abs=0.05)
            assert np.sign(r["prob_pp"]) == np.sign(lo)
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
    hit = [i for i, h in enumerate(s.columns["rule_hits"]) if h and s.columns["warning"][i]]
    assert len(hit) > 10
    X = s.X[hit]
    county = s.columns["county"][hit]
    expected = ex.explain_rows(m.spec, m.calibrator, X, m.contributions(X), m.explain.max_reasons, county=county,
                               reference=m.reference)
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
    for w, r, ms, sm in zip(want, c["reasons"], c["measures"], c["summary"], strict=True):
        assert (r is not None) == bool(w) and (ms is not None) == bool(w) and (sm is not None) == bool(w)
        if w:
            assert len(r) <= params.warnings.max_reasons and 1 <= len(ms) <= params.warnings.max_measures


def test_figures_add_up_to_the_probability_minus_the_county_base_rate(trained):
    """For every explained warning: the shown figures plus 其他因素 equal probability minus the
    county's base rate within 0.1 points, and no two factors with different log-odds share a
    figure."""
    m, C = trained["model"], trained["contrib"]
    prob = m.calibrator(C.sum(axis=1))
    rates = m.reference["base_rate"]
    checked = 0
    for i, (rs, sm) in enumerate(zip(trained["reasons"], trained["summaries"], strict=True)):
        assert sm["base_rate"] == pytest.approx(rates.get(trained["county"][i], rates["*"]))
        assert sm["reference_period"] == m.reference["period"]
        total = sum(r["prob_pp"] for r in rs) + sm["other_pp"]
        assert abs(total - 100 * (prob[i] - sm["base_rate"])) <= 0.1
        figs = [(r["logodds"], r["prob_pp"]) for r in rs]
        for a in range(len(figs)):
            for b in range(a + 1, len(figs)):
                if figs[a][0] != figs[b][0]:
                    assert figs[a][1] != figs[b][1], rs
        checked += len(rs) > 1
    assert checked > 20


def test_figures_can_fail_on_a_flat_calibrator():
    """The guarantee needs a strictly increasing calibrator: with the isotonic step function the
    secant is 0 inside a step and every figure would be the same, so the figures move apart."""
    from models.train import Calibrator

    step = Calibrator("isotonic", x=[-10.0, 10.0], y=[0.2, 0.2])
    pp, other = ex.figures(step, np.array([1.0]), np.array([0.0]), np.array([[0.6, 0.3, -0.2]]),
                           np.array([[True, True, True]]), np.array([0.1]))
    assert pp.tolist() == [[0.02, 0.01, -0.01]]  # moved apart by 0.01, signs kept
    assert pp.sum() + other[0] == pytest.approx(100 * (0.2 - 0.1))


def test_a_risk_raising_reason_gives_the_county_comparison(trained):
    ups = [r for rs in trained["reasons"] for r in rs if r["direction"] == "up"]
    downs = [r for rs in trained["reasons"] for r in rs if r["direction"] == "down"]
    assert ups and all(("；全县" in r["text"]) or r["factor"] == "calendar" for r in ups)
    assert not any("；全县" in r["text"] for r in downs)
    inc = [r["text"] for r in ups if r["factor"] == "income"]
    if inc:
        assert "人均纯收入中位数为监测线的" in inc[0]
