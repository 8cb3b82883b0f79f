"""Feedback from the CRM joined into what training learns from (CONTRACT.md "Feedback from the CRM").

The decision log holds every recommendation with its propensity, and beside it what the CRM reported
through the API: outcomes and overrides. Training reads it, so a team never copies propensities by hand:

- a contact in the export that names a `decision_id` and carried out the recommended action (same channel
  and window; a hold-out for a hold-out) takes its propensity from the decision log, and the template from
  the decision when the export has none;
- a contact that did something else (a collector deviated), or whose decision a person overrode, is
  learned from as what was done: it keeps the export's channel, window, offer and outcome and loses any
  propensity, because a person chose it, not the policy's draw (like any business-as-usual contact);
- an outcome reported through `POST /v1/decisions/{id}/outcome` that the export does not already hold (the
  same decision and channel within a minute) becomes a contacts row; an outcome saying no contact was made
  is a hold-out row when the decision was a hold-out, and nothing otherwise;
- a `decision_id` the log does not hold is counted, and its contact stays as the export has it;
- a contact that carried out its decision brings the actions its decision's rules blocked (the answer's
  `blocked`: no consent, a legal hold, the day's call capacity, ...): at that decision those actions were not
  the team's to take, so the tests of the safe policy do not judge a baseline or a candidate by them
  (`blocked_actions`, read by `pipelines.evaluate.logged_money`).

Every count is in the returned summary (logged with the training run); no account id is logged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from models import calendar
from models.config import load_params
from models.contract import Portfolio, validate
from models.decision_log import DecisionLog
from models.features import FeatureConfig

log = logging.getLogger(__name__)


class Joined(NamedTuple):
    """What training gets from the decision log: the portfolio with its contacts joined, the counts of what was
    joined (logged with the run), per contact that carried out its decision (by contact_id) the names its
    decision's rules blocked (channels, offers or "all"; only contacts whose decision blocked something), and
    per such contact the actions its policy gave a chance (the answer's `support`: (channel, window, offer)
    tuples; only decisions recorded with it)."""

    portfolio: Portfolio
    counts: dict
    blocked: pd.Series
    support: pd.Series = pd.Series(dtype=object)


NO_BLOCKS = pd.Series(dtype=object)
NO_SUPPORT = NO_BLOCKS
SAME_ATTEMPT = pd.Timedelta(minutes=1)  # an API outcome this close to an export row of its decision is that row
DEFAULT_LOG_FILE = "decisions.db"  # what `cureflow score` and `cureflow serve` write when no URL is set


def decision_log_url(explicit: str | None, names_decisions: bool = True) -> str | None:
    """The decision log training reads: the explicit URL, else CUREFLOW_DATABASE_URL, else, when the export
    names cureflow decisions, the SQLite file `cureflow score` writes by default if it exists; else None."""
    if explicit:
        return explicit
    if os.environ.get("CUREFLOW_DATABASE_URL"):
        return os.environ["CUREFLOW_DATABASE_URL"]
    return f"sqlite:///{DEFAULT_LOG_FILE}" if names_decisions and Path(DEFAULT_LOG_FILE).exists() else None


def load(portfolio: Portfolio, explicit_url: str | None = None, config: FeatureConfig | None = None
         ) -> Joined:
    """What training calls: the portfolio joined to the decision log `decision_log_url` finds, with the counts."""
    names = bool(portfolio.contacts["decision_id"].notna().any())
    return from_url(portfolio, decision_log_url(explicit_url, names), config)


def window_names(times: pd.Series, zones: pd.Series, config: FeatureConfig) -> np.ndarray:
    """The contact-window name of each instant in its account's local time (NaT -> "")."""
    names = np.array([w.name for w in config.windows] + [""], dtype=object)
    ok = times.notna().to_numpy()
    out = np.full(len(times), "", dtype=object)
    if ok.any():
        local = calendar.to_local(times[ok].reset_index(drop=True), zones[ok].reset_index(drop=True))
        out[ok] = names[calendar.window_codes(local, config.windows)]
    return out


def _api_rows(events: list[dict], records: dict[str, dict], contacts: pd.DataFrame, accounts: set[str],
              counts: dict[str, int]) -> pd.DataFrame:
    """Contacts rows for the outcomes reported through the API that the export does not hold."""
    rows = []
    named = contacts[contacts["decision_id"].notna()]
    in_export = {key: group["contacted_at"].to_numpy() for key, group in named.groupby(["decision_id", "channel"])}
    for event in events:
        record = records.get(event["decision_id"])
        if record is None or record["account_id"] not in accounts:
            counts["api_outcomes_elsewhere"] += 1  # another portfolio's (or tenant's) decision
            continue
        at = pd.Timestamp(event["body"]["at"]).tz_convert("UTC")
        recommended = record["answer"]["action"]["channel"]
        if event["body"]["contacted"] and event["body"]["channel"] != "none":
            channel, outcome = event["body"]["channel"], event["body"]["outcome"]
        elif recommended == "none":
            channel, outcome = "none", "held_out"
        else:
            counts["api_outcomes_no_contact"] += 1
            continue
        seen = in_export.get((event["decision_id"], channel))
        if seen is not None and (np.abs(pd.DatetimeIndex(seen) - at) <= SAME_ATTEMPT).any():
            counts["api_outcomes_in_export"] += 1
            continue
        counts["api_outcomes_added"] += 1
        rows.append({"contact_id": f"api-outcome-{event['event_id']}", "account_id": record["account_id"],
                     "contacted_at": at, "channel": channel, "direction": "outbound",
                     "template": event["body"].get("template"), "outcome": outcome, "experiment_id": None,
                     "propensity": np.nan, "decision_id": event["decision_id"]})
    return pd.DataFrame(rows, columns=contacts.columns)


def join(portfolio: Portfolio, decision_log, config: FeatureConfig | None = None) -> Joined:
    """The portfolio with its contacts joined to the decision log (`models.decision_log.DecisionLog`), the
    counts of what was joined and what each carried-out decision's rules blocked (`Joined`). A portfolio whose
    contacts name no decision and a log with no outcome give back the same contacts."""
    config = config or FeatureConfig.from_params(load_params())
    contacts = portfolio.contacts
    events = decision_log.all_events(("outcome", "override"))
    outcomes = [e for e in events if e["kind"] == "outcome"]
    overridden = {e["decision_id"] for e in events if e["kind"] == "override"}
    named_ids = set(contacts["decision_id"].dropna())
    records = decision_log.decisions_named(named_ids | {e["decision_id"] for e in outcomes})
    counts = dict.fromkeys(("contacts_naming_a_decision", "unknown_decision", "carried_out", "propensity_from_log",
                            "propensity_replaced", "deviated", "overridden", "api_outcomes_added",
                            "api_outcomes_in_export", "api_outcomes_no_contact", "api_outcomes_elsewhere",
                            "carried_out_with_actions_blocked", "carried_out_with_distribution"), 0)
    added = _api_rows(outcomes, records, contacts, set(portfolio.accounts["account_id"]), counts)
    if len(added):  # validated with the rest: the API's rows meet the contract like the export's
        both = pd.concat([contacts.astype(object), added.astype(object)], ignore_index=True)
        contacts = validate(portfolio.tables | {"contacts": both}).contacts
    else:
        contacts = contacts.copy()
    named = contacts["decision_id"].notna().to_numpy()
    counts["contacts_naming_a_decision"] = int(named.sum() - len(added))
    rows = np.flatnonzero(named)
    known = np.array([d in records for d in contacts["decision_id"].to_numpy(dtype=object)[rows]], dtype=bool)
    counts["unknown_decision"] = int((~known).sum()) if len(rows) else 0
    rows = rows[known]
    if not len(rows):
        return Joined(replace(portfolio, contacts=contacts), counts, NO_BLOCKS)
    ids = contacts["decision_id"].to_numpy(dtype=object)[rows]
    answers = [records[d]["answer"] for d in ids]
    zones = calendar.effective_timezones(portfolio.accounts.set_index("account_id")["timezone"])
    zone = pd.Series(zones.reindex(contacts["account_id"].iloc[rows]).to_numpy())
    done_window = window_names(contacts["contacted_at"].iloc[rows].reset_index(drop=True), zone, config)
    starts = pd.to_datetime(pd.Series([(a["action"].get("contact_window") or {}).get("start") for a in answers]),
                            utc=True, format="ISO8601")
    asked_window = window_names(starts, zone, config)
    asked = np.array([a["action"]["channel"] for a in answers], dtype=object)
    done = contacts["channel"].iloc[rows].to_numpy(dtype=object)
    same = (asked == done) & ((asked == "none") | (asked_window == done_window))
    override = np.array([d in overridden for d in ids], dtype=bool)
    follows = same & ~override
    counts["carried_out"] = int(follows.sum())
    counts["overridden"] = int(override.sum())
    counts["deviated"] = int((~same & ~override).sum())
    logged = np.array([records[d]["propensity"] for d in ids], dtype=float)
    before = contacts["propensity"].iloc[rows].to_numpy(dtype=float)
    propensity = np.where(follows, logged, np.nan)
    counts["propensity_from_log"] = int(np.isfinite(propensity).sum())
    counts["propensity_replaced"] = int((np.isfinite(before) & ~np.isclose(before, propensity)).sum())
    contacts.loc[rows, "propensity"] = propensity
    experiment = contacts["experiment_id"].iloc[rows].to_numpy(dtype=object)
    contacts.loc[rows, "experiment_id"] = np.where(
        ~follows, None, np.where(pd.isna(experiment) & (propensity < 1), "cureflow", experiment))
    template = contacts["template"].iloc[rows].to_numpy(dtype=object)
    wanted = np.array([a["action"].get("template") for a in answers], dtype=object)
    contacts.loc[rows, "template"] = np.where(follows & pd.isna(template), wanted, template)
    names = [frozenset(b["action"] for b in a.get("blocked") or ()) for a in answers]
    kept = [i for i in np.flatnonzero(follows) if names[i]]
    blocked = pd.Series([names[i] for i in kept], index=contacts["contact_id"].to_numpy(dtype=object)[rows[kept]],
                        dtype=object)
    counts["carried_out_with_actions_blocked"] = len(blocked)
    dists = [frozenset((c, w, o) for c, w, o, p in a.get("support") or () if p > 0) for a in answers]
    kept = [i for i in np.flatnonzero(follows) if dists[i]]
    support = pd.Series([dists[i] for i in kept], index=contacts["contact_id"].to_numpy(dtype=object)[rows[kept]],
                        dtype=object)
    counts["carried_out_with_distribution"] = len(support)
    return Joined(replace(portfolio, contacts=contacts), counts, blocked, support)


def blocked_actions(blocked: pd.Series, contact_ids: pd.Series, actions: list[tuple[str, str, str]]) -> np.ndarray:
    """(decisions, actions) True where the decision's own rules blocked the action (`Joined.blocked`: its
    channel, its offer, or "all" contact), never no contact (an action whose channel is "none"); decisions
    without a record of blocks (business as usual, the export's own propensities) are all False."""
    out = np.zeros((len(contact_ids), len(actions)), dtype=bool)
    if blocked.empty:
        return out
    named = blocked.reindex(contact_ids.to_numpy(dtype=object)).to_numpy(dtype=object)
    channel = np.array([a[0] for a in actions], dtype=object)
    offer = np.array([a[2] for a in actions], dtype=object)
    contact = channel != "none"
    found = np.flatnonzero(pd.notna(named))
    for names in set(named[found]):
        hit = found[named[found] == names]
        out[hit] = contact & (np.isin(channel, list(names)) | np.isin(offer, list(names)) | ("all" in names))
    return out


def supported_actions(support: pd.Series, contact_ids: pd.Series, actions: list[tuple[str, str, str]]
                      ) -> np.ndarray:
    """(decisions, actions) True where the decision's policy gave the action a chance (`Joined.support`); a
    decision recorded without its distribution (the export's own propensities, an older record) is True
    everywhere: nothing says what it could not have done."""
    out = np.ones((len(contact_ids), len(actions)), dtype=bool)
    if support.empty:
        return out
    named = support.reindex(contact_ids.to_numpy(dtype=object)).to_numpy(dtype=object)
    found = np.flatnonzero(pd.notna(named))
    for dist in set(named[found]):
        hit = found[named[found] == dist]
        out[hit] = np.array([a in dist for a in actions], dtype=bool)
    return out


def from_url(portfolio: Portfolio, url: str | None, config: FeatureConfig | None = None) -> Joined:
    """`join` with the decision log at `url`; with no log, the portfolio as it is (and a warning when its
    contacts name decisions the export alone cannot explain)."""
    if url is None:
        named = int(portfolio.contacts["decision_id"].notna().sum())
        if named:
            log.warning("%d contacts name a cureflow decision but no decision log was given "
                        "(--decision-log or CUREFLOW_DATABASE_URL): their propensities are the export's", named)
        return Joined(portfolio, {}, NO_BLOCKS)
    decisions = DecisionLog(url)
    try:
        return join(portfolio, decisions, config)
    finally:
        decisions.close()
