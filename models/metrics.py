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


def ece_by_chance(p: np.ndarray, draws: int = 500, seed: int = 0, bins: int = 10) -> np.ndarray:
    """The ECE a perfectly calibrated model with predictions `p` shows on outcomes drawn from `p` itself, in
    `draws` draws: what `expected_calibration_error` reads on so few cases by chance alone (it is biased
    upwards: every bin's |observed - predicted| is at least its sampling noise)."""
    p = np.asarray(p, dtype=float)
    rng = np.random.default_rng(seed)
    return np.array([expected_calibration_error((rng.random(len(p)) < p).astype(float), p, bins)
                     for _ in range(draws)])


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


# --------------------------------------------------------------------------------- by band, beside a baseline

INF = float("inf")
# (label, low, high]: days past due as collectors bucket them, and arrears in instalments
DPD_BANDS = (("1-30", -INF, 30), ("31-90", 30, 90), ("91-180", 90, 180), ("180+", 180, INF))
ARREARS_BANDS = (("up to 1 instalment", -INF, 1), ("1-2 instalments", 1, 2), ("2-4 instalments", 2, 4),
                 ("over 4 instalments", 4, INF))
FRESH_DAYS_PAST_DUE = 90  # fresh arrears: the bands a collector works (1-30 and 31-90)
_KEYS = {"180+": "180_plus", "up to 1 instalment": "0-1", "1-2 instalments": "1-2", "2-4 instalments": "2-4",
         "over 4 instalments": "4_plus"}


def band_key(label: str) -> str:
    """A band's label as it can appear in an MLflow metric name ("180+" -> "180_plus")."""
    return _KEYS.get(label, label)


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC, None when the rows hold one class only."""
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def band_rows(y: np.ndarray, p: np.ndarray, p_base: np.ndarray, values: np.ndarray,
              bands: tuple[tuple[str, float, float], ...]) -> list[dict]:
    """Per band of `values` (low < v <= high): cases, cure rate, mean prediction, the model's and the
    baseline's ROC AUC and ECE, and the AUC lift over the baseline (None where a band has one class)."""
    rows = []
    for label, low, high in bands:
        on = (values > low) & (values <= high)
        yb, pb, qb = y[on], p[on], p_base[on]
        auc, base = (_auc(yb, pb), _auc(yb, qb)) if on.any() else (None, None)
        rows.append({"band": label, "n": int(on.sum()), "base_rate": float(yb.mean()) if on.any() else None,
                     "mean_p": float(pb.mean()) if on.any() else None, "roc_auc": auc, "baseline_roc_auc": base,
                     "auc_lift": None if auc is None or base is None else auc - base,
                     "ece": expected_calibration_error(yb, pb) if on.any() else None,
                     "baseline_ece": expected_calibration_error(yb, qb) if on.any() else None})
    return rows


def band_report(frame: pd.DataFrame) -> dict:
    """Holdout scores by days-past-due band and by arrears size, and on fresh arrears, each beside the
    baseline; `frame` holds label, p, p_baseline, days_past_due and arrears_instalments."""
    y, p, q = (frame[c].to_numpy(dtype=float) for c in ("label", "p", "p_baseline"))
    dpd, size = frame["days_past_due"].to_numpy(dtype=float), frame["arrears_instalments"].to_numpy(dtype=float)
    fresh = band_rows(y, p, q, dpd, (("fresh", -INF, FRESH_DAYS_PAST_DUE),))[0]
    return {"fresh": fresh, "days_past_due": band_rows(y, p, q, dpd, DPD_BANDS),
            "arrears": band_rows(y, p, q, size, ARREARS_BANDS)}


def band_metrics(report: dict) -> dict[str, float]:
    """`band_report` as flat metrics for MLflow and the quality gate: fresh_roc_auc, fresh_auc_lift,
    dpd_31-90_ece, ... (a band without a figure leaves its key out)."""
    out = {}
    groups = [("fresh", [report["fresh"]])] + [("dpd", report["days_past_due"]), ("arrears", report["arrears"])]
    for prefix, rows in groups:
        for row in rows:
            name = prefix if prefix == "fresh" else f"{prefix}_{band_key(row['band'])}"
            out.update({f"{name}_{k}": float(v) for k, v in row.items() if k != "band" and v is not None})
    return out
