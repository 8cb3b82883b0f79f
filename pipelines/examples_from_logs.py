"""Logged decisions as learning examples: features at decision time, the action taken, its propensity,
and whether a payment followed within K days.

A decision's features are taken at the local midnight that starts the contact's day (strictly before the
contact, so no same-day leakage), one feature pass per distinct midnight.

By default only randomised decisions (a logged propensity) are kept: the off-policy evaluation, the A/B
readout and the promotion gate rest on logged propensities alone. Training asks for the business-as-usual
decisions too (`business_as_usual=True`, params response.business_as_usual.use): they come with no
propensity (NaN) and with the account's consent and hold flags (`RULE_INPUTS`), which a rule reads and the
estimate of the team's rule (models.logging_policy) needs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models import calendar, vocab
from models.contract import Portfolio
from models.features import FeatureConfig, Prepared, features_at
from models.labels import response_labels
from models.response import ActionSpace, template_offer

# The arrangement arm's offer is staged (policy.final_offer): a plan, from 90 days past due a settlement, for the
# vulnerable a hardship referral. A logged decision with any of them is a decision of the arrangement arm.
ARRANGEMENTS = ("settlement", "hardship_referral")
DEFAULT_TEMPLATE_OFFERS = {"reminder": "reminder", "plan": "instalment_plan", "instalment_plan": "instalment_plan"}
RULE_INPUTS = tuple(f"rule_{flag}" for flag in vocab.FLAG_COLUMNS)  # the account flags, as 0/1, for BAU rows


def logged_decisions(portfolio: Portfolio, config: FeatureConfig, params: dict, end: pd.Timestamp,
                     business_as_usual: bool = False) -> pd.DataFrame:
    """Outbound decisions and hold-outs with a logged propensity whose K-day outcome window is observed;
    with `business_as_usual`, the outbound decisions without one too (propensity NaN, flags in RULE_INPUTS)."""
    con = portfolio.contacts
    k = int(params["response"]["horizon_days"])
    keep = ((con["propensity"].notna() | business_as_usual) & (con["direction"] == "outbound")
            & (con["contacted_at"] + pd.Timedelta(days=k) <= end))
    rows = con.loc[keep].reset_index(drop=True)
    accounts = portfolio.accounts.set_index("account_id")
    zones = calendar.effective_timezones(accounts["timezone"]).reindex(rows["account_id"]).to_numpy()
    zones = pd.Series(zones, index=rows.index)
    local = calendar.to_local(rows["contacted_at"], zones)
    windows = calendar.window_codes(local, config.windows)
    names = np.array([w.name for w in config.windows] + ["none"], dtype=object)
    prefixes = params["response"].get("template_offers", DEFAULT_TEMPLATE_OFFERS)
    offer = template_offer(rows["template"], prefixes).fillna("reminder")
    offer = offer.where(~offer.isin(ARRANGEMENTS), "instalment_plan")  # the arm a staged arrangement came from
    space = ActionSpace(tuple(w.name for w in config.windows))
    out = pd.DataFrame({
        "contact_id": rows["contact_id"], "account_id": rows["account_id"], "contacted_at": rows["contacted_at"],
        "decided_at": calendar.local_midnight_utc(local.dt.normalize(), zones),
        "segment": accounts["employment"].reindex(rows["account_id"]).to_numpy(),
        "channel": rows["channel"], "window": names[windows], "offer": offer.where(rows["channel"] != "none", "none"),
        "propensity": rows["propensity"].to_numpy(dtype=np.float64),
        "reached": (rows["outcome"].isin(vocab.REACHED_OUTCOMES)
                    | ((rows["channel"] == "letter") & (rows["outcome"] == "delivered"))).to_numpy(),
    })
    if business_as_usual:
        flags = accounts.reindex(rows["account_id"])[list(vocab.FLAG_COLUMNS)].fillna(True).astype(float)
        out[list(RULE_INPUTS)] = flags.to_numpy()
    out["action"] = space.index(out["channel"].to_numpy(), out["window"].to_numpy(), out["offer"].to_numpy())
    return out[out["action"] >= 0].reset_index(drop=True)


def decision_examples(portfolio: Portfolio, prep: Prepared, config: FeatureConfig, params: dict,
                      end: pd.Timestamp, business_as_usual: bool = False) -> pd.DataFrame:
    """Logged decisions with their features at decision time and their K-day payment label (with
    `business_as_usual`, the decisions without a logged propensity too: see `logged_decisions`)."""
    logs = logged_decisions(portfolio, config, params, end, business_as_usual)
    code_of = pd.Index(prep.account_id)
    acc = code_of.get_indexer(logs["account_id"])
    at = pd.DatetimeIndex(logs["contacted_at"]).as_unit("ns").asi8
    logs["label"] = response_labels(prep, acc, at, int(params["response"]["horizon_days"]))
    parts = []
    for decided_at, idx in logs.groupby("decided_at", sort=True).groups.items():
        feats = features_at(prep, decided_at, config)
        rows = feats.iloc[acc[np.asarray(idx)]].drop(columns="account_id").set_index(idx)
        parts.append(rows)
    if not parts:
        return logs
    return logs.join(pd.concat(parts).sort_index())
