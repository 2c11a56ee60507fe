"""Training from a partitioned feature table (pipelines.train.feature_table / fit_partitioned, the
path a cluster runs): with every row it is the in-process model exactly; the negative sample keeps
every positive, is the same however the table is partitioned, and is weighted; a household that
moved between townships has its whole history in each of its chunks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from fangpin.cluster import Executor
from fangpin.config import load_params
from pipelines.common import load_frames
from pipelines.partition import HouseholdRouter
from pipelines.train import build_dataset, feature_table, fit, fit_partitioned, sample_rows

pytestmark = pytest.mark.xdist_group("train_partitioned")


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    from fangpin.ingest import ingest
    from fangpin.synth.write import generate

    p = load_params()
    d = tmp_path_factory.mktemp("county")
    generate(d / "export", 2500, 9, 11, "2022Q1", p.line_for, 2, 4, 5, p.labels.horizon_quarters, 4)
    assert ingest([d / "export"], [], d / "ing", p, key=b"k" * 32).ok
    p = p.model_copy(update={"paths": p.paths.model_copy(update={"ingested_dir": d / "ing"}),
                             "model": p.model.model_copy(update={"partition_rows": 5000, "n_estimators": 40})})
    return d, p


def test_partitioned_training_with_every_row_is_the_in_process_model(county, tmp_path):
    d, p = county
    ds = build_dataset(load_frames(p), p)
    m1, s1, i1 = fit(ds, p)
    ft = feature_table(p, d / "ing", tmp_path, Executor())
    assert ft.partitions >= 4
    assert ft.rows == len(ds.feats)
    # the feature table equals the in-process one, row for row (in its row order)
    tab = ft.frame().compute(scheduler="sync").sort_values("_row").reset_index(drop=True)
    cols = [c for c in ds.feats.columns if c not in ("in_scope",)]
    pd.testing.assert_frame_equal(tab[cols].reset_index(drop=True), ds.feats[cols].reset_index(drop=True),
                                  check_dtype=False)
    assert (tab["usable"].to_numpy() == ds.usable).all()
    m2, s2, i2 = fit_partitioned(ft, p, Executor())
    assert s1 == s2
    assert m1.booster.model_to_string() == m2.booster.model_to_string()
    assert m1.calibrator == m2.calibrator
    for k in ("n_train", "n_valid", "n_calib", "pos_train", "pos_valid", "pos_calib", "purged_rows"):
        assert i1[k] == i2[k], k


def test_negative_sample_keeps_every_positive_and_does_not_depend_on_partitions():
    rng = np.random.default_rng(0)
    n = 20_000
    df = pd.DataFrame({"household_id": [f"h{i:06d}" for i in rng.permutation(n)],
                       "quarter_idx": rng.integers(8080, 8088, n), "usable": rng.random(n) < 0.9,
                       "label": (rng.random(n) < 0.03).astype(float)})
    whole = sample_rows(df, range(8080, 8086), 0.1, 7)
    parts = pd.concat([sample_rows(x, range(8080, 8086), 0.1, 7) for x in (df.iloc[i:i + 3000] for i in range(0, n, 3000))])
    assert whole.index.equals(parts.index)
    use = df["usable"] & df["quarter_idx"].isin(range(8080, 8086))
    pos = use & (df["label"] > 0)
    assert set(whole.index[whole["label"] > 0]) == set(df.index[pos])
    neg = whole[whole["label"] == 0]
    assert (neg["weight"] == 10.0).all() and (whole.loc[whole["label"] > 0, "weight"] == 1.0).all()
    assert 0.08 < len(neg) / (use & ~pos).sum() < 0.12
    # another seed, another sample
    assert not sample_rows(df, range(8080, 8086), 0.1, 8).index.equals(whole.index)


def test_a_household_that_moved_is_routed_with_all_its_rows_to_each_of_its_chunks():
    ids = pa.array(["a", "b", "c"])
    # a → chunk 0, b → chunk 1 and (moved) chunk 2, c → chunk 2
    r = HouseholdRouter(ids, np.array([0, 1, 2]), extra_pos=np.array([1]), extra_bin=np.array([2]))
    batch = pa.record_batch({"household_id": pa.array(["b", "a", "c", "b", "x"])})
    rows, bucket = r.route("persons", batch)
    got = sorted(zip(rows.tolist(), bucket.tolist(), strict=True))
    assert got == [(0, 1), (0, 2), (1, 0), (2, 2), (3, 1), (3, 2)]


def test_a_short_ledger_split_by_villages_is_fitted_from_the_collected_table(tmp_path):
    """Too few quarters for a split by quarter: villages are held out (models.train), which needs
    every row at once — the partitioned path collects the table and gives the in-process model."""
    from fangpin.ingest import ingest
    from fangpin.synth.write import generate

    p = load_params()
    generate(tmp_path / "export", 1500, 5, 11, "2022Q1", p.line_for, 2, 4, 6, p.labels.horizon_quarters, 4)
    assert ingest([tmp_path / "export"], [], tmp_path / "ing", p, key=b"k" * 32).ok
    p = p.model_copy(update={"paths": p.paths.model_copy(update={"ingested_dir": tmp_path / "ing"}),
                             "model": p.model.model_copy(update={"partition_rows": 3000, "n_estimators": 30})})
    m1, s1, _ = fit(build_dataset(load_frames(p), p), p)
    assert s1.fit_mode == "grouped" or s1.test_mode == "villages"
    ft = feature_table(p, tmp_path / "ing", tmp_path / "work", Executor())
    assert ft.partitions >= 2
    m2, s2, i2 = fit_partitioned(ft, p, Executor())
    assert s1 == s2 and i2["feature_partitions"] == ft.partitions
    assert m1.booster.model_to_string() == m2.booster.model_to_string() and m1.calibrator == m2.calibrator
