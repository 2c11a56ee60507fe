"""The one feature module: no look-ahead, no sensitive attributes, one code path for a county's
history and for a single posted household."""

import numpy as np
import pandas as pd
import pytest
from canonical_frames import make_frames
from hypothesis import given
from hypothesis import strategies as st

from models.features import FEATURES, FORBIDDEN, FeatureSpec, Frames, build_features, frames_from_records

SPEC = FeatureSpec.default()


@pytest.fixture(scope="module")
def frames():
    return make_frames(400, 7, seed=3)


def _matrix(feats):
    return feats[list(SPEC.names)].to_numpy(dtype=float)


def test_feature_list_has_no_sensitive_attribute():
    names = [f.name for f in FEATURES]
    assert len(names) == len(set(names))
    for n in names:
        for bad in (*FORBIDDEN, "minzu", "ethnic"):
            assert bad not in n.lower(), n
    assert SPEC.names == tuple(names)
    assert set(SPEC.monotone.values()) <= {-1, 0, 1}


def _perturb_after(fr: Frames, t: int, rng) -> Frames:
    """Change every snapshot and event after quarter t in every way we can think of."""
    hh = fr.households.copy()
    later = hh["quarter_idx"] > t
    hh.loc[later, "income_per_capita"] = rng.uniform(100, 90000, later.sum())
    hh.loc[later, "medical_out_of_pocket"] = rng.uniform(0, 50000, later.sum())
    hh.loc[later, "monitor_category"] = "突发严重困难户"
    hh.loc[later, "risk_eliminated"] = False
    hh.loc[later, "unsafe_housing"] = True
    p = fr.persons.copy()
    pl = p["quarter_idx"] > t
    p.loc[pl, "health"] = "患有大病"
    p.loc[pl, "labor_skill"] = "丧失劳动力"
    p.loc[pl, "work_status"] = "未务工"
    ev = fr.events.copy()
    el = ev["quarter_idx"] > t
    ev.loc[el, "amount"] = 99999.0
    extra = ev[el].copy()
    extra["event_type"] = "自然灾害受灾"
    ev = pd.concat([ev, extra], ignore_index=True)
    return Frames(hh, p, ev, fr.lines)


def test_features_at_t_use_only_what_was_known_by_the_end_of_t(frames):
    rng = np.random.default_rng(0)
    qs = sorted(frames.households["quarter_idx"].unique())
    base = build_features(frames)
    for t in qs[:-1]:
        pert = build_features(_perturb_after(frames, t, rng))
        at_t = (base["quarter_idx"] == t).to_numpy()
        a, b = _matrix(base[at_t]), _matrix(pert[at_t])
        assert np.array_equal(np.isnan(a), np.isnan(b))
        assert np.allclose(a, b, equal_nan=True), f"quarter {t}: a later change moved a feature"
        # and the perturbation did change something later (the test can fail)
        if t < qs[-2]:
            assert not np.allclose(_matrix(base[~at_t & (base["quarter_idx"] > t).to_numpy()]),
                                   _matrix(pert[~at_t & (pert["quarter_idx"] > t).to_numpy()]), equal_nan=True)


def test_dropping_everything_later_gives_the_same_features(frames):
    qs = sorted(frames.households["quarter_idx"].unique())
    t = qs[3]
    full = build_features(frames)
    cut = build_features(frames.until(t), quarters=[t])
    a = _matrix(full[full["quarter_idx"] == t])
    assert np.allclose(a, _matrix(cut), equal_nan=True)


def test_subset_of_quarters_equals_full_computation(frames):
    qs = sorted(frames.households["quarter_idx"].unique())
    full = build_features(frames)
    part = build_features(frames, quarters=qs[2:4])
    sel = full[full["quarter_idx"].isin(qs[2:4])].reset_index(drop=True)
    assert (sel["household_id"] == part["household_id"]).all()
    assert np.allclose(_matrix(sel), _matrix(part), equal_nan=True)


def test_ethnicity_names_ids_and_sex_do_not_change_features(frames):
    p = frames.persons.copy()
    p["ethnicity"] = "回族"
    p["name"] = "张三"
    p["person_key"] = "x" + p["person_key"]
    p["id_masked"] = "9999**********0000"
    p["sex"] = np.where(p["sex"] == "男", "女", "男")
    a = build_features(frames)
    b = build_features(Frames(frames.households, p, frames.events, frames.lines))
    assert np.allclose(_matrix(a), _matrix(b), equal_nan=True)


def alone(frames, t: int, n: int, seed: int):  # without a model: the feature functions themselves
    """``n`` households of quarter ``t`` as each would be scored alone: the ledger's snapshot
    records with their history and place context (what the batch leaves in the store)."""
    from fangpin.store.history import merge_context
    from models.features import feature_table, history_records, place_contexts, snapshot_records

    feats = feature_table(frames, quarters=[t])
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(len(feats), min(n, len(feats)), replace=False))
    ids = [feats["household_id"][i] for i in pos]
    recs = snapshot_records(frames, t, ids)
    places = place_contexts(feats)
    ctx = [merge_context(places.get((r["county"], r["township"], "")), places.get((r["county"], r["township"],
                                                                                   r["village"]))) for r in recs]
    return recs, history_records(feats, pos), ctx


def test_one_posted_household_gets_the_batch_features(frames):
    """The API path: canonical JSON records (members, recent events) with the ledger's history and
    place context → the same feature values as the household has in the county batch."""
    t = int(frames.households["quarter_idx"].max())
    recs, hist, ctx = alone(frames, t, 60, seed=1)
    assert any(r["events"] for r in recs) and all(r["members"] for r in recs)
    batch = build_features(frames, quarters=[t]).set_index("household_id")
    fr, sources = frames_from_records(recs, frames.lines, hist, ctx)
    assert set(sources) == {f"ledger:{frames.households['quarter'].max()}"}
    single = build_features(fr, population=False)
    b = batch.loc[single["household_id"]]
    for name in SPEC.names:
        x, y = single[name].to_numpy(float), b[name].to_numpy(float)
        assert np.array_equal(x, y, equal_nan=True), name
    # without the history, the history features are missing (a household seen for the first time)
    bare = build_features(frames_from_records(recs, frames.lines)[0], population=False)
    for name in ("income_change", "d_n_members", "township_ident_rate_4q", "village_disaster_share"):
        assert bare[name].isna().all() and b[name].notna().any(), name


def test_each_household_posted_alone_gets_exactly_the_batch_features(frames):
    """The API scores one household per request: the numpy-column tables of one record give the
    very same feature values (bit for bit) as the county batch, and as the same tables handed to the
    feature code as DataFrames."""
    t = int(frames.households["quarter_idx"].max())
    recs, hist, ctx = alone(frames, t, 25, seed=2)
    batch = build_features(frames, quarters=[t]).set_index("household_id")
    names = list(SPEC.names)
    for rec, h, c in zip(recs, hist, ctx, strict=True):
        fr, _ = frames_from_records([rec], frames.lines, [h], [c])
        one = build_features(fr, population=False)
        as_df = build_features(Frames(fr.households.to_frame(), fr.persons.to_frame(),
                                      None if fr.events is None else fr.events.to_frame(), fr.lines),
                               population=False)
        x = one[names].to_numpy(float)[0]
        assert np.array_equal(x, batch.loc[rec["household_id"], names].to_numpy(float), equal_nan=True)
        assert np.array_equal(x, as_df[names].to_numpy(float)[0], equal_nan=True)


def test_a_later_quarter_uses_the_ledgers_latest_history_and_an_earlier_one_none(frames):
    """History of quarter L given to a snapshot of L+1 is what the batch computes when the ledger
    has L+1 (income history and changes since L); a snapshot older than L gets no history."""
    t = int(frames.households["quarter_idx"].max())
    head = Frames(*(x[x["quarter_idx"] <= t - 1] if x is not None else None
                    for x in (frames.households, frames.persons, frames.events)), frames.lines)
    recs_prev, hist_prev, _ = alone(head, t - 1, 40, seed=3)
    ids = [r["household_id"] for r in recs_prev]
    present = set(frames.households.loc[frames.households["quarter_idx"] == t, "household_id"])
    keep = [i for i, h in enumerate(ids) if h in present]
    from models.features import snapshot_records

    now = snapshot_records(frames, t, [ids[i] for i in keep])
    fr, sources = frames_from_records(now, frames.lines, [hist_prev[i] for i in keep])
    assert set(sources) == {f"ledger:{head.households['quarter'].max()}"}
    single = build_features(fr, population=False).set_index("household_id")
    batch = build_features(frames, quarters=[t]).set_index("household_id").loc[single.index]
    for name in ("income_change", "quarters_since_income_change", *(f"d_{b}" for b in
                                                                     ("n_members", "medical_oop"))):
        assert np.array_equal(single[name].to_numpy(float), batch[name].to_numpy(float), equal_nan=True), name
    old = snapshot_records(frames, t - 2, [ids[i] for i in keep][:5])
    _, src = frames_from_records(old, frames.lines, [hist_prev[i] for i in keep][:5])
    assert src == ["none"] * len(old)


def test_snapshot_table_is_the_same_whatever_order_the_tables_come_in(frames):
    """snapshot_table skips its re-ordering when the tables already come in the households' order
    (the batch's case); households asked in another order, and persons and events listed
    household by household in another order, give the same rows."""
    import pyarrow as pa

    from models.features import snapshot_table

    t = int(frames.households["quarter_idx"].max())
    ids = frames.households.loc[frames.households["quarter_idx"] == t, "household_id"].astype(str).tolist()
    a = snapshot_table(frames, t, ids)
    assert a.num_rows == len(ids) and pa.compute.sum(pa.compute.list_value_length(a.column("events"))).as_py() > 0
    assert snapshot_table(frames, t, ids[::-1]).equals(a.take(pa.array(np.arange(len(ids))[::-1])))

    def households_reversed(df):  # households in reverse order, each household's rows kept in order
        return df.iloc[np.argsort(-pd.factorize(df["household_id"])[0], kind="stable")]

    other = Frames(households_reversed(frames.households), households_reversed(frames.persons),
                   households_reversed(frames.events), frames.lines)
    assert snapshot_table(other, t, ids).equals(a)


def test_text_positions_agree_with_a_pandas_index():
    """The Arrow lookup behind household codes gives what pandas' get_indexer gives (missing and
    unknown values -1), and stands aside (None) when the values are not all text."""
    from models.features import _Keys, text_positions

    keys = np.array([f"H{i:05d}" for i in range(300)], dtype=object)
    rng = np.random.default_rng(0)
    values = np.array([f"H{i:05d}" for i in rng.integers(0, 400, 1000)], dtype=object)
    values[::7] = None
    want = pd.Index(keys).get_indexer(values)
    assert np.array_equal(text_positions(values, keys), want)
    assert np.array_equal(text_positions(pd.Series(values, dtype="str"), pd.Index(keys, dtype="str")), want)
    assert text_positions(np.array([1, 2], dtype=object), keys) is None
    k = _Keys(np.concatenate([keys, keys]), np.repeat([3, 4], len(keys)))
    assert np.array_equal(k.codes_of(values), want) and np.array_equal(k.codes_of(pd.Series(values, dtype="str")), want)
    ints = _Keys(np.arange(300).astype(object), np.zeros(300, dtype=np.int64))  # not text: the pandas Index
    assert np.array_equal(ints.codes_of(np.array([5, 299, 300] * 30, dtype=object))[:3], [5, 299, -1])


def test_missing_monitoring_line_is_an_error(frames):
    from fangpin.config import MissingLineError

    fr = Frames(frames.households, frames.persons, frames.events, {2021: 6000.0})
    with pytest.raises(MissingLineError):
        build_features(fr)


@given(st.lists(st.one_of(st.none(), st.just(float("nan")), st.sampled_from(["甲", "乙", "", " "]),
                          st.booleans(), st.integers(-3, 3)), max_size=80))
def test_small_factorize_matches_pandas(values):
    from models.features import _factorize

    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    codes, uniq = _factorize(arr)
    pc, pu = pd.factorize(arr, use_na_sentinel=True)
    assert codes.tolist() == pc.tolist()
    assert list(uniq) == list(pu)


def test_annual_ledger_look_backs_count_calendar_quarters():
    """Keep only each year's Q4 snapshot (an annual ledger; department events stay dated): the
    changes since the previous quarter are missing (that quarter has no snapshot), event windows and
    the township's identification rate over the last 4 quarters equal the quarterly ledger's."""
    from models.features import build_features

    full = make_frames(600, 12, seed=4)
    q4 = lambda df: df[df["quarter_idx"] % 4 == 3].reset_index(drop=True)  # noqa: E731
    annual = Frames(q4(full.households), q4(full.persons), full.events, full.lines)
    fa = build_features(annual)
    fq_ = build_features(full)
    fq_ = fq_[fq_["quarter_idx"] % 4 == 3].reset_index(drop=True)
    assert (fa["household_id"].to_numpy() == fq_["household_id"].to_numpy()).all()
    for base in ("n_members", "medical_oop", "n_migrant_workers"):
        assert fa[f"d_{base}"].isna().all()  # never a year's change read as a quarter's
        assert fq_.loc[fq_["quarter_idx"] > fq_["quarter_idx"].min(), f"d_{base}"].notna().any()
    for col in ("ev_all_amount_4q", "ev_medical_amount_2q"):
        np.testing.assert_allclose(fa[col].to_numpy(float), fq_[col].to_numpy(float), err_msg=col)
    # the identification rate reads the missing quarters from 识别监测时间 in t's snapshot (households
    # that left or were identified twice in the year differ slightly): close to the quarterly value,
    # far from counting only t's own identifications (the three missing snapshots as zeros)
    a, b = fa["township_ident_rate_4q"].to_numpy(float), fq_["township_ident_rate_4q"].to_numpy(float)
    assert b.mean() > 0.02 and np.abs(a - b).mean() < 0.1 * b.mean()
    hh = annual.households
    own = (hh["monitor_category"].notna() & ~hh["risk_eliminated"].astype("boolean").fillna(False)
           & ((hh["monitor_since"] // 100) * 4 + (hh["monitor_since"] % 100 - 1) // 3 == hh["quarter_idx"]))
    assert own.mean() < 0.5 * b.mean()
    # income changes between verifications: counted in quarters between the snapshots
    since = fa["quarters_since_income_change"].dropna()
    assert len(since) and (since % 4 == 0).all()


def test_warm_up_rows_are_those_whose_look_back_starts_before_the_data():
    from models.features import defined_after_warm_up, lookback_quarters

    assert lookback_quarters("d_n_members") == 1 and lookback_quarters("ev_hospital_n_4q") == 3
    assert lookback_quarters("income_per_capita") == 0 and lookback_quarters("income_change") == 4
    q = np.arange(100, 106)
    d = defined_after_warm_up(["d_n_members", "ev_hospital_n_4q", "income_per_capita"], q, ledger_start=100,
                              events_start=99)
    assert d["d_n_members"].tolist() == [False, True, True, True, True, True]
    assert d["ev_hospital_n_4q"].tolist() == [False, False, True, True, True, True]  # events from 99
    assert d["income_per_capita"].all()
