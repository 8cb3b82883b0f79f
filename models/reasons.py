"""Reasons in a collector's words, from the cure model's own contributions (LightGBM pred_contrib)."""

from __future__ import annotations

import math

import numpy as np

from models import vocab

_PHRASES = {
    "days_past_due": "{v:.0f} days past due",
    "arrears": "JPY {v:,.0f} in arrears",
    "arrears_instalments": "{v:.1f} instalments in arrears",
    "monthly_amount": "monthly amount JPY {v:,.0f}",
    "tenure_months": "customer for {v:.0f} months",
    "remaining_term_months": "{v:.0f} months left on the contract",
    "age": "aged {v:.0f}",
    "days_late_mean_12m": "on average {v:.0f} days late over 12 months",
    "days_late_max_12m": "up to {v:.0f} days late in the last 12 months",
    "partial_payments_6m": "{v:.0f} partial payments in 6 months",
    "manual_payments_12m": "{v:.0f} payments outside direct debit in 12 months",
    "paid_90d_instalments": "paid {v:.1f} instalments' worth in 90 days",
    "days_since_last_payment": "last payment {v:.0f} days ago",
    "promises_made_90d": "{v:.0f} promises to pay in 90 days",
    "promises_kept_90d": "{v:.0f} promises kept in 90 days",
    "days_since_last_contact": "last contacted {v:.0f} days ago",
    "days_since_last_reach": "last reached {v:.0f} days ago",
}
_MISSING = {
    "days_since_last_payment": "no payment on record",
    "days_since_last_contact": "never contacted",
    "days_since_last_reach": "never reached",
    "age": "age unknown",
}


def describe(name: str, value: float) -> str:
    """One feature value in plain words."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _MISSING.get(name, f"no {name.replace('_', ' ')} on record")
    if name == "employment":
        return f"employment: {vocab.EMPLOYMENT[int(value)].replace('_', ' ')}"
    if name == "last_payment_method":
        return f"last paid by {vocab.PAYMENT_METHODS[int(value)].replace('_', ' ')}"
    for prefix, label in (("missed_", "missed debits"), ("paid_late_", "instalments paid late")):
        if name.startswith(prefix):
            return f"{value:.0f} {label} in {name[len(prefix):-1]} months"
    if name == "timed_reach_rate":
        return f"answers {value:.0%} of calls and messages"
    if name == "timed_attempts":
        return f"{value:.0f} calls and messages in 180 days"
    if name.endswith("_reach_rate"):
        return f"reached {value:.0%} of the time on {name[:-11].replace('_', ' ')}s"
    if name in _PHRASES:
        return _PHRASES[name].format(v=value)
    return f"{name.replace('_', ' ')}: {value:g}"


def top_reasons(contrib: np.ndarray, values: np.ndarray, names: list[str], k: int = 3) -> list[list[str]]:
    """For each row, the k features that moved the cure chance most, with their direction."""
    out = []
    order = np.argsort(-np.abs(contrib[:, : len(names)]), axis=1, kind="stable")[:, :k]
    for row, idx in enumerate(order):
        items = []
        for j in idx:
            if contrib[row, j] == 0:
                continue
            effect = "raises" if contrib[row, j] > 0 else "lowers"
            items.append(f"{describe(names[j], float(values[row, j]))} ({effect} the chance of cure)")
        out.append(items)
    return out


def action_reason(channel: str, window: str | None, gain: float, explored: bool, driver: str | None = None,
                  basis: str | None = None, measured: bool = True) -> str:
    """Why this action: its gain over no contact (`measured` False: no response model has measured it yet),
    the feature that makes it work for this customer, and whether it is the baseline's or the model's own
    choice (`basis`, from the safe policy)."""
    if explored:
        held = "the hold-out of" if channel == "none" else "an arm of"
        return (f"{held} an experiment: drawn at random among the planned action, variants of it in one channel, "
                f"window or offer, and no contact, so the team learns what works (propensity recorded)")
    if channel == "none":
        text = "no contact: no allowed action is expected to pay back its cost"
        return f"{text} ({basis})" if basis else text
    when = f" on {window.replace('_', ' ')}s" if window else ""
    text = (f"{channel}{when}: {gain:+.0%} chance of a payment within 7 days over no contact" if measured else
            f"{channel}{when}")
    text = f"{text}; {driver}" if driver else text
    return f"{text}; {basis}" if basis else text


def action_drivers(diff: np.ndarray, values: np.ndarray, names: list[str]) -> list[str | None]:
    """Per row, the customer feature that raises the chosen action's chance most (the response model's
    contributions for that action, action columns left out), in words; None when nothing does."""
    diff = diff[:, : len(names)]
    best = diff.argmax(axis=1) if diff.size else np.zeros(len(diff), dtype=np.int64)
    return [f"{describe(names[j], float(values[i, j]))} makes it work" if diff[i, j] > 0 else None
            for i, j in enumerate(best)]
