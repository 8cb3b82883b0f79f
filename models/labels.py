"""Outcome labels from the future side of `t` (training and evaluation only, never features).

Cure within H days at t: payments in [t, t+H) are at least the arrears at t (CONTRACT.md).
Response to an action at t: a payment of any amount in [t, t+K).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.as_of import default_as_of
from models.features import DAY_NS, Prepared


def paid_between(prep: Prepared, start: np.ndarray, days: float, acc: np.ndarray) -> np.ndarray:
    """For each (account, start) pair, the money (in the currency) paid in [start, start + days)."""
    key_base = prep.pay_acc.astype(np.int64) * (1 << 40)
    offs = (prep.pay_at // 10**9)  # seconds since 1970 fit in 40 bits until year 2318
    keys = key_base + offs
    cum = np.concatenate([[0], np.cumsum(prep.pay_units)])
    lo = np.searchsorted(keys, acc.astype(np.int64) * (1 << 40) + start // 10**9, side="left")
    hi_t = (start + int(days * DAY_NS)) // 10**9
    hi = np.searchsorted(keys, acc.astype(np.int64) * (1 << 40) + hi_t, side="left")
    return (cum[hi] - cum[lo]) / prep.scale


def cure_labels(prep: Prepared, as_of: pd.Timestamp, arrears: np.ndarray, horizon_days: int) -> np.ndarray:
    """1 where the account's payments in [t, t+H) cover its arrears at t, for every account."""
    t = int(pd.Timestamp(as_of).tz_convert("UTC").value)
    acc = np.arange(prep.n)
    paid = paid_between(prep, np.full(prep.n, t, dtype=np.int64), horizon_days, acc)
    return (paid + 1e-9 >= arrears).astype(np.int64)


def response_labels(prep: Prepared, acc: np.ndarray, at: np.ndarray, horizon_days: int) -> np.ndarray:
    """1 where any payment arrived in [at, at+K) for each (account code, instant in ns) pair."""
    return (paid_between(prep, at.astype(np.int64), horizon_days, acc) > 0).astype(np.int64)


def history_end(prep: Prepared) -> pd.Timestamp:
    """The end of the observed history: `default_as_of` of the latest payment, contact or due instant."""
    latest = max(int(a.max()) for a in (prep.pay_at, prep.con_at, prep.inst_due) if len(a))
    return default_as_of(pd.Timestamp(latest, tz="UTC"))
