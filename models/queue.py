"""The day's work queue: scored rows in priority order, then the day's call capacity.

The batch (`serving.batch`), training's checks and the workbench all build the queue here, so the capacity
step and its re-tiering (through `policy.channel_tiers`, the tiers `policy.tiers` starts from) are written once.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from models import policy, vocab
from models.bundle import ALT_COLUMNS, BATCH_COLUMNS
from models.contract import Portfolio


def empty_rows(extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """No overdue account: the batch columns, private ones included, with no rows."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in (*BATCH_COLUMNS, *ALT_COLUMNS, *extra)})


def in_priority_order(parts: list[pd.DataFrame], extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """Chunks' rows as one frame, highest priority first (ties by account id), whatever the chunking."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_rows(extra)
    rows = pd.concat(parts, ignore_index=True)
    rows = rows.sort_values(["priority", "account_id"], ascending=[False, True], kind="stable")
    return rows.reset_index(drop=True)


def capacity_step(rows: pd.DataFrame, capacity: int | None, calls_per_hour: float
                  ) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """`apply_capacity`, also returning each row's expected value (JPY) after the step, for the report."""
    is_call = rows["channel"].to_numpy() == "phone"
    value, alt = rows["_value"].to_numpy(dtype=float), rows["_alt_value"].to_numpy(dtype=float)
    keep = policy.capacity_keep(is_call, rows["_call_rank"].to_numpy(dtype=float), capacity)
    moved = is_call & ~keep
    rows = rows.copy()
    for col in ("channel", "window_start", "window_end", "offer", "template"):
        rows.loc[moved, col] = rows.loc[moved, f"_alt_{col}"]
    rows.loc[moved, "expected_gain"] = rows.loc[moved, "_alt_gain"]
    if "_support" in rows.columns:  # the policy's distribution and the taken action's chance, as a moved call's
        rows.loc[moved, "_support"] = rows.loc[moved, "_alt_support"]
        rows.loc[moved, "propensity"] = rows.loc[moved, "_alt_propensity"]
    retier = moved & rows["tier"].isin(vocab.CALL_TIERS).to_numpy()
    # a moved call's other action is never a call: its tier is the channel's (digital, letter or no contact)
    rows.loc[retier, "tier"] = policy.channel_tiers(rows.loc[retier, "channel"].to_numpy())
    rows.loc[moved, "blocked"] = [json.dumps([*json.loads(b), {"action": "phone", "rule": "CAPACITY", "until": None}])
                                  for b in rows.loc[moved, "blocked"]]
    values = np.where(moved, alt, value)
    summary = {"calls_proposed": int(is_call.sum()), "calls_kept": int(keep.sum()), "phone_capacity": capacity,
               "calls_moved_to_other_actions": int(moved.sum()),
               "value_of_one_more_collector_hour": policy.marginal_call_value(is_call, value, alt, capacity,
                                                                              calls_per_hour),
               "expected_value": float(values.sum())}
    keep_cols = [c for c in (*BATCH_COLUMNS, "_features", "_support") if c in rows.columns]
    return rows.loc[:, keep_cols].reset_index(drop=True), summary, values


def apply_capacity(rows: pd.DataFrame, capacity: int | None, calls_per_hour: float) -> tuple[pd.DataFrame, dict]:
    """Keep the day's calls by `policy.call_rank` (what a call adds over the account's best other action, or
    the stake while the models' values are not trusted); the rest get that other action (and a `blocked`
    entry naming CAPACITY). Returns the contract rows and a summary
    with the value of one more collector-hour."""
    rows, summary, _ = capacity_step(rows, capacity, calls_per_hour)
    return rows.loc[:, list(BATCH_COLUMNS)], summary


def day_queue(bundle, portfolio: Portfolio, as_of: pd.Timestamp) -> tuple[pd.DataFrame, dict]:
    """The day's work queue as the nightly batch makes it, for a portfolio in memory: every overdue account
    scored, then the bundle's call capacity (`apply_capacity`); the contract rows and the capacity summary."""
    config = bundle.policy_config
    return apply_capacity(bundle.score(portfolio, as_of), config.phone_capacity, config.calls_per_hour)
