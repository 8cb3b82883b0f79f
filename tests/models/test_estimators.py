"""The cure estimator: scikit-learn contract, out-of-fold calibration, monotone priors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from models.estimators import CalibratedLGBM
from models.metrics import expected_calibration_error, gains_table


def _data(n: int = 4000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"days_past_due": rng.integers(0, 120, n).astype(float), "noise": rng.normal(size=n),
                      "employment": rng.integers(0, 7, n).astype(float)})
    logit = 1.5 - X["days_past_due"] / 25 + 0.3 * (X["employment"] == 2)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y.to_numpy()


def _model(**kw) -> CalibratedLGBM:
    params = {"n_estimators": 120, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 20, "verbose": -1}
    return CalibratedLGBM(params, n_folds=3, monotone={"days_past_due": -1}, categorical=("employment",), **kw)


def test_init_only_stores_arguments_and_clone_works():
    model = _model(calibration="sigmoid")
    assert clone(model).get_params() == model.get_params()
    assert not hasattr(model, "booster_")


@pytest.mark.parametrize("calibration", ["isotonic", "sigmoid"])
def test_calibrated_probabilities_are_well_calibrated_on_fresh_data(calibration):
    X, y = _data()
    model = _model(calibration=calibration).fit(X, y)
    X_new, y_new = _data(seed=1)
    p = model.predict_proba(X_new)[:, 1]
    assert ((p >= 0) & (p <= 1)).all()
    assert expected_calibration_error(y_new, p) < 0.04


def test_more_days_past_due_never_raises_the_cure_chance():
    X, y = _data()
    model = _model().fit(X, y)
    grid = pd.DataFrame({"days_past_due": np.arange(0, 120, dtype=float), "noise": 0.0, "employment": 0.0})
    p = model.predict_proba(grid)[:, 1]
    assert np.all(np.diff(p) <= 1e-12)
    assert p[0] > p[-1]


def test_groups_keep_an_account_on_one_side_of_every_fold():
    X, y = _data(600)
    groups = np.repeat(np.arange(150), 4)
    model = _model()
    for train_idx, test_idx in model._folds(X, y, groups):
        assert not set(groups[train_idx]) & set(groups[test_idx])


def test_contributions_sum_to_the_raw_score():
    X, y = _data(1500)
    model = _model().fit(X, y)
    contrib = model.contributions(X.head(50))
    np.testing.assert_allclose(contrib.sum(axis=1), model.predict_raw(X.head(50)), rtol=1e-6, atol=1e-6)


def test_same_seed_same_model():
    X, y = _data(1500)
    a = _model(random_state=3).fit(X, y).predict_proba(X)[:, 1]
    b = _model(random_state=3).fit(X, y).predict_proba(X)[:, 1]
    np.testing.assert_array_equal(a, b)


def test_gains_table_puts_the_highest_predictions_first():
    y = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0])
    p = np.linspace(1, 0, 10)
    table = gains_table(y, p, groups=5)
    assert table["rate"].iloc[0] == 1.0
    assert table["cum_share_of_positives"].iloc[-1] == 1.0


def test_path_contributions_sum_to_the_raw_score_with_missing_values_and_categories():
    X, y = _data()
    X.loc[X.index[::7], "noise"] = np.nan
    model = _model().fit(X, y)
    X_new = _data(seed=2)[0]
    X_new.loc[X_new.index[::5], "noise"] = np.nan
    X_new.loc[X_new.index[::11], "employment"] = 9.0  # a category never seen in training
    contrib = model.contributions(X_new)
    np.testing.assert_allclose(contrib.sum(axis=1), model.predict_raw(X_new), atol=1e-9)
    assert np.unique(contrib[:, -1]).size == 1  # the bias is one number, the trees' root values


def test_path_contributions_are_the_same_gathered_at_once_or_tree_by_tree(monkeypatch):
    import models.estimators as estimators

    X, y = _data()
    model = _model().fit(X, y)
    paths = estimators.path_contributions(model.booster_)
    rows = _data(seed=4)[0].to_numpy(dtype=np.float64)
    for n in (1, 3, 40, len(rows)):
        monkeypatch.setattr(estimators, "GATHER_AT_ONCE", 1 << 40)
        gathered = paths(rows[:n])
        monkeypatch.setattr(estimators, "GATHER_AT_ONCE", 0)
        np.testing.assert_array_equal(paths(rows[:n]), gathered)  # bit for bit: the reasons never differ


def test_path_contributions_name_the_same_top_reason_as_treeshap_for_most_rows():
    X, y = _data()
    model = _model().fit(X, y)
    X_new = _data(seed=3)[0]
    path = np.abs(model.contributions(X_new)[:, :-1]).argmax(axis=1)
    shap = np.abs(model.booster_.predict(X_new, pred_contrib=True)[:, :-1]).argmax(axis=1)
    assert (path == shap).mean() >= 0.9


def test_band_report_scores_each_band_beside_the_baseline():
    from models.metrics import band_metrics, band_report

    rng = np.random.default_rng(5)
    n = 4000
    dpd = rng.integers(1, 400, n).astype(float)
    p = rng.random(n)
    y = (rng.random(n) < p).astype(int)
    frame = pd.DataFrame({"label": y, "p": p, "p_baseline": np.full(n, 0.5) + rng.random(n) * 1e-6,
                          "days_past_due": dpd, "arrears_instalments": rng.random(n) * 6})
    report = band_report(frame)
    assert [r["band"] for r in report["days_past_due"]] == ["1-30", "31-90", "91-180", "180+"]
    assert sum(r["n"] for r in report["days_past_due"]) == n == sum(r["n"] for r in report["arrears"])
    assert report["fresh"]["n"] == int((dpd <= 90).sum())
    assert report["fresh"]["auc_lift"] > 0.2  # the informative score against a near-constant baseline
    flat = band_metrics(report)
    assert flat["dpd_31-90_n"] == ((dpd > 30) & (dpd <= 90)).sum() and "fresh_roc_auc" in flat


def test_baseline_learns_from_its_three_features_only():
    from models.baseline import Baseline

    rng = np.random.default_rng(6)
    n = 2000
    frame = pd.DataFrame({"days_past_due": rng.integers(1, 200, n), "arrears": rng.random(n) * 1e5,
                          "days_since_last_payment": np.where(rng.random(n) < 0.1, np.nan, rng.random(n) * 300),
                          "noise": rng.random(n)})
    y = (rng.random(n) < 1 / (1 + frame["days_past_due"].to_numpy() / 30)).astype(int)
    p = Baseline(1).fit(frame, y).predict(frame)
    assert pd.Series(p).corr(-frame["days_past_due"], method="spearman") > 0.9
    moved = Baseline(1).fit(frame.assign(noise=0.0), y).predict(frame.assign(noise=1.0))
    assert np.allclose(p, moved)
    assert np.allclose(Baseline().fit(frame, np.ones(n)).predict(frame), 1.0)


# ------------------------------------------------------------- calibration by band, folds by date, fallback

def _banded(**kw) -> CalibratedLGBM:
    return _model(calibration_bands=(30, 90), min_band_examples=300, **kw)


def _band_shift(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw scores that are log-odds in 1-30 days past due but 1.5 too high in 31-90 (a pooled map cannot be
    right in both), and a third band too small for its own map."""
    rng = np.random.default_rng(seed)
    dpd = np.where(rng.random(n) < 0.5, rng.integers(1, 31, n), rng.integers(31, 91, n)).astype(float)
    dpd[: n // 100] = 120.0
    raw = rng.normal(0.0, 1.5, n)
    truth = raw - 1.5 * (dpd > 30)
    y = (rng.random(n) < 1 / (1 + np.exp(-truth))).astype(int)
    return raw, y, dpd


def test_calibration_by_band_fixes_what_a_pooled_map_cannot():
    raw, y, dpd = _band_shift(20000, 0)
    raw_new, y_new, dpd_new = _band_shift(20000, 1)
    banded, pooled = _banded(), _model()
    banded.feature_names_in_ = pooled.feature_names_in_ = np.array(["days_past_due"], dtype=object)
    banded._fit_calibrator(raw, y, dpd)
    pooled._fit_calibrator(raw, y)
    p_band, p_pool = banded.calibrate(raw_new, dpd_new), pooled.calibrate(raw_new)
    for on in (dpd_new <= 30, (dpd_new > 30) & (dpd_new <= 90)):
        assert expected_calibration_error(y_new[on], p_band[on]) < 0.03
        assert expected_calibration_error(y_new[on], p_pool[on]) > 0.08
    assert banded.band_own_ == [True, True, False]  # 200 examples past 90 days: the pooled map, ...
    grid = np.linspace(-6, 6, 500)
    by_band = [banded.calibrate(grid, np.full(500, d)) for d in (10.0, 60.0, 120.0)]
    assert np.all(by_band[1] <= by_band[0]) and np.all(by_band[2] <= by_band[1])  # ... capped by the bands before
    assert all(np.all(np.diff(p) >= 0) for p in by_band)


def test_a_model_calibrated_by_band_needs_the_band():
    X, y = _data()
    model = _banded().fit(X, y)
    assert model.band_edges_ is not None
    with pytest.raises(ValueError, match="days_past_due"):
        model.calibrate(model.predict_raw(X))
    np.testing.assert_allclose(model.predict_proba(X.to_numpy())[:, 1], model.predict_proba(X)[:, 1])


def test_more_days_past_due_never_raises_the_cure_chance_across_calibration_bands():
    X, y = _data()
    model = _banded().fit(X, y)
    for employment in range(7):
        grid = pd.DataFrame({"days_past_due": np.arange(0, 120, dtype=float), "noise": 0.3,
                             "employment": float(employment)})
        assert np.all(np.diff(model.predict_proba(grid)[:, 1]) <= 1e-12)


def _dated(n_accounts: int = 300, n_dates: int = 40, seed: int = 0):
    """Weekly as-of dates whose cure rates swing (a batch of repayments posted, or not) and a feature that
    tracks the calendar (tenure: one cohort of loans), with no account-level signal at all."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2026-01-01", periods=n_dates, freq="7D", tz="UTC")
    date_rate = rng.choice([0.1, 0.9], n_dates)
    rows = pd.DataFrame({"account": np.repeat(np.arange(n_accounts), n_dates),
                         "date": np.tile(np.arange(n_dates), n_accounts)})
    rows["as_of"] = dates[rows["date"]]
    X = pd.DataFrame({"tenure": rows["date"] + rng.normal(0, 0.1, len(rows)), "noise": rng.normal(size=len(rows))})
    y = (rng.random(len(rows)) < date_rate[rows["date"]]).astype(int)
    return X, y, rows


def test_folds_by_date_keep_label_windows_apart():
    X, y, rows = _dated(20, 40)
    model = CalibratedLGBM(n_folds=5, purge_days=30)
    times = rows["as_of"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    folds = model._folds(X, y, rows["account"].to_numpy(), times)
    assert len(folds) == 5
    for train_idx, test_idx in folds:
        test_dates = np.unique(times[test_idx])
        gap = np.min(np.abs(times[train_idx][:, None] - test_dates[None, :]), axis=1)
        assert gap.min() >= np.timedelta64(30, "D")
        assert len(test_dates) == 8 and np.all(np.diff(test_dates) == np.timedelta64(7, "D"))


def test_the_dates_outcomes_do_not_pass_for_skill():
    X, y, rows = _dated()
    params = {"n_estimators": 100, "learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 20, "verbose": -1}
    by_account = CalibratedLGBM(params, n_folds=5, stack_baseline=False).fit(X, y, groups=rows["account"])
    by_date = CalibratedLGBM(params, n_folds=5, purge_days=30, stack_baseline=False).fit(
        X, y, groups=rows["account"], times=rows["as_of"])
    assert by_account.fold_kind_ == "accounts" and by_date.fold_kind_ == "as-of dates"
    assert by_account.oof_auc_["booster"] > 0.85  # it learned each date's outcome through the calendar ...
    assert by_date.oof_auc_["booster"] < 0.65     # ... which says nothing about a date it has not seen


def _three_features(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"days_past_due": rng.integers(1, 120, n).astype(float), "arrears": rng.lognormal(10, 1, n),
                      "days_since_last_payment": np.where(rng.random(n) < 0.1, np.nan, rng.integers(1, 300, n)),
                      "noise": rng.normal(size=n)})
    logit = 2.0 - 0.9 * np.log1p(X["days_past_due"]) + 0.2 * rng.normal(size=n)
    return X, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int).to_numpy()


def test_no_constant_predictor_on_a_small_data_set_where_the_baseline_has_signal():
    X, y = _three_features(300, 0)
    params = {"n_estimators": 100, "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 200, "verbose": -1}
    X_new, y_new = _three_features(2000, 1)
    for fallback in (False, True):
        model = CalibratedLGBM(params, n_folds=5, monotone={"days_past_due": -1},
                               stack_baseline=fallback).fit(X, y)
        p = model.predict_proba(X_new)[:, 1]
        assert np.unique(p).size > 5
        assert roc_auc_score(y_new, p) > 0.65


def test_the_baseline_is_stacked_in_where_the_booster_ranks_no_better_out_of_fold():
    X, y = _three_features(3000, 2)  # the truth is the baseline's own form: log-odds linear in log(1 + dpd)
    params = {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 7, "min_child_samples": 20, "verbose": -1}
    model = CalibratedLGBM(params, n_folds=5, monotone={"days_past_due": -1}).fit(X, y)
    assert model.oof_auc_["baseline"] >= model.oof_auc_["booster"]
    assert model.weights_[0] == 0 and model.weights_[1] > 0 and not model.uses_booster_
    X_new, y_new = _three_features(2000, 3)
    p = model.predict_proba(X_new)[:, 1]
    assert roc_auc_score(y_new, p) > 0.7 and expected_calibration_error(y_new, p) < 0.05
    contrib = model.contributions(X_new.to_numpy())
    np.testing.assert_allclose(contrib.sum(axis=1), model.predict_raw(X_new), atol=1e-9)
    assert np.all(contrib[:, 3] == 0)  # the noise column is not one of the baseline's features
    grid = X_new.head(1).loc[[X_new.index[0]] * 119].assign(days_past_due=np.arange(1, 120, dtype=float))
    assert np.all(np.diff(model.predict_proba(grid)[:, 1]) <= 1e-12)


def test_the_booster_keeps_the_weight_where_it_sees_what_the_baseline_cannot():
    X, y = _three_features(3000, 4)
    rng = np.random.default_rng(4)
    y = np.where(np.abs(X["noise"].to_numpy()) > 1.0, (rng.random(3000) < 0.9).astype(int), y)  # a non-linear signal
    params = {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 7, "min_child_samples": 20, "verbose": -1}
    model = CalibratedLGBM(params, n_folds=5, monotone={"days_past_due": -1}).fit(X, y)
    assert model.oof_auc_["booster"] > model.oof_auc_["baseline"] + 0.05
    assert model.uses_booster_ and model.weights_ == (1.0, 0.0) and model.prior_ is None  # the booster alone
    contrib = model.contributions(X.head(50).to_numpy())
    np.testing.assert_allclose(contrib.sum(axis=1), model.predict_raw(X.head(50)), atol=1e-9)


def test_ece_by_chance_is_large_on_few_cases_and_small_on_many():
    from models.metrics import ece_by_chance

    rng = np.random.default_rng(7)
    few = ece_by_chance(rng.uniform(0.2, 0.8, 200), draws=200)
    many = ece_by_chance(rng.uniform(0.2, 0.8, 20000), draws=50)
    assert few.mean() > 0.05 and (few > 0.05).mean() > 0.5  # a perfectly calibrated model, 200 cases
    assert many.mean() < 0.015 and (many < 0.05).all()


def test_one_walk_of_the_trees_gives_the_chance_and_the_contributions_bit_for_bit():
    """`explain` (what scoring asks for every overdue account) gives exactly `predict_proba` and `contributions`:
    the raw score summed from the leaves tree after tree is the booster's own, for a booster alone, a booster
    with the baseline stacked in, the baseline alone and a model calibrated by band; few rows and many."""
    X, y = _data(3000, 5)
    X3, y3 = _three_features(3000, 2)
    params = {"n_estimators": 150, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 20, "verbose": -1}
    models = [(_model().fit(X, y), X), (_banded().fit(X, y), X),
              (CalibratedLGBM(params, n_folds=3, monotone={"days_past_due": -1}).fit(X3, y3), X3)]
    stacked = CalibratedLGBM(params, n_folds=3, monotone={"days_past_due": -1}).fit(X3, y3)
    stacked.weights_ = (0.7, 0.4)  # both parts weighted, whatever the folds chose
    stacked.prior_ = stacked.prior_ or CalibratedLGBM(params, n_folds=3, stack_baseline=True).fit(
        X3, (X3["days_past_due"] < 40).astype(int).to_numpy()).prior_
    assert stacked.prior_ is not None
    models.append((stacked, X3))
    for model, frame in models:
        for rows in (frame.to_numpy()[:1], frame.to_numpy()[:7], frame.to_numpy()):
            p, contrib = model.explain(rows)
            np.testing.assert_array_equal(p, model.predict_proba(rows)[:, 1])
            np.testing.assert_array_equal(contrib, model.contributions(rows))
