"""The cure estimator: scikit-learn contract, out-of-fold calibration, monotone priors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

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
