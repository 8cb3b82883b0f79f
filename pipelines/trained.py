"""What the train stage hands on: `TrainResult` (the bundle, its holdout metrics and predictions) and the
files it writes under its output folder (`OUTPUT_FILES`), which the register stage reads back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from models.bundle import ScoringBundle
from models.contract import Portfolio


@dataclass
class TrainResult:
    bundle: ScoringBundle
    metrics: dict[str, float]
    holdout: pd.DataFrame          # as_of, account_id, label, p
    gains: pd.DataFrame
    truth_gap: pd.DataFrame | None  # account_id, p, p_true at the end of history (simulated data only)
    history_end: pd.Timestamp
    bands: dict | None = None                      # holdout scores by band beside the baseline (band_report)
    portfolio: Portfolio | None = None             # the training data (for the report's evaluations)
    decisions_holdout: pd.DataFrame | None = None  # logged decisions held out from the response model
    data: Path | None = None
    blocked: pd.Series | None = None               # what each carried-out decision's rules blocked (feedback)
    support: pd.Series | None = None               # the actions each carried-out decision's policy gave a chance


OUTPUT_FILES = {"bundle": "bundle.joblib", "metrics": "metrics.json", "gains": "gains.csv",
                "holdout": "holdout.parquet", "calibration": "calibration.png", "roc": "roc.png",
                "gains_plot": "gains.png", "importance": "importance.png", "report": "report.html",
                "bands": "bands.json", "band_calibration": "band_calibration.png"}
