"""The decision: which offer, which channel and window, the priority and the tier a collector reads.

Pure functions of arrays (no I/O, no model objects), table-tested, called by the API and the batch alike.
Every number comes from params.yaml `policy`. Rules (models.rules) have already removed what the law or
the customer forbids; this module picks the best of what is left and never overrides a rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models import vocab

ARM_OFFERS = ("reminder", "instalment_plan")
TIERS = ("call today", "call this week", "digital reminder", "letter", "no contact",
         "hold: promise to pay", "hold: legal", "review by a person")
LEGAL_HOLDS = ("R-CEASE", "R-REPRESENTED", "R-INSOLVENCY")


@dataclass(frozen=True)
class PolicyConfig:
    """params.yaml `policy`, frozen."""

    costs: dict[str, float]
    call_today_min_value: float
    instalment_plan_min_arrears: float
    settlement_min_days_past_due: float
    legal_review_min_days_past_due: float
    version: str

    @classmethod
    def from_params(cls, policy: dict) -> PolicyConfig:
        offers = policy["offers"]
        return cls(
            costs={k: float(v) for k, v in policy["costs"].items()},
            call_today_min_value=float(policy["tiers"]["call_today_min_value"]),
            instalment_plan_min_arrears=float(offers["instalment_plan_min_arrears"]),
            settlement_min_days_past_due=float(offers["settlement_min_days_past_due"]),
            legal_review_min_days_past_due=float(offers["legal_review_min_days_past_due"]),
            version=str(policy.get("version", "policy-1")),
        )


def staged_offer(arrears_instalments: np.ndarray, days_past_due: np.ndarray, broken_promises: np.ndarray,
                 vulnerable: np.ndarray, config: PolicyConfig) -> np.ndarray:
    """Staged escalation: reminder, then a plan at two instalments behind, settlement only late,
    legal review only after failed plans (a person decides), hardship referral for the vulnerable."""
    offer = np.full(len(arrears_instalments), "reminder", dtype=object)
    offer[arrears_instalments >= config.instalment_plan_min_arrears] = "instalment_plan"
    offer[days_past_due >= config.settlement_min_days_past_due] = "settlement"
    failed_plans = broken_promises >= 2
    offer[(days_past_due >= config.legal_review_min_days_past_due) & failed_plans] = "legal_review"
    offer[vulnerable] = "hardship_referral"
    return offer


def arm_offer_index(offer: np.ndarray) -> np.ndarray:
    """Which learned arm an offer resembles: a reminder, or a payment arrangement (every other offer)."""
    return np.where(offer == "reminder", 0, 1)


def best_actions(lift: np.ndarray, stake: np.ndarray, allowed: np.ndarray, offer_idx: np.ndarray,
                 config: PolicyConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Among allowed channels x windows, the highest expected value = lift x stake - cost.

    lift: (n, channels, windows, arm offers); allowed: (n, channels). Returns channel index (-1 = none),
    window index (-1 = none), the gain in payment chance and the expected value in money.
    """
    n = len(stake)
    gain = lift[np.arange(n), :, :, offer_idx]                     # (n, channels, windows)
    cost = np.array([config.costs[c] for c in vocab.CONTACT_CHANNELS])
    value = gain * stake[:, None, None] - cost[None, :, None]
    value = np.where(allowed[:, :, None], value, -np.inf)
    flat = value.reshape(n, -1).argmax(axis=1)
    channel, window = np.divmod(flat, gain.shape[2])
    best_value = value.reshape(n, -1)[np.arange(n), flat]
    best_gain = gain.reshape(n, -1)[np.arange(n), flat]
    contact = np.isfinite(best_value) & (best_value > 0)
    return (np.where(contact, channel, -1), np.where(contact, window, -1),
            np.where(contact, best_gain, 0.0), np.where(contact, best_value, 0.0))


def tiers(channel: np.ndarray, held_by: list[list[str]], require_human: np.ndarray, suppress_all: np.ndarray,
          starts_today: np.ndarray, value: np.ndarray, config: PolicyConfig) -> np.ndarray:
    """The tier a collector reads at a glance; holds and human review come before any contact tier."""
    out = np.full(len(channel), "no contact", dtype=object)
    digital = np.isin(channel, ["sms", "email", "ivr"])
    out[digital] = "digital reminder"
    out[channel == "letter"] = "letter"
    phone = channel == "phone"
    out[phone] = "call this week"
    out[phone & starts_today & (value >= config.call_today_min_value)] = "call today"
    promise = np.array(["R-PROMISE" in ids for ids in held_by], dtype=bool)
    legal = np.array([any(r in ids for r in LEGAL_HOLDS) for ids in held_by], dtype=bool)
    out[suppress_all & promise] = "hold: promise to pay"
    out[require_human] = "review by a person"
    out[legal] = "hold: legal"
    return out


def priority(cure_probability: np.ndarray, arrears: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Orders the work queue: money at risk if nothing is done, plus what the chosen action adds."""
    return np.round((1.0 - cure_probability) * arrears + np.maximum(value, 0.0), 2)
