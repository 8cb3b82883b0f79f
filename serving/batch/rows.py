"""The batch's rows between an engine and the capacity step: what an engine hands back (`Scored`), and the
text forms that make rows read back from parquet parts or Spark equal rows just scored."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from models.decision_log import json_text  # the decision log's JSON: NaN as null, numpy values as Python


@dataclass
class Scored:
    """What an engine hands back: rows in priority order (private columns and `_features` JSON included),
    the input's fingerprint, how many accounts were read and how many chunks came from an earlier run."""

    rows: pd.DataFrame
    fingerprint: str
    accounts: int
    chunks: int = 0
    resumed: int = 0
    timings: dict = field(default_factory=dict)


def with_feature_text(rows: pd.DataFrame) -> pd.DataFrame:
    """The `_features` dicts as JSON text (for parquet parts and Spark), NaN as null."""
    rows = rows.copy()
    features = rows["_features"] if "_features" in rows.columns else []
    rows["_features"] = [json_text(f) for f in features]
    return rows


def plain_text(rows: pd.DataFrame) -> pd.DataFrame:
    """Every non-numeric column as object holding str or None (as `ScoringBundle.score` returns them), so rows
    read back from parquet or Spark compare equal to rows just scored."""
    rows = rows.copy()
    for col in rows.columns:
        if not pd.api.types.is_numeric_dtype(rows[col].dtype) or rows[col].dtype == bool:
            values = rows[col].astype(object)
            rows[col] = values.where(values.notna(), None)
    return rows
