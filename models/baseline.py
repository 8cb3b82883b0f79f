"""The three-feature baseline a collections analyst would build first: a logistic regression on days past
due, arrears and days since the last payment (each as log(1 + x); never paid counts as ten years ago).
The cure model is judged by its lift over this baseline trained on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ("days_past_due", "arrears", "days_since_last_payment")
NEVER_PAID_DAYS = 3650.0


def baseline_inputs(frame: pd.DataFrame) -> np.ndarray:
    """(n, 3) log(1 + x) of the three features; no payment on record counts as NEVER_PAID_DAYS."""
    X = frame[list(FEATURES)].to_numpy(dtype=np.float64).copy()
    X[:, 2] = np.where(np.isnan(X[:, 2]), NEVER_PAID_DAYS, X[:, 2])
    return np.log1p(np.clip(X, 0, None))


class Baseline:
    """Standardised logistic regression on `baseline_inputs`; a constant when training holds one class."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> Baseline:
        y = np.asarray(y, dtype=int)
        self.rate_ = float(y.mean()) if len(y) else 0.0
        self.model_ = None
        if len(np.unique(y)) == 2:
            self.model_ = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=self.seed))
            self.model_.fit(baseline_inputs(frame), y)
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """The chance of cure of each row."""
        if self.model_ is None:
            return np.full(len(frame), self.rate_)
        return self.model_.predict_proba(baseline_inputs(frame))[:, 1]
