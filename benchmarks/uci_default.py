"""Benchmark: the project's cure estimator on real credit-card defaults (UCI, Taiwan 2005, 30,000 customers).

Stratified k-fold cross-validation (`params.yaml: uci`), every model on the same folds in one run:
- `cureflow`: the cure model's estimator (`CalibratedLGBM` with `params.yaml: cure`: LightGBM, early stopping,
  isotonic calibration on out-of-fold scores, the monotone prior on instalments behind) on the file's 23
  columns plus the behaviour the cure model reads (`pipelines.uci.default_features`). It predicts the chance
  of paying next month, the cure model's side of the event; the chance of default is one minus it.
- `lightgbm default`: LGBMClassifier with its defaults on the 23 columns (the published reference, 0.7778
  on a 75/25 split).
- `logistic regression`: one-hot categories, standardised numbers, L2 logistic regression.
- two ablations: the cure estimator on the 23 columns only (what the features add), and the default
  LightGBM on the cureflow features (what the estimator adds).
Each line: ROC AUC, Brier and expected calibration error (10 equal-mass bins) of the default probability,
mean ± standard deviation over the folds, [min, max].

`--cure-task` adds the adapter's cure task (`pipelines.uci.cure_task`: behind in a month, on time the next)
learned from the file's own columns with the time split `cureflow train` makes on the adapted tables (April
to June train, July and August held out): what the contract tables cannot carry is worth the difference.

    .venv/bin/python benchmarks/uci_default.py --data ../shared/data/uci_credit_card/UCI_Credit_Card.csv
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from models.config import load_params
from models.estimators import cure_estimator
from models.metrics import classification_report
from pipelines.realdata import summary
from pipelines.uci import (
    BILLS,
    CATEGORICAL,
    DEFAULT_DATA,
    MONTHS,
    PAID,
    RAW_FEATURES,
    STATUS,
    cure_task,
    default_features,
    read_uci,
)

TARGET_AUC = 0.785  # the target; the published default LightGBM reaches 0.7778
METRICS = ("roc_auc", "brier", "ece")
Fit = Callable[[pd.DataFrame, np.ndarray, pd.DataFrame], np.ndarray]  # (X_train, y_default, X_test) -> p_default


def cure_task_features(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The task's rows (`cure_task`) with every column the file holds up to their month, newest first
    (status, bill and payment of that month and of the months before it, NaN before April), and the
    customer's limit, sex, education, marriage and age: what the adapter cannot put in the contract."""
    task = cure_task(frame)
    rows = frame.set_index("ID").loc[task["ID"]]
    out = {column: rows[column].to_numpy(dtype=np.float64) for column in ("LIMIT_BAL", *CATEGORICAL, "AGE")}
    for lag in range(len(MONTHS) - 1):
        for name, columns in (("status", STATUS), ("bill", BILLS), ("paid", PAID)):
            month = task["month"].to_numpy() - lag  # 0 = April, the file's column 6
            values = rows[list(columns[::-1])].to_numpy(dtype=np.float64)
            out[f"{name}_{lag}"] = np.where(month >= 0, values[np.arange(len(task)), np.maximum(month, 0)], np.nan)
    return task, pd.DataFrame(out)


def cureflow(params: dict) -> Fit:
    """The cure estimator on the chance of paying (1 - default); returns the chance of default."""
    def fit(X: pd.DataFrame, y: np.ndarray, X_test: pd.DataFrame) -> np.ndarray:
        cats = tuple(c for c in CATEGORICAL if c in X.columns)
        model = cure_estimator(params, cats).fit(X, 1 - y)
        return 1.0 - model.predict_proba(X_test)[:, 1]
    return fit


def lightgbm_default(seed: int) -> Fit:
    """LightGBM's defaults (100 trees, 31 leaves, learning rate 0.1), seeded, two threads."""
    def fit(X: pd.DataFrame, y: np.ndarray, X_test: pd.DataFrame) -> np.ndarray:
        model = lgb.LGBMClassifier(random_state=seed, n_jobs=2, verbose=-1).fit(X, y)
        return model.predict_proba(X_test)[:, 1]
    return fit


def logistic(X: pd.DataFrame, y: np.ndarray, X_test: pd.DataFrame) -> np.ndarray:
    """Plain logistic regression: categories one-hot, numbers standardised, default L2 penalty."""
    cats = [c for c in CATEGORICAL if c in X.columns]
    prep = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), cats)], remainder=StandardScaler())
    model = make_pipeline(prep, LogisticRegression(max_iter=2000)).fit(X, y)
    return model.predict_proba(X_test)[:, 1]


def cross_validate(models: dict[str, tuple[Fit, pd.DataFrame]], y: np.ndarray, folds: int,
                   seed: int) -> pd.DataFrame:
    """Every model on the same stratified folds: one row per (model, fold) with its metrics and seconds."""
    rows = []
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(cv.split(np.zeros(len(y)), y)):
        for name, (fit, X) in models.items():
            started = time.perf_counter()
            p = fit(X.iloc[train], y[train], X.iloc[test])
            report = classification_report(y[test], p)
            rows.append({"model": name, "fold": fold, **{m: report[m] for m in METRICS},
                         "seconds": time.perf_counter() - started})
    return pd.DataFrame(rows)


def print_results(results: pd.DataFrame, reference: str = "lightgbm default") -> None:
    """One line per model, then the paired differences of cureflow against the default LightGBM."""
    for name, rows in results.groupby("model", sort=False):
        cells = []
        for metric in METRICS:
            s = summary(rows[metric])
            cells.append(f"{metric} {s} [{s.low:.4f}, {s.high:.4f}]")
        print(f"{name:<46} " + "  ".join(cells) + f"  ({rows['seconds'].mean():.1f}s a fold)")
    ours = results[results["model"] == "cureflow"].set_index("fold")
    ref = results[results["model"] == reference].set_index("fold")
    auc, brier = summary(ours["roc_auc"]), summary(ours["brier"])
    d_auc, d_brier = summary(ours["roc_auc"] - ref["roc_auc"]), summary(ours["brier"] - ref["brier"])
    print(f"cureflow - {reference}, paired over folds: ROC AUC {d_auc.mean:+.4f} ± {d_auc.sd:.4f} "
          f"(95% t interval [{d_auc.ci[0]:+.4f}, {d_auc.ci[1]:+.4f}]), Brier {d_brier.mean:+.4f} ± "
          f"{d_brier.sd:.4f} ([{d_brier.ci[0]:+.4f}, {d_brier.ci[1]:+.4f}])")
    print(f"target ROC AUC >= {TARGET_AUC}: {'met' if auc.mean >= TARGET_AUC else 'NOT met'} ({auc.mean:.4f}); "
          f"Brier no worse than {reference}: {'met' if brier.mean <= ref['brier'].mean() else 'NOT met'} "
          f"({brier.mean:.4f} vs {ref['brier'].mean():.4f})")


def cure_task_lines(frame: pd.DataFrame, params: dict, holdout_from: int = 3) -> None:
    """What the adapter loses: the cure task on the file's own columns up to each month, trained on the
    months before `holdout_from` (July) and scored on the rest, the time split `cureflow train` makes."""
    task, X = cure_task_features(frame)
    train, test = task["month"].to_numpy() < holdout_from, task["month"].to_numpy() >= holdout_from
    y = task["cured"].to_numpy()
    statuses = X[[c for c in X.columns if c.startswith("status_")]]
    for name, fit, data in (("all file columns, cureflow estimator", cureflow(params), X),
                            ("all file columns, lightgbm default", lightgbm_default(int(params["seed"])), X),
                            ("statuses only, lightgbm default", lightgbm_default(int(params["seed"])), statuses)):
        p = 1.0 - fit(data[train], 1 - y[train], data[test])  # both fit the complement; back to the chance of cure
        report = classification_report(y[test], p)
        print(f"cure task, {name}: holdout ROC AUC {report['roc_auc']:.4f}, Brier "
              f"{report['brier']:.4f}, ECE {report['ece']:.4f} ({int(train.sum()):,} train, {int(test.sum()):,} "
              f"holdout pairs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the UCI_Credit_Card.csv file")
    parser.add_argument("--folds", type=int, default=None, help="default params.yaml uci.cv_folds")
    parser.add_argument("--cure-task", action="store_true", help="also the cure task on the file's own columns "
                        "(to compare with `cureflow train` on the adapted tables)")
    args = parser.parse_args()
    params = load_params()
    started = time.perf_counter()
    uci = read_uci(args.data)
    for note in uci.notes:
        print(f"read: {note}")
    frame, seed = uci.frame, int(params["seed"])
    y = frame["default"].to_numpy()
    raw, ours = frame[list(RAW_FEATURES)].astype(np.float64), default_features(frame)
    folds = int(args.folds or params["uci"]["cv_folds"])
    print(f"{len(frame):,} customers, {y.mean():.2%} default; {folds}-fold stratified cross-validation "
          f"(seed {params['uci']['seed']})")
    models = {"cureflow": (cureflow(params), ours), "lightgbm default": (lightgbm_default(seed), raw),
              "logistic regression": (logistic, raw),
              "ablation: cureflow estimator, raw columns": (cureflow(params), raw),
              "ablation: lightgbm default, cureflow features": (lightgbm_default(seed), ours)}
    results = cross_validate(models, y, folds, int(params["uci"]["seed"]))
    print_results(results)
    if args.cure_task:
        cure_task_lines(frame, params)
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
