"""A/B analysis of the contact experiments: the 7-day response rate of every arm and its lift over the hold-out.

An arm is a combination of action columns of the logged decisions (by default the channel); the hold-out arm
is the decisions whose channel is `none` (CONTRACT.md: an experiment decided not to contact). The effect of a
contact is its response rate minus the hold-out's, within the same segment.

Intervals:
- a rate: Wilson score interval. Unlike the Wald interval it stays inside [0, 1] and keeps close to its nominal
  coverage for small arms and rates near 0 or 1 (a 0/10 arm gets [0, 0.28], not the Wald [0, 0]).
- a lift: Newcombe's hybrid score interval for a difference of two independent proportions (Newcombe 1998,
  method 10), built from the two Wilson intervals. Wald (p1 - p0 +- z * se) collapses to zero width when an
  arm has no or only responders and under-covers for small or rare arms; Newcombe does neither and agrees
  with Wald on large arms with moderate rates.
`significant` means the lift interval excludes 0 at the given confidence, one comparison at a time: with k
arms tested against the hold-out, pass `confidence=1 - 0.05 / k` (Bonferroni) for a family-wise 5%.

Weighting (`weighted=True`): when the chance of an arm depended on the account (in the logged experiments the
draw is uniform over the channels each account consented to, so accounts with few consents get each channel
more often), plain arm rates compare different mixes of accounts. Weighting each decision by 1/propensity
(a Hajek mean per arm) removes that tilt; the intervals then use Kish's effective sample size in place of n,
an approximation. The logged propensity is the probability of the whole action (channel x window x offer);
it stands in for the probability of a coarser arm only up to a factor that is the same for every account
(true for the window, not for the offer: vulnerable accounts were offered instalment plans only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

ALL = "all"


def _z(confidence: float) -> float:
    """The two-sided normal quantile for `confidence` (0.95 -> 1.96)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {confidence!r}")
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def _wilson(rate: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson bounds from a rate and a (possibly effective, non-integer) sample size; NaN where n == 0."""
    rate, n = np.asarray(rate, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = 1.0 + z * z / n
        centre = (rate + z * z / (2.0 * n)) / denom
        half = z / denom * np.sqrt(rate * (1.0 - rate) / n + z * z / (4.0 * n * n))
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def wilson_interval(responders: np.ndarray | float, n: np.ndarray | float,
                    confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (low, high) for `responders` out of `n`, elementwise; NaN where n == 0."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.asarray(responders, dtype=float) / n
    return _wilson(rate, n, _z(confidence))


def _newcombe(p1: np.ndarray, n1: np.ndarray, p0: np.ndarray, n0: np.ndarray,
              z: float) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's hybrid score interval for p1 - p0 from the two rates and sample sizes."""
    l1, u1 = _wilson(p1, n1, z)
    l0, u0 = _wilson(p0, n0, z)
    diff = np.asarray(p1, dtype=float) - np.asarray(p0, dtype=float)
    return diff - np.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2), diff + np.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)


def difference_interval(responders: np.ndarray | float, n: np.ndarray | float, holdout_responders: np.ndarray | float,
                        holdout_n: np.ndarray | float, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe interval (low, high) for the lift responders/n - holdout_responders/holdout_n."""
    n, holdout_n = np.asarray(n, dtype=float), np.asarray(holdout_n, dtype=float)
    p1, p0 = np.asarray(responders, dtype=float) / n, np.asarray(holdout_responders, dtype=float) / holdout_n
    return _newcombe(p1, n, p0, holdout_n, _z(confidence))


def _first_rows(logs: pd.DataFrame, bad: np.ndarray) -> list:
    return logs.index[np.asarray(bad, dtype=bool)][:5].tolist()


def _validated(logs: pd.DataFrame, arm: list[str], segment: str | None, weighted: bool) -> None:
    """Raise a ValueError naming the column and first offending rows for anything arm_table cannot use."""
    needed = [*arm, "label", "channel"] + ([segment] if segment else []) + (["propensity"] if weighted else [])
    missing = [c for c in dict.fromkeys(needed) if c not in logs.columns]
    if missing:
        raise ValueError(f"logs is missing column(s) {missing}")
    if "segment" in arm:
        raise ValueError("an arm column may not be called 'segment' (the output's segment column)")
    if logs.empty:
        raise ValueError("logs has no rows")
    for col in [*arm, "channel"] + ([segment] if segment else []):
        if logs[col].isna().any():
            raise ValueError(f"logs.{col} has missing values; first bad rows {_first_rows(logs, logs[col].isna())}")
    label = pd.to_numeric(logs["label"], errors="coerce")
    bad = ~label.isin([0, 1])
    if bad.any():
        raise ValueError(f"logs.label must be 0 or 1; first bad rows {_first_rows(logs, bad)}")
    if weighted:
        p = pd.to_numeric(logs["propensity"], errors="coerce")
        bad = ~((p > 0) & (p <= 1))
        if bad.any():
            raise ValueError(f"logs.propensity must be in (0, 1]; first bad rows {_first_rows(logs, bad)}")


def _cells(logs: pd.DataFrame, arm: list[str], segment: str | None, holdout_channel: str,
           weighted: bool) -> pd.DataFrame:
    """One row per (segment, arm), sorted: n, responders, weighted rate and Kish effective n, hold-out flag."""
    y = pd.to_numeric(logs["label"]).to_numpy(dtype=float)
    w = 1.0 / logs["propensity"].to_numpy(dtype=float) if weighted else np.ones(len(logs))
    frame = pd.DataFrame({"segment": logs[segment].to_numpy() if segment else ALL,
                          **{c: logs[c].to_numpy() for c in arm},
                          "holdout": (logs["channel"] == holdout_channel).to_numpy(),
                          "y": y, "w": w, "wy": w * y, "w2": w * w})
    cells = frame.groupby(["segment", *arm], sort=True).agg(
        n=("y", "size"), responders=("y", "sum"), holdout=("holdout", "max"), mixed=("holdout", "min"),
        w=("w", "sum"), wy=("wy", "sum"), w2=("w2", "sum")).reset_index()
    mixed = cells["holdout"] & ~cells["mixed"]
    if mixed.any():
        raise ValueError(f"arm {cells.loc[mixed, arm].iloc[0].tolist()} mixes hold-out and contacted decisions; "
                         f"add 'channel' to the arm columns")
    cells["responders"] = cells["responders"].astype(int)
    cells["rate"] = cells["wy"] / cells["w"]
    cells["n_eff"] = cells["w"] ** 2 / cells["w2"]
    return cells.drop(columns=["mixed", "w", "wy", "w2"])


def _with_lift(cells: pd.DataFrame, z: float) -> pd.DataFrame:
    """Add lift over the same segment's hold-out, its Newcombe interval and `significant` (NaN: no hold-out)."""
    hold = cells[cells["holdout"]]
    several = hold["segment"].duplicated()
    if several.any():
        raise ValueError(f"segment {hold.loc[several, 'segment'].iloc[0]!r} has its hold-out split over several "
                         "arms; the hold-out rows must share their arm values")
    hold = hold.set_index("segment")
    p0 = cells["segment"].map(hold["rate"]).to_numpy(dtype=float)
    n0 = cells["segment"].map(hold["n_eff"]).to_numpy(dtype=float)
    p1, n1 = cells["rate"].to_numpy(dtype=float), cells["n_eff"].to_numpy(dtype=float)
    low, high = _newcombe(p1, n1, p0, n0, z)
    is_hold = cells["holdout"].to_numpy()
    cells["lift"] = np.where(is_hold, 0.0, p1 - p0)
    cells["lift_low"] = np.where(is_hold, 0.0, low)
    cells["lift_high"] = np.where(is_hold, 0.0, high)
    cells["significant"] = (cells["lift_low"] > 0) | (cells["lift_high"] < 0)
    return cells


def arm_table(logs: pd.DataFrame, arm: Sequence[str] | str = ("channel",), segment: str | None = None,
              holdout_channel: str = "none", confidence: float = 0.95, weighted: bool = False) -> pd.DataFrame:
    """Per (segment, arm): n, responders, rate with its Wilson interval, and the lift over the segment's
    hold-out with its Newcombe interval and a `significant` flag (interval excludes 0).

    logs: one row per logged decision with the arm columns, `channel` and `label` (1: paid within 7 days),
    plus `segment` when given and `propensity` when `weighted`. The hold-out arm (channel == holdout_channel)
    is a row of its own with lift 0; a segment without hold-out rows gets NaN lifts. With segment None every
    row is in segment 'all'. Rows are sorted by segment, then by the arm columns. `weighted`: see the module
    docstring; it adds `n_eff`, the effective sample size the intervals used.
    """
    arm = [arm] if isinstance(arm, str) else list(arm)
    _validated(logs, arm, segment, weighted)
    z = _z(confidence)
    cells = _cells(logs, arm, segment, holdout_channel, weighted)
    low, high = _wilson(cells["rate"].to_numpy(), cells["n_eff"].to_numpy(), z)
    cells["rate_low"], cells["rate_high"] = low, high
    cells = _with_lift(cells, z)
    columns = ["segment", *arm, "holdout", "n", "responders", "rate", "rate_low", "rate_high",
               "lift", "lift_low", "lift_high", "significant"] + (["n_eff"] if weighted else [])
    return cells[columns].reset_index(drop=True)


def lift_summary(logs: pd.DataFrame, arms: Sequence[str] | str = ("channel",), segments: Sequence[str] = (),
                 **options) -> dict[str, pd.DataFrame]:
    """The overall table under key 'all' and one table per segment column under its name, in one call.

    options go to arm_table (holdout_channel, confidence, weighted)."""
    out = {ALL: arm_table(logs, arms, None, **options)}
    for segment in segments:
        out[segment] = arm_table(logs, arms, segment, **options)
    return out
