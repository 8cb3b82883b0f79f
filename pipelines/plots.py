"""Evaluation plots saved as PNG files: calibration, ROC, gains and feature importance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from models.files import replace_atomically


def _axes(size: tuple[float, float]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def _save(fig, ax, path: Path, legend: bool = True, **labels) -> Path:
    """Label, lay out, write and close one figure."""
    import matplotlib.pyplot as plt

    ax.set(**labels)
    if legend:
        ax.legend()
    fig.tight_layout()
    replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format=Path(path).suffix[1:]))
    plt.close(fig)
    return path


def calibration_plot(y: np.ndarray, p: np.ndarray, path: Path, bins: int = 10) -> Path:
    parts = [idx for idx in np.array_split(np.argsort(p, kind="stable"), bins) if len(idx)]
    fig, ax = _axes((5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.plot([p[i].mean() for i in parts], [y[i].mean() for i in parts], "o-", label="holdout")
    return _save(fig, ax, path, xlabel="predicted chance of cure", ylabel="observed cure rate",
                 title="Calibration (equal-mass bins)")


def roc_plot(y: np.ndarray, p: np.ndarray, path: Path) -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = _axes((5, 5))
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, p):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    return _save(fig, ax, path, xlabel="false positive rate", ylabel="true positive rate",
                 title="ROC on the time holdout")


def gains_plot(gains: pd.DataFrame, path: Path) -> Path:
    fig, ax = _axes((6, 4))
    ax.bar(gains["decile"], gains["rate"], label="observed cure rate")
    ax.plot(gains["decile"], gains["mean_p"], "o-", color="black", label="mean prediction")
    return _save(fig, ax, path, xlabel="decile (highest predicted first)", ylabel="cure rate", title="Gains by decile")


def importance_plot(names: list[str], gain: np.ndarray, path: Path, top: int = 20) -> Path:
    order = np.argsort(gain)[::-1][:top][::-1]
    fig, ax = _axes((6, 6))
    ax.barh([names[i] for i in order], gain[order])
    return _save(fig, ax, path, legend=False, xlabel="total gain", title="Feature importance (cure model)")


def band_calibration_plot(holdout: pd.DataFrame, bands, path: Path, bins: int = 10) -> Path:
    """Reliability by days-past-due band: predicted against observed cure rate in equal-mass bins of each
    band (a band's points off the diagonal are where the model is over- or under-confident)."""
    fig, ax = _axes((5.5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    dpd = holdout["days_past_due"].to_numpy(dtype=float)
    y, p = holdout["label"].to_numpy(dtype=float), holdout["p"].to_numpy(dtype=float)
    for label, low, high in bands:
        on = np.flatnonzero((dpd > low) & (dpd <= high))
        if len(on) < bins:
            continue
        parts = [on[idx] for idx in np.array_split(np.argsort(p[on], kind="stable"), bins) if len(idx)]
        ax.plot([p[i].mean() for i in parts], [y[i].mean() for i in parts], "o-",
                label=f"{label} days past due (n={len(on):,})")
    return _save(fig, ax, path, xlabel="predicted chance of cure", ylabel="observed cure rate",
                 title="Calibration by days-past-due band")
