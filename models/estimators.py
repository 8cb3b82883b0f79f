"""The cure model's estimator: LightGBM, calibrated on out-of-fold predictions.

`CalibratedLGBM` follows the scikit-learn contract (`__init__` stores, `fit` returns self). Fitting:
1. K folds (grouped by account when groups are given, so one customer's days never sit on both sides);
   in each, a booster is trained with early stopping on a slice of its own training part and predicts
   the held-out fold: out-of-fold raw scores for every example.
2. A calibrator (isotonic or sigmoid) maps out-of-fold raw scores to probabilities.
3. The final booster is trained on all examples with the median best iteration of the folds.
Serving keeps only the booster and the calibrator as arrays (`np.interp`), no wrapper objects.
"""

from __future__ import annotations

import weakref

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split


def booster_params(lgbm_params: dict | None, seed: int, default_rounds: int) -> tuple[dict, int]:
    """LightGBM training parameters and the number of rounds: binary objective, quiet, seeded and
    deterministic, two threads unless set (every booster of the project is trained through this)."""
    params = dict(lgbm_params or {})
    rounds = int(params.pop("n_estimators", default_rounds))
    params.setdefault("objective", "binary")
    params.setdefault("verbose", -1)
    params.setdefault("num_threads", 2)
    params.update(seed=seed, deterministic=True)
    return params, rounds


def early_stopped_booster(data, y: np.ndarray, weight: np.ndarray, lgbm_params: dict | None, seed: int,
                          categorical: list[str], feature_name: list[str] | str = "auto") -> lgb.Booster:
    """One booster whose number of trees is chosen by early stopping (30 rounds) on a seeded 15% slice,
    then refit on every row; weights normalised to mean 1. `data` is a frame or an array (then name its
    columns with `feature_name`). The response model's sub-models and the real-data baselines use it."""
    params, rounds = booster_params(lgbm_params, seed, default_rounds=300)
    weight = weight / weight.mean()
    valid = np.random.default_rng(seed).random(len(y)) < 0.15

    def dataset(rows: np.ndarray, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        return lgb.Dataset(data[rows], label=y[rows], weight=weight[rows], feature_name=feature_name,
                           categorical_feature=categorical, free_raw_data=False, reference=reference)

    fit_set = dataset(~valid)
    probe = lgb.train(params, fit_set, num_boost_round=rounds, valid_sets=[dataset(valid, fit_set)],
                      callbacks=[lgb.early_stopping(30, verbose=False)])
    return lgb.train(params, dataset(np.ones(len(y), dtype=bool)),
                     num_boost_round=max(probe.best_iteration or rounds, 1))


SMALL_BATCH = 2048  # rows below which a prediction runs on one thread


def predict(booster: lgb.Booster, X, **kwargs) -> np.ndarray:
    """`booster.predict`, on one thread for small inputs: a real-time request is a row or a few dozen, and
    waking OpenMP threads for them costs milliseconds (100x the prediction itself on a busy machine)."""
    if len(X) < SMALL_BATCH:
        kwargs.setdefault("num_threads", 1)
    return booster.predict(X, **kwargs)


class PathContributions:
    """Per-feature contributions to a LightGBM booster's raw score along each row's decision path (the
    path attribution of treeinterpreter, "Saabas"): in every tree, each split credits its feature with the
    change in expected value from the node to the child the row takes, where a node's expected value is the
    training-count-weighted mean of the leaves beneath it. They sum exactly to the raw score with the bias
    (the trees' root values).

    Each leaf's contributions are fixed by its path, so they are tabulated once per booster (leaves x
    features); a row then costs one `pred_leaf` prediction and a gather-and-sum, about 30 times less than
    TreeSHAP (`pred_contrib`), which dominated a real-time answer. Same output layout as `pred_contrib`:
    the features, then the bias.
    """

    def __init__(self, booster: lgb.Booster):
        n_features = booster.num_feature()
        tables, values, offsets, self.bias = [], [], [0], 0.0
        for tree in booster.dump_model()["tree_info"]:
            table, value = np.zeros((tree["num_leaves"], n_features)), np.zeros(tree["num_leaves"])
            root = tree["tree_structure"]
            _expected(root)
            self._walk(root, np.zeros(n_features), table, value)
            self.bias += root["expected"]
            tables.append(table)
            values.append(value)
            offsets.append(offsets[-1] + len(table))
        self.table = np.vstack(tables) if tables else np.zeros((0, n_features))
        self.values = np.concatenate(values) if values else np.zeros(0)  # each leaf's output, as the booster's
        self.offsets = np.asarray(offsets[:-1], dtype=np.int64)
        self.booster = booster

    def _walk(self, node: dict, path: np.ndarray, table: np.ndarray, value: np.ndarray) -> None:
        """Fill the rows of `table` (and `value`: the leaf's output) of the leaves below `node`, reached with
        contributions `path`."""
        if "leaf_value" in node:
            table[node.get("leaf_index", 0)] = path
            value[node.get("leaf_index", 0)] = node["leaf_value"]
            return
        for side in ("left_child", "right_child"):
            step = path.copy()
            step[node["split_feature"]] += node[side]["expected"] - node["expected"]
            self._walk(node[side], step, table, value)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """(rows, features + 1) contributions, the bias last."""
        return self._contributions(self._leaves(X))

    def explain(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(raw score, contributions) from one walk of the trees (`pred_leaf`): the raw score is the sum of the
        leaves' outputs tree after tree, as the booster adds them (the same bits as `raw_score=True`;
        `tests/models/test_estimators.py`), so a real-time answer walks its 400 trees once, not twice."""
        leaves = self._leaves(X)
        if not leaves.shape[1]:
            return predict(self.booster, X, raw_score=True), self._contributions(leaves)
        return np.cumsum(self.values[leaves], axis=1)[:, -1], self._contributions(leaves)

    def _leaves(self, X: np.ndarray) -> np.ndarray:
        """(rows, trees) each row's leaf in each tree, as rows of `table`."""
        return predict(self.booster, X, pred_leaf=True).astype(np.int64).reshape(len(X), -1) + self.offsets

    def _contributions(self, leaves: np.ndarray) -> np.ndarray:
        """The contributions of rows whose leaves are `leaves` (from `_leaves`), the bias last."""
        if not leaves.shape[1]:
            contrib = np.zeros((len(leaves), self.table.shape[1]))
        elif leaves.size * self.table.shape[1] <= GATHER_AT_ONCE:  # a few rows (real time): one gather and sum
            contrib = self.table[leaves].sum(axis=1)
        else:  # tree by tree, in order: the same sums, bit for bit, without the gather's
            contrib = self.table[leaves[:, 0]]  # (rows x trees x features) temporary (400 MB for 3,000 rows)
            for tree in range(1, leaves.shape[1]):
                contrib += self.table[leaves[:, tree]]
        return np.hstack([contrib, np.full((len(leaves), 1), self.bias)])


GATHER_AT_ONCE = 1 << 20  # values (rows x trees x features) gathered at once: 8 MB; beyond, tree by tree


def _expected(node: dict) -> tuple[float, float]:
    """Annotate every node of a dumped tree with its expected value (the count-weighted mean of the leaves
    beneath it); returns the node's (expected value, training count)."""
    if "leaf_value" in node:
        node["expected"] = float(node["leaf_value"])
        return node["expected"], float(node.get("leaf_count") or 1)
    (lv, lc), (rv, rc) = _expected(node["left_child"]), _expected(node["right_child"])
    node["expected"] = (lv * lc + rv * rc) / (lc + rc)
    return node["expected"], lc + rc


_PATHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def path_contributions(booster: lgb.Booster) -> PathContributions:
    """The booster's tabulated path contributions, built on first use (kept while the booster lives,
    never pickled with it)."""
    if booster not in _PATHS:
        _PATHS[booster] = PathContributions(booster)
    return _PATHS[booster]


class CalibratedLGBM(ClassifierMixin, BaseEstimator):
    """LightGBM binary classifier with out-of-fold calibration (isotonic or sigmoid).

    - Folds: given `times` (each example's as-of time) spanning at least `time_fold_min_dates` distinct
      dates, the folds are contiguous blocks of as-of dates, and a training part drops the examples whose
      label window (`purge_days`) overlaps the test block; early stopping then holds out whole dates. Else
      (or without `times`) stratified folds grouped by account. Why: accounts overdue on the same date cure
      together (a bank holiday, a field partner posting a month's repayments at once), so account-grouped
      folds let the booster learn the dates' outcomes through features that track the calendar (tenure,
      remaining term) and report it as skill: on Kiva 0.928 out-of-fold ROC AUC against 0.481 across dates.
    - Calibration: with `calibration_bands` (days-past-due edges, e.g. (30, 90, 180)) one isotonic map per
      band of `band_feature` holding at least `min_band_examples` out-of-fold examples of both classes (the
      pooled map for the others), made non-increasing across bands where `monotone[band_feature]` is -1, so
      that more days past due never raises the cure chance. A pooled map is right on average but not within
      a band: on the demo its ECE on its own out-of-fold scores was 0.038 in 1-30 days and 0.041 in 31-90.
    - Stacking with the baseline, where the booster cannot beat it: when the baseline's three features are
      columns of X (`models.baseline.FEATURES`), a logistic regression on them (`models.baseline`'s inputs,
      its coefficient on a feature with a monotone prior kept to the prior's sign) is scored on the same
      folds. If the booster's out-of-fold ROC AUC is not above the regression's, the raw score becomes
      `a x booster + b x regression` (both log-odds), a, b >= 0 learned by a logistic regression on the two
      out-of-fold scores (a component with a negative weight is dropped): `weights_`, and `uses_booster_`
      says whether a > 0. Where the booster ranks better it scores alone (weights 1, 0): on the data sets
      measured, always blending cost the UCI cards 0.012 of fresh-arrears ROC AUC and doubled an ECE.
    - Leaves: `min_child_samples` is capped at `min_child_share` of the rows a booster learns from, so a
      small data set still splits (a booster without a split predicts one number for everyone).
    """

    def __init__(self, lgbm_params: dict | None = None, n_folds: int = 5, calibration: str = "isotonic",
                 monotone: dict | None = None, categorical: tuple[str, ...] = (),
                 early_stopping_rounds: int = 50, random_state: int = 0,
                 calibration_bands: tuple[float, ...] | None = None, band_feature: str = "days_past_due",
                 min_band_examples: int = 500, time_fold_min_dates: int = 10, purge_days: float = 0.0,
                 stack_baseline: bool = True, min_child_share: float | None = 0.05):
        self.lgbm_params = lgbm_params
        self.n_folds = n_folds
        self.calibration = calibration
        self.monotone = monotone
        self.categorical = categorical
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state
        self.calibration_bands = calibration_bands
        self.band_feature = band_feature
        self.min_band_examples = min_band_examples
        self.time_fold_min_dates = time_fold_min_dates
        self.purge_days = purge_days
        self.stack_baseline = stack_baseline
        self.min_child_share = min_child_share

    def _train_params(self, columns: list[str]) -> tuple[dict, int]:
        params, rounds = booster_params(self.lgbm_params, self.random_state, default_rounds=400)
        if self.monotone:
            params["monotone_constraints"] = [int(self.monotone.get(c, 0)) for c in columns]
        return params, rounds

    def _dataset(self, X: pd.DataFrame, y: np.ndarray) -> lgb.Dataset:
        cats = [c for c in self.categorical if c in X.columns]
        return lgb.Dataset(X, label=y, categorical_feature=cats or "auto", free_raw_data=False)

    def _sized(self, params: dict, n: int) -> dict:
        """`min_child_samples` at most `min_child_share` of the n rows, so a booster on few rows can still
        split (None: as configured)."""
        if self.min_child_share is None:
            return params
        key = next((k for k in ("min_child_samples", "min_data_in_leaf") if k in params), "min_child_samples")
        return {**params, key: max(1, min(int(params.get(key, 20)), int(n * float(self.min_child_share))))}

    def _fit_booster(self, X: pd.DataFrame, y: np.ndarray, rounds: int, params: dict,
                     stop: bool, times: np.ndarray | None = None) -> lgb.Booster:
        """One booster; with `stop`, early stopping on a 10% slice of X: whole as-of dates when `times`
        are given, else a stratified slice of rows."""
        params = self._sized(params, len(y))
        if not stop:
            return lgb.train(params, self._dataset(X, y), num_boost_round=rounds)
        held = self._held_dates(y, times)
        if held is None:
            X_fit, X_val, y_fit, y_val = train_test_split(
                X, y, test_size=0.1, stratify=y, random_state=self.random_state)
        else:
            X_fit, X_val, y_fit, y_val = X[~held], X[held], y[~held], y[held]
        train = self._dataset(X_fit, y_fit)
        valid = lgb.Dataset(X_val, label=y_val, reference=train)
        callbacks = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
        return lgb.train(params, train, num_boost_round=rounds, valid_sets=[valid], callbacks=callbacks)

    def _held_dates(self, y: np.ndarray, times: np.ndarray | None) -> np.ndarray | None:
        """The rows of 10% of the as-of dates (at least one, seeded) that early stopping holds out; None
        without times, or when the rest would hold one class only."""
        if times is None:
            return None
        dates = np.unique(times)
        rng = np.random.default_rng(self.random_state)
        held = np.isin(times, rng.choice(dates, max(1, int(round(0.1 * len(dates)))), replace=False))
        return held if 0 < held.sum() < len(y) and len(np.unique(y[~held])) == 2 else None

    def _by_dates(self, times: np.ndarray | None) -> bool:
        """Whether folds are blocks of as-of dates: times given, over at least `time_fold_min_dates` dates."""
        return times is not None and len(np.unique(times)) >= max(int(self.time_fold_min_dates), self.n_folds)

    def _folds(self, X: pd.DataFrame, y: np.ndarray, groups, times: np.ndarray | None = None
               ) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._by_dates(times):
            return self._time_folds(times)
        if groups is None:
            cv = StratifiedKFold(self.n_folds, shuffle=True, random_state=self.random_state)
            return list(cv.split(X, y))
        cv = StratifiedGroupKFold(self.n_folds, shuffle=True, random_state=self.random_state)
        return list(cv.split(X, y, groups))

    def _time_folds(self, times: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Contiguous blocks of as-of dates; each training part without the examples whose label window
        (`purge_days`) overlaps the block (before it) or that the block's windows overlap (after it)."""
        purge = np.timedelta64(int(round(float(self.purge_days) * 86400)), "s")
        folds = []
        for block in np.array_split(np.unique(times), self.n_folds):
            test = (times >= block[0]) & (times <= block[-1])
            train = (times + purge <= block[0]) | (times >= block[-1] + purge)
            folds.append((np.flatnonzero(train & ~test), np.flatnonzero(test)))
        return folds

    def fit(self, X: pd.DataFrame, y, groups=None, times=None) -> CalibratedLGBM:
        """Out-of-fold raw scores -> calibrator (and the baseline fallback); then the final booster on
        everything. `times`: each example's as-of time (for folds across dates)."""
        y = np.asarray(y, dtype=np.int64)
        times = None if times is None else _as_datetime64(times)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.classes_ = np.array([0, 1])
        params, rounds = self._train_params(list(X.columns))
        folds = self._folds(X, y, groups, times)
        self.fold_kind_ = "as-of dates" if self._by_dates(times) else "accounts"
        oof, covered, best = np.zeros(len(y)), np.zeros(len(y), dtype=bool), []
        for train_idx, test_idx in folds:
            if len(np.unique(y[train_idx])) < 2 or not len(test_idx):
                continue
            booster = self._fit_booster(X.iloc[train_idx], y[train_idx], rounds, params, stop=True,
                                        times=None if times is None else times[train_idx])
            best.append(booster.best_iteration or rounds)
            oof[test_idx] = booster.predict(X.iloc[test_idx], raw_score=True,
                                            num_iteration=booster.best_iteration or None)
            covered[test_idx] = True
        self.n_iterations_ = max(int(np.median(best)), 1) if best else rounds
        self.oof_raw_ = np.where(covered, oof, np.nan)
        self.prior_, self.weights_ = None, (1.0, 0.0)
        self.oof_auc_ = {"booster": _auc_or_none(y[covered], oof[covered])}
        if self.stack_baseline and all(c in X.columns for c in BASELINE_FEATURES):
            self._stack_baseline(X, y, folds, covered, oof)
        self.uses_booster_ = self.weights_[0] > 0
        raw = self.oof_raw_[covered]
        self._fit_calibrator(raw, y[covered], self._band_values(X)[covered] if self._banded(X) else None)
        self.booster_ = self._fit_booster(X, y, self.n_iterations_, params, stop=False)
        return self

    def _stack_baseline(self, X: pd.DataFrame, y: np.ndarray, folds, covered: np.ndarray,
                        oof: np.ndarray) -> None:
        """Score the three-feature regression on the same folds; where the booster's out-of-fold ROC AUC is
        not above the regression's, learn the weights of the two out-of-fold log-odds (non-negative): the
        regression refitted on every row joins the model when its weight is positive, and the out-of-fold raw
        scores become the weighted sum."""
        inputs, signs = _prior_inputs(X), self._prior_signs()
        base_oof = np.zeros(len(y))
        for train_idx, test_idx in folds:
            if len(np.unique(y[train_idx])) < 2 or not len(test_idx):
                continue
            base_oof[test_idx] = _LinearPrior.fit(inputs[train_idx], y[train_idx], signs).logit(inputs[test_idx])
        self.oof_auc_["baseline"] = base_auc = _auc_or_none(y[covered], base_oof[covered])
        booster_auc = self.oof_auc_["booster"]
        if base_auc is None or (booster_auc is not None and booster_auc > base_auc):
            return  # the booster ranks better out of fold: it scores alone
        Z = np.column_stack([oof, base_oof])[covered]
        weights = _LinearPrior.fit(Z, y[covered], np.array([1, 1]), standardise=False).coef
        if not weights.any():
            return
        self.weights_ = (float(weights[0]), float(weights[1]))
        self.oof_raw_ = np.where(covered, oof * weights[0] + base_oof * weights[1], np.nan)
        self.oof_auc_["stacked"] = _auc_or_none(y[covered], self.oof_raw_[covered])
        if weights[1] > 0:
            self.prior_ = _LinearPrior.fit(inputs, y, signs)
            self.prior_.columns = np.array([list(X.columns).index(c) for c in BASELINE_FEATURES])

    def _prior_signs(self) -> np.ndarray:
        """The monotone priors of the baseline's features (+1, -1 or 0), for its coefficients."""
        return np.array([int((self.monotone or {}).get(c, 0)) for c in BASELINE_FEATURES])

    def _banded(self, X) -> bool:
        return bool(self.calibration_bands) and self.calibration == "isotonic" and \
            self.band_feature in list(self.feature_names_in_)

    def _band_values(self, X) -> np.ndarray:
        """The band feature's column of X (a frame or an array in the training columns' order)."""
        if isinstance(X, pd.DataFrame):
            return X[self.band_feature].to_numpy(dtype=np.float64)
        return np.asarray(X, dtype=np.float64)[:, list(self.feature_names_in_).index(self.band_feature)]

    def _fit_calibrator(self, raw: np.ndarray, y: np.ndarray, bands: np.ndarray | None = None) -> None:
        self.band_edges_ = None
        if self.calibration == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
            self.calib_x_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
            self.calib_y_ = np.asarray(iso.y_thresholds_, dtype=np.float64)
            if bands is not None:
                self._fit_band_calibrators(raw, y, bands, iso)
        elif self.calibration == "sigmoid":
            lr = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), y)
            self.calib_x_ = np.array([float(lr.coef_[0, 0]), float(lr.intercept_[0])])
            self.calib_y_ = np.empty(0)
        else:
            raise ValueError(f"calibration must be 'isotonic' or 'sigmoid', not {self.calibration!r}")

    def _fit_band_calibrators(self, raw: np.ndarray, y: np.ndarray, values: np.ndarray,
                              pooled: IsotonicRegression) -> None:
        """One isotonic map per band with enough out-of-fold examples of both classes (the pooled map for the
        rest), tabulated on one grid of raw scores (every map's knots) and, under a monotone prior on the
        band feature, made non-increasing (or non-decreasing) from band to band at every knot. The maps
        interpolate linearly between the same knots, so the order between bands holds at every raw score."""
        edges = np.asarray(sorted(float(e) for e in self.calibration_bands), dtype=np.float64)
        band = np.searchsorted(edges, values, side="left")
        maps, self.band_sizes_ = [], []
        for b in range(len(edges) + 1):
            on = band == b
            self.band_sizes_.append(int(on.sum()))
            enough = on.sum() >= int(self.min_band_examples) and len(np.unique(y[on])) == 2
            maps.append(IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw[on], y[on])
                        if enough else pooled)
        self.band_own_ = [m is not pooled for m in maps]
        grid = np.unique(np.concatenate([np.asarray(m.X_thresholds_, dtype=np.float64) for m in maps]))
        table = np.vstack([m.predict(grid) for m in maps])
        sign = int((self.monotone or {}).get(self.band_feature, 0))
        if sign < 0:
            table = np.minimum.accumulate(table, axis=0)
        elif sign > 0:
            table = np.maximum.accumulate(table, axis=0)
        self.band_edges_, self.calib_x_, self.calib_y_ = edges, grid, table

    def calibrate(self, raw: np.ndarray, band_values: np.ndarray | None = None) -> np.ndarray:
        """Raw scores -> calibrated probabilities; with per-band maps, `band_values` (the band feature, e.g.
        days past due) picks each row's map (required then)."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.calibration != "isotonic":
            slope, intercept = self.calib_x_
            return 1.0 / (1.0 + np.exp(-(slope * raw + intercept)))
        if getattr(self, "band_edges_", None) is None:
            return np.interp(raw, self.calib_x_, self.calib_y_)
        if band_values is None:
            raise ValueError(f"this model is calibrated by band of {self.band_feature}: pass its values")
        band = np.searchsorted(self.band_edges_, np.asarray(band_values, dtype=np.float64), side="left")
        out = np.empty(len(raw))
        for b in np.unique(band):
            on = band == b
            out[on] = np.interp(raw[on], self.calib_x_, self.calib_y_[b])
        return out

    def predict_raw(self, X) -> np.ndarray:
        """The model's raw margin (log-odds before calibration): the booster's, weighted with the baseline
        regression's when stacked."""
        a, b = getattr(self, "weights_", (1.0, 0.0))
        raw = a * predict(self.booster_, X, raw_score=True) if a > 0 else np.zeros(len(X))
        return self._stacked_raw(raw, X, b)

    def _stacked_raw(self, raw: np.ndarray, X, b: float) -> np.ndarray:
        prior = getattr(self, "prior_", None)
        if prior is not None and b > 0:
            raw = raw + b * prior.logit(_prior_inputs(X, prior.columns))
        return raw

    def predict_proba(self, X) -> np.ndarray:
        p = self._calibrated(self.predict_raw(X), X)
        return np.column_stack([1.0 - p, p])

    def _calibrated(self, raw: np.ndarray, X) -> np.ndarray:
        bands = self._band_values(X) if getattr(self, "band_edges_", None) is not None else None
        return self.calibrate(raw, bands)

    def explain(self, X) -> tuple[np.ndarray, np.ndarray]:
        """`(predict_proba(X)[:, 1], contributions(X))`, the same numbers, from one walk of the booster's trees
        (`PathContributions.explain`): what scoring asks of the cure model for every overdue account."""
        X = np.asarray(X, dtype=np.float64)
        a, b = getattr(self, "weights_", (1.0, 0.0))
        if a > 0:
            raw, contrib = path_contributions(self.booster_).explain(X)
            raw, contrib = a * raw, a * contrib
        else:
            raw, contrib = np.zeros(len(X)), np.zeros((len(X), X.shape[1] + 1))
        return self._calibrated(self._stacked_raw(raw, X, b), X), self._stacked_terms(contrib, X, b)

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def contributions(self, X) -> np.ndarray:
        """Per-feature contributions to the raw score; last column is the bias: the booster's path
        contributions (`PathContributions`) and the stacked regression's terms on its three features, each
        times its weight."""
        X = np.asarray(X, dtype=np.float64)
        a, b = getattr(self, "weights_", (1.0, 0.0))
        out = a * path_contributions(self.booster_)(X) if a > 0 else np.zeros((len(X), X.shape[1] + 1))
        return self._stacked_terms(out, X, b)

    def _stacked_terms(self, out: np.ndarray, X: np.ndarray, b: float) -> np.ndarray:
        prior = getattr(self, "prior_", None)
        if prior is not None and b > 0:
            terms, bias = prior.terms(_prior_inputs(X, prior.columns))
            out[:, prior.columns] += b * terms
            out[:, -1] += b * bias
        return out


BASELINE_FEATURES = ("days_past_due", "arrears", "days_since_last_payment")  # models.baseline.FEATURES
NEVER_PAID_DAYS = 3650.0  # models.baseline.NEVER_PAID_DAYS


def _prior_inputs(X, columns: np.ndarray | None = None) -> np.ndarray:
    """The baseline's inputs, log(1 + x) of its three features (no payment: NEVER_PAID_DAYS), from a frame
    or from an array's `columns`."""
    if isinstance(X, pd.DataFrame) and columns is None:
        raw = X[list(BASELINE_FEATURES)].to_numpy(dtype=np.float64).copy()
    else:
        raw = np.asarray(X, dtype=np.float64)[:, columns].copy()
    raw[:, 2] = np.where(np.isnan(raw[:, 2]), NEVER_PAID_DAYS, raw[:, 2])
    return np.log1p(np.clip(np.nan_to_num(raw, nan=0.0), 0, None))


class _LinearPrior:
    """A logistic regression as arrays (a request costs a dot product), on standardised inputs unless told
    otherwise; a coefficient whose sign contradicts its `signs` (+1, -1; 0 free) is refitted at zero. The
    baseline regression of the stacking, and the stacking's weights themselves (signs +1)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: float):
        self.mean, self.scale, self.coef, self.intercept = mean, scale, coef, intercept
        self.columns: np.ndarray | None = None

    @classmethod
    def fit(cls, Z: np.ndarray, y: np.ndarray, signs: np.ndarray, standardise: bool = True) -> _LinearPrior:
        mean, scale = (Z.mean(axis=0), Z.std(axis=0)) if standardise else (np.zeros(Z.shape[1]), np.ones(Z.shape[1]))
        scale = np.where(scale > 0, scale, 1.0)
        S = (Z - mean) / scale
        keep = np.ones(Z.shape[1], dtype=bool)
        for _ in range(Z.shape[1] + 1):
            coef = np.zeros(Z.shape[1])
            if keep.any():
                lr = LogisticRegression(max_iter=1000).fit(S[:, keep], y)
                coef[keep], intercept = lr.coef_[0], float(lr.intercept_[0])
            else:
                rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
                intercept = float(np.log(rate / (1 - rate)))
            wrong = keep & (signs != 0) & (np.sign(coef) == -signs)
            if not wrong.any():
                break
            keep &= ~wrong
        return cls(mean, scale, coef, intercept)

    def terms(self, Z: np.ndarray) -> tuple[np.ndarray, float]:
        """Each input's term of the log-odds, centred on the training mean, and the intercept."""
        return (Z - self.mean) / self.scale * self.coef, self.intercept

    def logit(self, Z: np.ndarray) -> np.ndarray:
        terms, bias = self.terms(Z)
        return terms.sum(axis=1) + bias


def _as_datetime64(times) -> np.ndarray:
    """As-of times as naive UTC datetime64[ns] (from timestamps with or without a zone)."""
    series = pd.Series(pd.to_datetime(np.asarray(times) if not isinstance(times, pd.Series) else times, utc=True))
    return series.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")


def _auc_or_none(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC, None with one class."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else None


def cure_estimator(params: dict, categorical: tuple[str, ...] = ()) -> CalibratedLGBM:
    """The cure model's estimator with the numbers of `params.yaml: cure` and the top-level seed (boosting,
    folds, calibration by band, monotone priors, early stopping): training and the real-data benchmarks build
    it here."""
    cure = params["cure"]
    bands = cure.get("calibration_bands", (30, 90, 180))
    return CalibratedLGBM(cure["lgbm"], int(cure["n_folds"]), cure["calibration"], cure.get("monotone"),
                          categorical, int(cure["early_stopping_rounds"]), int(params["seed"]),
                          calibration_bands=tuple(bands) if bands else None,
                          min_band_examples=int(cure.get("calibration_min_band_examples", 500)),
                          time_fold_min_dates=int(cure.get("time_fold_min_dates", 10)),
                          purge_days=float(cure.get("horizon_days", 0)),
                          stack_baseline=bool(cure.get("stack_baseline", True)),
                          min_child_share=cure.get("min_child_share", 0.05))
