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
        tables, offsets, self.bias = [], [0], 0.0
        for tree in booster.dump_model()["tree_info"]:
            table = np.zeros((tree["num_leaves"], n_features))
            root = tree["tree_structure"]
            _expected(root)
            self._walk(root, np.zeros(n_features), table)
            self.bias += root["expected"]
            tables.append(table)
            offsets.append(offsets[-1] + len(table))
        self.table = np.vstack(tables)
        self.offsets = np.asarray(offsets[:-1], dtype=np.int64)
        self.booster = booster

    def _walk(self, node: dict, path: np.ndarray, table: np.ndarray) -> None:
        """Fill the rows of `table` of the leaves below `node`, reached with contributions `path`."""
        if "leaf_value" in node:
            table[node.get("leaf_index", 0)] = path
            return
        for side in ("left_child", "right_child"):
            step = path.copy()
            step[node["split_feature"]] += node[side]["expected"] - node["expected"]
            self._walk(node[side], step, table)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """(rows, features + 1) contributions, the bias last."""
        leaves = predict(self.booster, X, pred_leaf=True).astype(np.int64).reshape(len(X), -1)
        contrib = self.table[leaves + self.offsets].sum(axis=1)
        return np.hstack([contrib, np.full((len(X), 1), self.bias)])


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
    """LightGBM binary classifier with out-of-fold calibration (isotonic or sigmoid)."""

    def __init__(self, lgbm_params: dict | None = None, n_folds: int = 5, calibration: str = "isotonic",
                 monotone: dict | None = None, categorical: tuple[str, ...] = (),
                 early_stopping_rounds: int = 50, random_state: int = 0):
        self.lgbm_params = lgbm_params
        self.n_folds = n_folds
        self.calibration = calibration
        self.monotone = monotone
        self.categorical = categorical
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state

    def _train_params(self, columns: list[str]) -> tuple[dict, int]:
        params, rounds = booster_params(self.lgbm_params, self.random_state, default_rounds=400)
        if self.monotone:
            params["monotone_constraints"] = [int(self.monotone.get(c, 0)) for c in columns]
        return params, rounds

    def _dataset(self, X: pd.DataFrame, y: np.ndarray) -> lgb.Dataset:
        cats = [c for c in self.categorical if c in X.columns]
        return lgb.Dataset(X, label=y, categorical_feature=cats or "auto", free_raw_data=False)

    def _fit_booster(self, X: pd.DataFrame, y: np.ndarray, rounds: int, params: dict,
                     stop: bool) -> lgb.Booster:
        """One booster; with `stop`, early stopping on a stratified 10% slice of X."""
        if not stop:
            return lgb.train(params, self._dataset(X, y), num_boost_round=rounds)
        X_fit, X_val, y_fit, y_val = train_test_split(
            X, y, test_size=0.1, stratify=y, random_state=self.random_state)
        train = self._dataset(X_fit, y_fit)
        valid = lgb.Dataset(X_val, label=y_val, reference=train)
        callbacks = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
        return lgb.train(params, train, num_boost_round=rounds, valid_sets=[valid], callbacks=callbacks)

    def _folds(self, X: pd.DataFrame, y: np.ndarray, groups) -> list[tuple[np.ndarray, np.ndarray]]:
        if groups is None:
            cv = StratifiedKFold(self.n_folds, shuffle=True, random_state=self.random_state)
            return list(cv.split(X, y))
        cv = StratifiedGroupKFold(self.n_folds, shuffle=True, random_state=self.random_state)
        return list(cv.split(X, y, groups))

    def fit(self, X: pd.DataFrame, y, groups=None) -> CalibratedLGBM:
        """Out-of-fold raw scores -> calibrator; then the final booster on everything."""
        y = np.asarray(y, dtype=np.int64)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.classes_ = np.array([0, 1])
        params, rounds = self._train_params(list(X.columns))
        oof = np.zeros(len(y))
        best = []
        for train_idx, test_idx in self._folds(X, y, groups):
            booster = self._fit_booster(X.iloc[train_idx], y[train_idx], rounds, params, stop=True)
            best.append(booster.best_iteration or rounds)
            oof[test_idx] = booster.predict(X.iloc[test_idx], raw_score=True,
                                            num_iteration=booster.best_iteration or None)
        self.n_iterations_ = max(int(np.median(best)), 1)
        self.oof_raw_ = oof
        self._fit_calibrator(oof, y)
        self.booster_ = self._fit_booster(X, y, self.n_iterations_, params, stop=False)
        return self

    def _fit_calibrator(self, raw: np.ndarray, y: np.ndarray) -> None:
        if self.calibration == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
            self.calib_x_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
            self.calib_y_ = np.asarray(iso.y_thresholds_, dtype=np.float64)
        elif self.calibration == "sigmoid":
            lr = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), y)
            self.calib_x_ = np.array([float(lr.coef_[0, 0]), float(lr.intercept_[0])])
            self.calib_y_ = np.empty(0)
        else:
            raise ValueError(f"calibration must be 'isotonic' or 'sigmoid', not {self.calibration!r}")

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Raw booster scores -> calibrated probabilities."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.calibration == "isotonic":
            return np.interp(raw, self.calib_x_, self.calib_y_)
        slope, intercept = self.calib_x_
        return 1.0 / (1.0 + np.exp(-(slope * raw + intercept)))

    def predict_raw(self, X) -> np.ndarray:
        """The booster's raw margin (log-odds before calibration)."""
        return predict(self.booster_, X, raw_score=True)

    def predict_proba(self, X) -> np.ndarray:
        p = self.calibrate(self.predict_raw(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def contributions(self, X) -> np.ndarray:
        """Per-feature path contributions to the raw score (`PathContributions`); last column is the bias."""
        return path_contributions(self.booster_)(np.asarray(X, dtype=np.float64))


def cure_estimator(params: dict, categorical: tuple[str, ...] = ()) -> CalibratedLGBM:
    """The cure model's estimator with the numbers of `params.yaml: cure` and the top-level seed (boosting,
    folds, calibration, monotone priors, early stopping): training and the real-data benchmarks build it here."""
    cure = params["cure"]
    return CalibratedLGBM(cure["lgbm"], int(cure["n_folds"]), cure["calibration"], cure.get("monotone"),
                          categorical, int(cure["early_stopping_rounds"]), int(params["seed"]))
