"""`cureflow monitor`: has the population moved since the model was trained?

Training stores a reference in the bundle (`bundle.metadata["reference"]`, so every registered version
carries its own): bins of every feature over the training examples (accounts overdue at the training
as-of dates), bins of the cure chance over the time holdout (the model's out-of-sample scores), the action
mix (channel, offer) of the batch the model makes at the end of its history, and, in those same bins, the
profile of the accounts overdue on each of the last `monitor.reference_days` days of the history (keyed by
the local day of the month).

Two things make a quiet portfolio look as if it drifted, both measured on the demo portfolio (20,000
accounts, the month-start batch of 2026-11-01 against the model trained up to that day):
- Day counts cluster. Debits run on five days of the month, so days past due and days since the last
  payment or contact sit in clusters a few days after each debit day, and a 30- or 31-day month moves
  every cluster by a day. Decile edges fall between clusters: days past due scored PSI 0.88 against the
  pooled training examples and 2.81 against the same day a month earlier. Those features are binned at
  fixed edges instead (`monitor.fixed_bins`: the collections buckets for days past due, 1 week to 6 months
  for the others).
- Who is overdue depends on the day of the month. With the fixed bins the largest PSI of any feature was
  0.11 (instalments missed in 12 months) against the pooled examples, 0.05 against the same day of the
  previous month; on 2026-10-03, 08, 15, 22 and 28 the pooled maximum was 0.08 to 0.13. So a batch is
  compared with the training data of its own local day of the month, the pooled examples when no stored
  day matches.

The measure is the population stability index

    PSI = sum over bins of (batch share - reference share) x ln(batch share / reference share),

shares floored at `monitor.min_share` so an empty bin does not give an infinite index. Numeric values use
the training examples' deciles (`monitor.bins`) or the fixed edges, with missing values as a bin of their
own; categories (employment, payment method, channel, offer) are their own bins, unseen ones in `other`.
Convention: under `psi_warn` (0.1) stable, up to `psi_alert` (0.25) worth a look, past it drift. PSI grows
with sampling noise on small batches: with no drift at all its expected value is about
(bins - 1) x (1/n_batch + 1/n_ref) (the chi-square approximation), reported as `noise`; a batch under
`min_batch_rows` is reported but never flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.features import CATEGORICAL
from models.files import write_json_atomic
from models.queue import day_queue

ACTION_COLUMNS = ("channel", "offer")
OTHER = "other"


def numeric_spec(values: np.ndarray, bins: int) -> dict:
    """Reference bins of a numeric column: right-closed bins between the distinct inner quantiles, plus a
    bin for missing values; the spec holds the edges and the reference's share of each bin."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])) if len(finite) else np.array([])
    spec = {"kind": "numeric", "edges": edges.tolist()}
    spec["shares"] = bin_shares(values, spec).tolist()
    spec["n"] = int(len(values))
    return spec


def fixed_spec(values: np.ndarray, edges: list[float]) -> dict:
    """Reference bins at fixed right-closed edges (for day counts, whose deciles sit between clusters)."""
    spec = {"kind": "numeric", "edges": sorted(float(e) for e in edges)}
    spec["shares"] = bin_shares(values, spec).tolist()
    spec["n"] = int(len(values))
    return spec


def categorical_spec(values: np.ndarray) -> dict:
    """Reference bins of a categorical column: one per category seen, plus `other` for unseen ones."""
    labels = pd.Series(values, dtype=object).fillna("missing").astype(str)
    spec = {"kind": "categorical", "categories": sorted(labels.unique().tolist())}
    spec["shares"] = bin_shares(values, spec).tolist()
    spec["n"] = int(len(values))
    return spec


def bin_shares(values: np.ndarray, spec: dict) -> np.ndarray:
    """The share of `values` in each bin of a reference spec (numeric: len(edges) + 1 bins and a missing
    bin; categorical: the reference's categories and `other`)."""
    if spec["kind"] == "numeric":
        values = np.asarray(values, dtype=np.float64)
        edges = np.asarray(spec["edges"], dtype=np.float64)
        tolerance = 1e-6 * np.maximum(np.abs(edges), 1.0)   # a value rounded to 6 decimals keeps its bin
        codes = np.where(np.isfinite(values), np.searchsorted(edges + tolerance, values, side="left"), len(edges) + 1)
        counts = np.bincount(codes, minlength=len(edges) + 2)
    else:
        labels = pd.Series(values, dtype=object).fillna("missing").astype(str)
        cats = list(spec["categories"])
        codes = pd.Categorical(labels.where(labels.isin(cats), OTHER), categories=[*cats, OTHER]).codes
        counts = np.bincount(codes, minlength=len(cats) + 1)
    return counts / max(len(values), 1)


def psi(reference: np.ndarray, batch: np.ndarray, min_share: float = 1e-4) -> float:
    """Population stability index of two vectors of bin shares (each summing to 1)."""
    e = np.maximum(np.asarray(reference, dtype=np.float64), min_share)
    a = np.maximum(np.asarray(batch, dtype=np.float64), min_share)
    return float(np.sum((a - e) * np.log(a / e)))


def reference_profile(features: pd.DataFrame, scores: np.ndarray, actions: pd.DataFrame, params: dict) -> dict:
    """The training reference: every feature column, the cure chance and the action mix (JSON-ready)."""
    bins, fixed = int(params["monitor"]["bins"]), params["monitor"].get("fixed_bins") or {}
    out = {"features": {}, "score": numeric_spec(scores, bins), "actions": {}, "days": {}}
    for name in features.columns:
        column = features[name].to_numpy()
        if name in CATEGORICAL:
            out["features"][name] = categorical_spec(column)
        else:
            out["features"][name] = fixed_spec(column, fixed[name]) if name in fixed else numeric_spec(column, bins)
    for name in ACTION_COLUMNS:
        out["actions"][name] = categorical_spec(actions[name].to_numpy() if name in actions else np.array([]))
    return out


def day_profile(reference: dict, features: pd.DataFrame, scores: np.ndarray) -> dict:
    """The shares of one day's overdue accounts in the reference's bins (features and cure chance)."""
    def part(spec: dict, values) -> dict:
        return {"shares": bin_shares(values, spec).tolist(), "n": int(len(values))}

    return {"score": part(reference["score"], scores),
            "features": {name: part(spec, features[name].to_numpy()) for name, spec in reference["features"].items()}}


def for_day(reference: dict, as_of: pd.Timestamp, timezone: str) -> tuple[dict, str]:
    """The reference to compare a batch with: the training data of the batch's local day of the month
    when one of the stored days matches, else the pooled training examples; and what it is, in words."""
    local = pd.Timestamp(as_of).tz_convert(timezone)
    day = reference.get("days", {}).get(str(local.day))
    if day is None:
        return reference, "the training examples (all as-of dates pooled)"
    matched = {**reference, "score": {**reference["score"], **day["score"]},
               "features": {name: {**spec, **day["features"][name]} for name, spec in reference["features"].items()}}
    return matched, f"the training data on the same day of the month ({day['date']})"


@dataclass(frozen=True)
class Thresholds:
    """The `monitor` section of params.yaml."""

    psi_warn: float
    psi_alert: float
    min_share: float
    min_batch_rows: int

    @classmethod
    def from_params(cls, params: dict) -> Thresholds:
        m = params["monitor"]
        return cls(float(m["psi_warn"]), float(m["psi_alert"]), float(m["min_share"]), int(m["min_batch_rows"]))


def _status(value: float, n: int, limits: Thresholds) -> str:
    if n < limits.min_batch_rows:
        return "too few rows"
    if value >= limits.psi_alert:
        return "drift"
    return "watch" if value >= limits.psi_warn else "ok"


def _row(kind: str, name: str, spec: dict, values: np.ndarray, limits: Thresholds) -> dict:
    """One line of the comparison: PSI of `values` against the reference spec, its noise level and status."""
    value = psi(spec["shares"], bin_shares(values, spec), limits.min_share)
    n, n_ref = len(values), int(spec["n"])
    noise = (len(spec["shares"]) - 1) * (1.0 / max(n, 1) + 1.0 / max(n_ref, 1))
    return {"kind": kind, "name": name, "psi": value, "noise": noise, "n_batch": n, "n_reference": n_ref,
            "status": _status(value, n, limits)}


def compare(reference: dict, features: pd.DataFrame, scores: np.ndarray, actions: pd.DataFrame,
            limits: Thresholds) -> pd.DataFrame:
    """PSI of the batch's features, cure chances and action mix against the reference, highest first
    within each kind (score, actions, features)."""
    missing = [c for c in reference["features"] if c not in features.columns]
    if missing:
        raise ValueError(f"the batch's features lack column(s) {missing} that the model was trained on")
    rows = [_row("score", "cure_probability", reference["score"], np.asarray(scores, dtype=float), limits)]
    for name, spec in reference["actions"].items():
        if name not in actions.columns:
            raise ValueError(f"the batch lacks the action column {name!r}")
        rows.append(_row("action mix", name, spec, actions[name].to_numpy(), limits))
    rows += [_row("feature", name, spec, features[name].to_numpy(), limits)
             for name, spec in reference["features"].items()]
    table = pd.DataFrame(rows)
    order = {"score": 0, "action mix": 1, "feature": 2}
    table = table.sort_values(["kind", "psi"], key=lambda c: c.map(order) if c.name == "kind" else -c)
    return table.reset_index(drop=True)


def read_batch(queue: Path) -> pd.DataFrame:
    """The work queue written by `cureflow score` (parquet or csv), with the columns monitoring needs."""
    queue = Path(queue)
    rows = pd.read_parquet(queue) if queue.suffix.lower() == ".parquet" else pd.read_csv(queue)
    needed = ["account_id", "as_of", "cure_probability", *ACTION_COLUMNS]
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise ValueError(f"work queue {queue.name}: missing column(s) {missing}")
    if rows["as_of"].nunique() > 1:
        raise ValueError(f"work queue {queue.name}: as_of holds {rows['as_of'].nunique()} different instants; "
                         "monitor one batch at a time")
    return rows


def batch_frames(bundle, portfolio, as_of: pd.Timestamp | None, queue: Path | None) -> tuple[pd.DataFrame, ...]:
    """The batch to compare: the work queue's rows when given (its as_of decides the features), else the
    bundle's batch at `as_of` within the day's call capacity; and the features of its accounts."""
    if queue is not None:
        rows = read_batch(queue)
        as_of = pd.Timestamp(rows["as_of"].iloc[0]) if len(rows) else as_of
    else:
        rows, _ = day_queue(bundle, portfolio, as_of)
    feats = bundle.features(portfolio, pd.Timestamp(as_of).tz_convert("UTC")).set_index("account_id")
    unknown = ~rows["account_id"].isin(feats.index)
    if unknown.any():
        raise ValueError(f"work queue: {int(unknown.sum())} account_id(s) not in the data, first "
                         f"{rows.loc[unknown, 'account_id'].head(3).tolist()}")
    return rows, feats.loc[rows["account_id"], bundle.feature_names].reset_index(drop=True), as_of


def run(bundle, portfolio, as_of: pd.Timestamp | None, queue: Path | None, params: dict,
        out: Path | None = None, log=print) -> dict:
    """Everything `cureflow monitor` prints, also written as JSON to `out`."""
    stored = bundle.metadata.get("reference")
    if not stored:
        raise ValueError(f"model {bundle.model_version} carries no training reference (trained before "
                         "monitoring existed): retrain it")
    limits = Thresholds.from_params(params)
    rows, feats, as_of = batch_frames(bundle, portfolio, as_of, queue)
    reference, source = for_day(stored, pd.Timestamp(as_of), bundle.params["calendar"]["default_timezone"])
    table = compare(reference, feats, rows["cure_probability"].to_numpy(dtype=float), rows, limits)
    flagged = table[table["status"] == "drift"]
    report = {"as_of": pd.Timestamp(as_of).isoformat(), "model_version": bundle.model_version, "reference": source,
              "batch_rows": len(rows), "thresholds": vars(limits), "drift": bool(len(flagged)),
              "drifted": flagged["name"].tolist(), "items": table.to_dict("records")}
    log(f"{len(rows):,} accounts in the batch as of {report['as_of']} against {source} of model "
        f"{bundle.model_version} (PSI; warn {limits.psi_warn}, alert {limits.psi_alert}):")
    quiet = (table["kind"] == "feature") & (table["psi"] < limits.psi_warn)
    log(table[~quiet].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    log(f"{int(quiet.sum())} more features under PSI {limits.psi_warn}; "
        + (f"DRIFT in {', '.join(report['drifted'])}" if report["drift"] else "no drift flagged"))
    if len(rows) < limits.min_batch_rows:
        log(f"the batch has fewer than monitor.min_batch_rows = {limits.min_batch_rows} accounts: nothing is flagged")
    if out:
        write_json_atomic(report, out, indent=2, default=float)
    return report
