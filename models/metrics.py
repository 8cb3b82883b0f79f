"""Scores of a probability model: discrimination, calibration and gains (used by training and benchmarks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |observed rate - mean prediction| over equal-mass bins of the prediction."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if len(y) == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    gaps = [abs(y[idx].mean() - p[idx].mean()) * len(idx) for idx in np.array_split(order, bins) if len(idx)]
    return float(np.sum(gaps) / len(y))


def ks_statistic(y: np.ndarray, p: np.ndarray) -> float:
    """Kolmogorov-Smirnov: the largest gap between the score distributions of positives and negatives."""
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(tpr - fpr))


def gains_table(y: np.ndarray, p: np.ndarray, groups: int = 10) -> pd.DataFrame:
    """Deciles by predicted probability, highest first: count, mean prediction, observed rate, lift and
    the cumulative share of positives."""
    frame = pd.DataFrame({"y": np.asarray(y, dtype=float), "p": np.asarray(p, dtype=float)})
    frame = frame.sort_values("p", ascending=False, kind="stable").reset_index(drop=True)
    frame["decile"] = np.arange(len(frame)) * groups // max(len(frame), 1) + 1
    table = frame.groupby("decile").agg(count=("y", "size"), mean_p=("p", "mean"), rate=("y", "mean"),
                                         positives=("y", "sum"))
    table["cum_share_of_positives"] = table["positives"].cumsum() / max(table["positives"].sum(), 1)
    table["lift"] = table["rate"] / max(frame["y"].mean(), 1e-12)
    return table.reset_index()


def classification_report(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC, Brier, ECE, KS and base rate of one set of predictions."""
    y, p = np.asarray(y), np.asarray(p)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "ks": ks_statistic(y, p),
        "base_rate": float(np.mean(y)),
        "n": float(len(y)),
    }
