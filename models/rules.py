"""The contact rules of ../shared/COMPLIANCE.md as one pure, configurable, vectorised engine.

The rules run after the models and can only remove, delay or hand an action to a person. The same code
answers one account (API) and a million (nightly batch): `rule_facts` turns the contact history into a
few numbers per account (numpy bincount / maximum.at over account codes), `evaluate` turns accounts and
facts into boolean masks, and `contact_window` places a named window inside the allowed hours (R-HOURS).
Every number comes from `RulesConfig`, built from params.yaml `rules` (a profile may override any key).

Readings where COMPLIANCE.md is silent (the safe one each time):

- Time. A contact at `t` counts toward a trailing period of `d` days during [t, t + d): a call 6d23h old
  counts, one exactly 7 days old does not; "until" = the instant the rule stops firing, so acting at
  `until` is allowed. Only contacts strictly before `as_of`, of accounts in `accounts`, are read; a row
  without `contacted_at` is ignored. `until` strings are UTC ISO 8601, rounded up to the second.
- Attempts are outbound rows on a contact channel (hold-outs, channel `none`, are no attempt). R-DAILY
  counts every channel, letters too. A conversation (R-AFTER-CONVERSATION) is a phone or ivr row with
  outcome reached, promise_to_pay or refused, inbound or outbound; a promise (R-PROMISE) is any row with
  outcome promise_to_pay, whatever its channel or direction.
- "Would exceed N": with `c` prior attempts the next one is the (c+1)-th, blocked when c + 1 > N.
- The local day is the account's calendar day at `as_of` (DST-safe: a skipped midnight starts the day
  at the first instant after the gap). R-DAILY defers `not_before` to the next local midnight; it blocks
  nothing. R-MESSAGES' daily sms block lasts until that midnight; the 7-day blocks of R-CALLS-7IN7 and
  R-MESSAGES last until enough attempts have aged out.
- Suppression: a legal hold (R-CEASE, R-REPRESENTED, R-INSOLVENCY), an open dispute (R-DISPUTE) and a
  promise inside its quiet days (R-PROMISE) set `suppress_all`, and then no channel and no offer is
  allowed; R-PROMISE also moves `not_before` to the end of the quiet days. A hold read as missing (NA)
  counts as set; a consent read as missing counts as refused.
- Fail closed: an invalid time zone (R-TIME-ZONE) blocks every channel and offer and requires a
  person: without a clock neither R-HOURS nor R-DAILY can be checked. Contact history not sent
  (`contacts is None`) makes every rule that reads it fire on what it governs, without an `until`
  (R-PROMISE all, R-CALLS-7IN7 and R-AFTER-CONVERSATION phone and ivr, R-DAILY all, R-MESSAGES sms and
  email) and requires a person; it does not set `suppress_all` (nothing says the customer must not be
  contacted, only that we cannot tell).
- R-VULNERABLE blocks sms, email and ivr and every offer but hardship_referral and instalment_plan; the
  flag routes decisions and must never be a model feature.
- R-LEGAL: legal_review is never allowed automatically, for every account; the rule *fires* (held_by,
  blocked, require_human) only for accounts whose `proposed_offer` is legal_review.
- R-HOURS blocks nothing and is not in `held_by`: it shapes every window (`contact_window`), which
  always lies inside the hours. Rules are evaluated at `as_of`; a contact deferred to later can only
  find fewer recent attempts, so the blocks stay on the safe side.
- Profiles: one profile per evaluation (`RulesConfig.profile`); the us profile keeps R-DAILY (stricter).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import time
from typing import NamedTuple

import numpy as np
import pandas as pd

from models.calendar import DEFAULT_TIMEZONE, Window, is_valid_timezone, local_day_bounds, next_window, zone
from models.config import load_params
from models.vocab import (
    CHANNELS,
    CONSENT_COLUMN,
    CONTACT_CHANNELS,
    CONVERSATION_OUTCOMES,
    FLAG_COLUMNS,
    OFFERS,
    OUTCOMES,
    is_one_of,
)

RULE_IDS: tuple[str, ...] = (
    "R-CEASE", "R-REPRESENTED", "R-INSOLVENCY", "R-DISPUTE", "R-VULNERABLE", "R-CONSENT", "R-HOURS",
    "R-PROMISE", "R-CALLS-7IN7", "R-AFTER-CONVERSATION", "R-DAILY", "R-MESSAGES", "R-LEGAL", "R-TIME-ZONE",
    "R-CONTESTED",  # CONTRACT.md "Feedback from the CRM": a contested decision routes the account to a person
)
OFFER_CHOICES: tuple[str, ...] = tuple(offer for offer in OFFERS if offer != "none")
LEGAL_HOLDS = {
    "R-CEASE": "do_not_contact", "R-REPRESENTED": "legal_representative", "R-INSOLVENCY": "bankruptcy",
}
CALL_CHANNELS = ("phone", "ivr")
# The flag of an account whose customer contested an automated decision that no person has answered yet (GDPR
# art. 22(3)); set by the serving layer from the decision log (`DecisionLog.contested`), absent = nobody.
CONTESTED = "contested"
MESSAGE_CHANNELS = ("sms", "email")
VULNERABLE_CHANNELS = ("sms", "email", "ivr")
VULNERABLE_OFFERS = ("instalment_plan", "hardship_referral")
FACT_COLUMNS = (
    "phone_ivr_7d", "last_conversation_at", "last_promise_at", "attempts_today", "sms_today", "messages_7d",
    "history_known", "tz_valid", "local_day_ends_at", "phone_ivr_clear_at", "messages_clear_at",
)
_COUNTS = ("phone_ivr_7d", "attempts_today", "sms_today", "messages_7d")
_INSTANTS = ("last_conversation_at", "last_promise_at", "local_day_ends_at", "phone_ivr_clear_at",
             "messages_clear_at")
_NAT = np.iinfo(np.int64).min  # NaT as int64 nanoseconds: np.maximum ignores it
_NS_PER_DAY = 86_400 * 10**9
_NS_PER_SECOND = 10**9


# ---------------------------------------------------------------- configuration

_LIMITS = ("max_calls_7d", "max_attempts_per_day", "max_sms_per_day", "max_messages_7d")
_PERIODS = ("promise_quiet_days", "after_conversation_days", "calls_period_days", "messages_period_days")


@dataclass(frozen=True)
class RulesConfig:
    """Every number of the contact rules, for one profile (params.yaml `rules`)."""

    profile: str
    hours: tuple[time, time]
    max_calls_7d: int
    max_attempts_per_day: int
    max_sms_per_day: int
    max_messages_7d: int
    promise_quiet_days: float
    after_conversation_days: float
    calls_period_days: float
    messages_period_days: float

    def __post_init__(self) -> None:
        """Reject a policy that cannot be meant: negative limits, empty periods, inverted hours."""
        for name in _LIMITS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"rules.{name} must be an integer >= 0, got {value!r}")
        for name in _PERIODS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"rules.{name} must be a number of days > 0, got {value!r}")
        if not self.hours[0] < self.hours[1]:
            raise ValueError(f"rules.hours must start before they end, got {self.hours}")

    @property
    def lookback_days(self) -> float:
        """The longest period any rule looks back: older contacts cannot matter."""
        return max(getattr(self, name) for name in _PERIODS)

    @classmethod
    def from_params(cls, rules_params: Mapping, profile: str | None = None) -> RulesConfig:
        """The config of `profile` (default: `rules.profile`): the base keys, then its overrides."""
        chosen = profile or rules_params["profile"]
        merged = _with_profile(rules_params, chosen)
        missing = [name for name in (*_LIMITS, *_PERIODS, "hours") if name not in merged]
        if missing:
            raise ValueError(f"rules is missing {', '.join(missing)}")
        hours = (_clock(merged["hours"]["start"]), _clock(merged["hours"]["end"]))
        numbers = {name: merged[name] for name in (*_LIMITS, *_PERIODS)}
        return cls(profile=chosen, hours=hours, **numbers)


_KEYS = frozenset({field.name for field in fields(RulesConfig)} - {"profile"})


def _with_profile(rules_params: Mapping, profile: str) -> dict:
    """`rules` with the overrides of `profile` applied (an unknown profile or key is an error)."""
    profiles = rules_params.get("profiles") or {}
    if profiles and profile not in profiles:
        raise ValueError(f"unknown rules profile {profile!r}; known: {', '.join(profiles)}")
    overrides = dict(profiles.get(profile) or {})
    unknown = set(overrides) - _KEYS
    if unknown:
        raise ValueError(f"rules.profiles.{profile} has unknown keys: {', '.join(sorted(unknown))}")
    merged = {key: value for key, value in rules_params.items() if key != "profiles"}
    if "hours" in overrides:
        overrides["hours"] = {**merged.get("hours", {}), **overrides["hours"]}
    return {**merged, **overrides}


def _clock(value: str | time) -> time:
    """A local clock time from "HH:MM" (or a `time`)."""
    if isinstance(value, time):
        return value
    if not isinstance(value, str):
        raise ValueError(f"rules.hours wants 'HH:MM' strings, got {value!r}")
    return time.fromisoformat(value)


def _default_config() -> RulesConfig:
    """The config of params.yaml (read lazily, only when a caller passes none)."""
    return RulesConfig.from_params(load_params()["rules"])


def _days_ns(days: float) -> int:
    return int(round(days * _NS_PER_DAY))


# ---------------------------------------------------------------- instants and local days


def _instant_ns(moment: pd.Timestamp) -> int:
    """A tz-aware instant as int64 UTC nanoseconds (a naive one is an error, never a guess)."""
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is None:
        raise ValueError(f"as_of must be tz-aware, got {moment!r}")
    return int(stamp.tz_convert("UTC").as_unit("ns").value)


def _instants_ns(values: pd.Series | np.ndarray, name: str) -> np.ndarray:
    """tz-aware instants as int64 UTC nanoseconds, NaT as `_NAT`."""
    index = pd.DatetimeIndex(values)
    if len(index) and index.tz is None:
        raise ValueError(f"{name} must be tz-aware (UTC)")
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.as_unit("ns").asi8.copy()


def _as_utc(values_ns: np.ndarray) -> pd.arrays.DatetimeArray:
    """int64 UTC nanoseconds as a datetime64[ns, UTC] array."""
    return pd.DatetimeIndex(values_ns.astype(np.int64).view("M8[ns]")).tz_localize("UTC").array


def _local_days(timezones: pd.Series | np.ndarray, now_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per account: whether its zone is valid, and its local day's [start, end) at `now`.

    Missing zones mean the default; an invalid one counts days in the default zone (it fails closed in
    `evaluate` anyway). Zones are resolved once per distinct name, then broadcast by code.
    """
    names = pd.Series(np.asarray(timezones, dtype=object)) if not isinstance(timezones, pd.Series) else timezones
    names = names.astype(object).where(names.notna(), DEFAULT_TIMEZONE)
    codes, uniques = pd.factorize(names)
    valid = np.array([is_valid_timezone(name) for name in uniques], dtype=bool)
    effective = [name if ok else DEFAULT_TIMEZONE for name, ok in zip(uniques, valid, strict=True)]
    bounds = np.array([local_day_bounds(now_ns, name) for name in effective], dtype=np.int64).reshape(-1, 2)
    return valid[codes], bounds[codes, 0], bounds[codes, 1]


def _zone_days(zones: np.ndarray, now_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Per account, its local day's [start, end) at `now`, from effective zone names (one lookup per zone)."""
    if len(zones) == 1:
        start, end = local_day_bounds(now_ns, zones[0])
        return np.array([start]), np.array([end])
    uniques, codes = np.unique(zones.astype(str), return_inverse=True)
    bounds = np.array([local_day_bounds(now_ns, name) for name in uniques], dtype=np.int64).reshape(-1, 2)
    return bounds[codes, 0], bounds[codes, 1]


# ---------------------------------------------------------------- facts from the contact history


class _History(NamedTuple):
    """The contacts that count: account code, instant (UTC ns) and the masks the rules read."""

    code: np.ndarray
    at: np.ndarray
    attempt: np.ndarray
    call: np.ndarray
    sms: np.ndarray
    message: np.ndarray
    conversation: np.ndarray
    promise: np.ndarray


def _member(values: pd.Series, allowed: Sequence[str]) -> np.ndarray:
    """values in allowed, via one factorisation (fast on object columns; missing is never a member)."""
    codes, uniques = pd.factorize(values)
    return np.append(np.isin(np.asarray(uniques, dtype=object), list(allowed)), False)[codes]


def _prior_contacts(accounts: pd.DataFrame, contacts: pd.DataFrame, now_ns: int, since_ns: int) -> _History:
    """The contacts of known accounts in [since, now), as arrays.

    The time filter runs first, on int64, so that a 24-month history costs little more than a week.
    """
    ids = pd.Index(accounts["account_id"])
    if not ids.is_unique:
        raise ValueError("accounts.account_id must be unique for the contact rules")
    at = _instants_ns(contacts["contacted_at"], "contacts.contacted_at")
    keep = (at >= since_ns) & (at < now_ns)  # NaT (int64 min) is never >= since
    recent = contacts.loc[keep, ["account_id", "channel", "direction", "outcome"]]
    code = ids.get_indexer(recent["account_id"])
    known = code >= 0
    channel, outcome = recent["channel"], recent["outcome"]
    attempt = _member(recent["direction"], ("outbound",)) & _member(channel, CONTACT_CHANNELS)
    calls = _member(channel, CALL_CHANNELS)
    return _History(
        code=code[known], at=at[keep][known], attempt=attempt[known], call=(attempt & calls)[known],
        sms=(attempt & _member(channel, ("sms",)))[known],
        message=(attempt & _member(channel, MESSAGE_CHANNELS))[known],
        conversation=(calls & _member(outcome, CONVERSATION_OUTCOMES))[known],
        promise=_member(outcome, ("promise_to_pay",))[known],
    )


def _count(code: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(code[mask], minlength=n).astype(np.int64)


def _latest(code: np.ndarray, at: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Per account, the latest instant among the masked rows (NaT when none)."""
    out = np.full(n, _NAT, dtype=np.int64)
    np.maximum.at(out, code[mask], at[mask])
    return out


def _clear_at(code: np.ndarray, at: np.ndarray, n: int, limit: int, period_ns: int) -> np.ndarray:
    """Per account with `limit` or more counted rows, when enough have aged out for one more (else NaT).

    With c rows in the period the next one is allowed once c - limit + 1 of them are out: at the
    (c - limit + 1)-th oldest + the period. A limit of 0 never clears (NaT: no `until`).
    """
    out = np.full(n, _NAT, dtype=np.int64)
    counts = np.bincount(code, minlength=n)
    if limit < 1:
        return out
    order = np.lexsort((at, code))
    starts = np.searchsorted(code[order], np.arange(n))
    over = np.flatnonzero(counts >= limit)
    out[over] = at[order][starts[over] + counts[over] - limit] + period_ns
    return out


def _history_facts(history: _History, n: int, now_ns: int, day_start: np.ndarray,
                   config: RulesConfig) -> dict[str, np.ndarray]:
    """The counts and instants the history rules read, per account."""
    calls_ns, messages_ns = _days_ns(config.calls_period_days), _days_ns(config.messages_period_days)
    code, at = history.code, history.at
    today = at >= day_start[code]
    calls = history.call & (at > now_ns - calls_ns)
    messages = history.message & (at > now_ns - messages_ns)
    lookback = at > now_ns - _days_ns(config.lookback_days)
    return {
        "phone_ivr_7d": _count(code, calls, n),
        "last_conversation_at": _latest(code, at, history.conversation & lookback, n),
        "last_promise_at": _latest(code, at, history.promise & lookback, n),
        "attempts_today": _count(code, history.attempt & today, n),
        "sms_today": _count(code, history.sms & today, n),
        "messages_7d": _count(code, messages, n),
        "phone_ivr_clear_at": _clear_at(code[calls], at[calls], n, config.max_calls_7d, calls_ns),
        "messages_clear_at": _clear_at(code[messages], at[messages], n, config.max_messages_7d, messages_ns),
    }


def _no_history(n: int) -> dict[str, np.ndarray]:
    """The facts of accounts whose contact history was not sent: zero counts, no instants."""
    return {name: np.zeros(n, dtype=np.int64) for name in _COUNTS} | {
        name: np.full(n, _NAT, dtype=np.int64) for name in _INSTANTS if name != "local_day_ends_at"
    }


def rule_facts(accounts: pd.DataFrame, contacts: pd.DataFrame | None, as_of: pd.Timestamp,
               config: RulesConfig | None = None) -> pd.DataFrame:
    """Per account (same rows and index as `accounts`), what the rules need from contacts before `as_of`.

    phone_ivr_7d: outbound phone + ivr attempts in the trailing calls period (7 days);
    last_conversation_at and last_promise_at (NaT when none in the longest rule period: older ones
    cannot matter); attempts_today and sms_today: outbound attempts (all channels) and sms on the local
    calendar day of `as_of`; messages_7d: outbound sms + email in the trailing messages period;
    history_known: False when `contacts` is None (the history was not sent); tz_valid; and, for the
    `until` of the answers, local_day_ends_at, phone_ivr_clear_at and messages_clear_at. `config`
    (default: params.yaml) gives the periods and limits; pass `evaluate` the same one.
    """
    config = config if config is not None else _default_config()
    now_ns, n = _instant_ns(as_of), len(accounts)
    tz_valid, day_start, day_end = _local_days(accounts["timezone"], now_ns)
    if contacts is None:
        values = _no_history(n)
    else:
        since_ns = min(now_ns - _days_ns(config.lookback_days), int(day_start.min(initial=now_ns)))
        history = _prior_contacts(accounts, contacts, now_ns, since_ns)
        values = _history_facts(history, n, now_ns, day_start, config)
    values |= {"local_day_ends_at": day_end, "history_known": np.full(n, contacts is not None),
               "tz_valid": tz_valid}
    columns = {name: _as_utc(values[name]) if name in _INSTANTS else values[name] for name in FACT_COLUMNS}
    return pd.DataFrame(columns, index=accounts.index)


def prepared_facts(prep, as_of: pd.Timestamp, config: RulesConfig, history_known: np.ndarray) -> dict[str, np.ndarray]:
    """`rule_facts` from a features.Prepared (the scoring path, batch and API alike): the same numbers as
    arrays (instants as int64 UTC ns), read from the prepared contact codes; `history_known` False marks
    the accounts whose contact history was not sent."""
    now_ns, n = _instant_ns(as_of), prep.n
    day_start, day_end = _zone_days(prep.zone, now_ns)
    since_ns = min(now_ns - _days_ns(config.lookback_days), int(day_start.min(initial=now_ns)))
    keep = (prep.con_at >= since_ns) & (prep.con_at < now_ns)
    channel, outcome = prep.con_channel[keep], prep.con_outcome[keep]
    codes = {name: CHANNELS.index(name) for name in CHANNELS}
    attempt = prep.con_outbound[keep] & (channel != codes["none"])
    calls = is_one_of(channel, CALL_CHANNELS, CHANNELS)
    history = _History(
        code=prep.con_acc[keep], at=prep.con_at[keep], attempt=attempt, call=attempt & calls,
        sms=attempt & (channel == codes["sms"]),
        message=attempt & is_one_of(channel, MESSAGE_CHANNELS, CHANNELS),
        conversation=calls & is_one_of(outcome, CONVERSATION_OUTCOMES, OUTCOMES),
        promise=outcome == OUTCOMES.index("promise_to_pay"),
    )
    values = _history_facts(history, n, now_ns, day_start, config)
    unknown = ~history_known
    if unknown.any():
        for name, empty in _no_history(n).items():
            values[name] = np.where(unknown, empty, values[name])
    return values | {"local_day_ends_at": day_end, "history_known": history_known, "tz_valid": prep.tz_valid}


# ---------------------------------------------------------------- evaluation


@dataclass
class RuleResult:
    """What the rules allow, per account (rows in the order of `accounts`)."""

    channel_allowed: np.ndarray  # (n, 5) bool over vocab.CONTACT_CHANNELS
    offer_allowed: np.ndarray  # (n, 5) bool over OFFER_CHOICES
    suppress_all: np.ndarray  # (n,) bool: no contact at all
    require_human: np.ndarray  # (n,) bool: a person must decide
    not_before: np.ndarray  # (n,) datetime64[ns], UTC: earliest instant a contact may be made
    blocked: list[list[dict]]  # per account: {"action", "rule", "until"} in RULE_IDS order
    held_by: list[list[str]]  # per account: the rule ids that fired, in RULE_IDS order
    evaluated: tuple[str, ...]  # every rule id evaluated


class _Entry(NamedTuple):
    """One rule acting on one action for the accounts in `fired`.

    `until` (int64 UTC ns, NaT = no end) also defers `not_before` when the action is "all";
    `removes` takes the action out of the allowed masks; `suppresses` / `human` feed the two flags.
    """

    rule: str
    action: str
    fired: np.ndarray
    until: np.ndarray | None = None
    removes: bool = True
    suppresses: bool = False
    human: bool = False


class _Facts(NamedTuple):
    """The facts frame as arrays (int64 ns for instants)."""

    known: np.ndarray
    tz_valid: np.ndarray
    counts: dict[str, np.ndarray]
    instants: dict[str, np.ndarray]

    @classmethod
    def from_arrays(cls, facts: Mapping[str, np.ndarray]) -> _Facts:
        """Read `prepared_facts` (instants already int64 ns)."""
        return cls(known=facts["history_known"], tz_valid=facts["tz_valid"],
                   counts={name: facts[name] for name in _COUNTS}, instants={name: facts[name] for name in _INSTANTS})

    @classmethod
    def from_frame(cls, facts: pd.DataFrame) -> _Facts:
        """Read a `rule_facts` frame (a missing column is a KeyError naming it)."""
        return cls(
            known=facts["history_known"].to_numpy(dtype=bool),
            tz_valid=facts["tz_valid"].to_numpy(dtype=bool),
            counts={name: facts[name].to_numpy(dtype=np.int64) for name in _COUNTS},
            instants={name: _instants_ns(facts[name], f"facts.{name}") for name in _INSTANTS},
        )


def _flag(accounts: pd.DataFrame, column: str, missing: bool) -> np.ndarray:
    """A boolean contract column as an array; a missing value reads as `missing` (the safe side)."""
    if column not in accounts:
        raise ValueError(f"accounts.{column} is required by the contact rules")
    values = accounts[column]
    if values.dtype == bool:
        return values.to_numpy()
    return np.asarray(values.astype(object).where(values.notna(), missing), dtype=bool)


def _where(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.where(mask, values, _NAT)


def account_flags(accounts: pd.DataFrame) -> dict[str, np.ndarray]:
    """The yes/no columns the rules read, as bool arrays; a missing hold reads as set, a missing consent
    as refused (the safe side)."""
    return {column: _flag(accounts, column, not column.startswith("consent_")) for column in FLAG_COLUMNS}


def _account_entries(flags: Mapping[str, np.ndarray]) -> list[_Entry]:
    """R-CEASE, R-REPRESENTED, R-INSOLVENCY, R-DISPUTE, R-VULNERABLE, R-CONSENT: flags of the account."""
    entries = [_Entry(rule, "all", flags[column], suppresses=True) for rule, column in LEGAL_HOLDS.items()]
    entries.append(_Entry("R-DISPUTE", "all", flags["dispute_open"], suppresses=True, human=True))
    limited_offers = tuple(offer for offer in OFFER_CHOICES if offer not in VULNERABLE_OFFERS)
    entries += [_Entry("R-VULNERABLE", action, flags["vulnerable"], human=True)
                for action in (*VULNERABLE_CHANNELS, *limited_offers)]
    entries += [_Entry("R-CONSENT", channel, ~flags[CONSENT_COLUMN[channel]])
                for channel in CONTACT_CHANNELS if channel in CONSENT_COLUMN]
    if (contested := flags.get(CONTESTED)) is not None:  # not a contract column: the decision log says so
        entries.append(_Entry("R-CONTESTED", "all", np.asarray(contested, dtype=bool), human=True))
    return entries


def _recent_entries(facts: _Facts, now_ns: int, config: RulesConfig) -> list[_Entry]:
    """R-PROMISE and R-AFTER-CONVERSATION: an event in the last N days holds until N days after it."""
    promise = facts.instants["last_promise_at"]
    quiet = facts.known & (promise > now_ns - _days_ns(config.promise_quiet_days))
    talked = facts.instants["last_conversation_at"]
    recent = facts.known & (talked > now_ns - _days_ns(config.after_conversation_days))
    talked_until = _where(recent, talked + _days_ns(config.after_conversation_days))
    return [
        _Entry("R-PROMISE", "all", quiet, _where(quiet, promise + _days_ns(config.promise_quiet_days)),
               suppresses=True),
        *(_Entry("R-AFTER-CONVERSATION", channel, recent, talked_until) for channel in CALL_CHANNELS),
    ]


def _count_entries(facts: _Facts, config: RulesConfig) -> list[_Entry]:
    """R-CALLS-7IN7, R-DAILY, R-MESSAGES: the next attempt would exceed a limit."""
    counts, instants, known = facts.counts, facts.instants, facts.known
    calls = known & (counts["phone_ivr_7d"] >= config.max_calls_7d)
    daily = known & (counts["attempts_today"] >= config.max_attempts_per_day)
    sms_day = known & (counts["sms_today"] >= config.max_sms_per_day)
    weekly = known & (counts["messages_7d"] >= config.max_messages_7d)
    day_end, messages_clear = instants["local_day_ends_at"], instants["messages_clear_at"]
    return [
        *(_Entry("R-CALLS-7IN7", channel, calls, _where(calls, instants["phone_ivr_clear_at"]))
          for channel in CALL_CHANNELS),
        _Entry("R-DAILY", "all", daily, _where(daily, day_end), removes=False),
        _Entry("R-MESSAGES", "sms", sms_day | weekly,
               _latest_until((sms_day, day_end), (weekly, messages_clear))),
        _Entry("R-MESSAGES", "email", weekly, _where(weekly, messages_clear)),
    ]


def _latest_until(*parts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The latest `until` among the parts that fired; NaT (no end) when any fired part has none."""
    out = np.full(len(parts[0][0]), _NAT, dtype=np.int64)
    open_ended = np.zeros(len(out), dtype=bool)
    for mask, until in parts:
        out = np.where(mask, np.maximum(out, until), out)
        open_ended |= mask & (until == _NAT)
    return np.where(open_ended, _NAT, out)


def _fail_closed_entries(facts: _Facts, proposed_legal: np.ndarray) -> list[_Entry]:
    """R-LEGAL for a proposed legal_review; R-TIME-ZONE; every history rule when the history is missing."""
    unknown = ~facts.known
    history_actions = {
        "R-PROMISE": ("all",), "R-CALLS-7IN7": CALL_CHANNELS, "R-AFTER-CONVERSATION": CALL_CHANNELS,
        "R-DAILY": ("all",), "R-MESSAGES": MESSAGE_CHANNELS,
    }
    return [
        *(_Entry(rule, action, unknown, human=True)
          for rule, actions in history_actions.items() for action in actions),
        _Entry("R-LEGAL", "legal_review", proposed_legal, human=True),
        _Entry("R-TIME-ZONE", "all", ~facts.tz_valid, human=True),
    ]


def _proposed_legal(proposed_offer: np.ndarray | Sequence | None, n: int) -> np.ndarray:
    """Which accounts the policy proposes legal_review for (none when nothing is proposed)."""
    if proposed_offer is None:
        return np.zeros(n, dtype=bool)
    proposed = np.asarray(proposed_offer, dtype=object).reshape(-1)
    if len(proposed) != n:
        raise ValueError(f"proposed_offer has {len(proposed)} values for {n} accounts")
    return np.array([offer == "legal_review" for offer in proposed.tolist()], dtype=bool)


def _masks(entries: list[_Entry], n: int, now_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """channel_allowed, offer_allowed and not_before (int64 ns) from the entries."""
    channels = np.ones((n, len(CONTACT_CHANNELS)), dtype=bool)
    offers = np.ones((n, len(OFFER_CHOICES)), dtype=bool)
    offers[:, OFFER_CHOICES.index("legal_review")] = False  # R-LEGAL: never chosen automatically
    not_before = np.full(n, now_ns, dtype=np.int64)
    for entry in entries:
        if entry.removes and entry.action == "all":
            channels[entry.fired] = False
            offers[entry.fired] = False
        elif entry.removes and entry.action in CONTACT_CHANNELS:
            channels[entry.fired, CONTACT_CHANNELS.index(entry.action)] = False
        elif entry.removes:
            offers[entry.fired, OFFER_CHOICES.index(entry.action)] = False
        if entry.action == "all" and entry.until is not None:
            not_before = np.where(entry.fired, np.maximum(not_before, entry.until), not_before)
    return channels, offers, not_before


def _iso_utc(values_ns: np.ndarray) -> list[str | None]:
    """UTC ISO 8601 strings, rounded up to the second (never earlier than the instant); NaT -> None."""
    out: list[str | None] = [None] * len(values_ns)
    known = np.flatnonzero(values_ns != _NAT)
    seconds = -(-values_ns[known] // _NS_PER_SECOND)
    texts = np.datetime_as_string(seconds.astype("M8[s]"), unit="s")
    for position, text in zip(known.tolist(), texts.tolist(), strict=True):
        out[position] = text + "+00:00"
    return out


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building millions of small, acyclic dicts and lists.

    Each allocation burst otherwise triggers full collections that walk every object built so far
    (3x the cost on a million accounts). The collector is restored only if it was on.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _explanations(entries: list[_Entry], n: int) -> tuple[list[list[dict]], list[list[str]]]:
    """blocked and held_by per account, in RULE_IDS order (the one loop: over fired accounts only)."""
    with _gc_paused():
        blocked: list[list[dict]] = [[] for _ in range(n)]
        held_by: list[list[str]] = [[] for _ in range(n)]
        for entry in entries:
            rows = np.flatnonzero(entry.fired)
            untils = _iso_utc(entry.until[rows]) if entry.until is not None else [None] * len(rows)
            for row, until in zip(rows.tolist(), untils, strict=True):
                blocked[row].append({"action": entry.action, "rule": entry.rule, "until": until})
        for rule in RULE_IDS:
            masks = [entry.fired for entry in entries if entry.rule == rule]
            for row in np.flatnonzero(np.logical_or.reduce(masks)).tolist() if masks else ():
                held_by[row].append(rule)
    return blocked, held_by


def evaluate(accounts: pd.DataFrame, facts: pd.DataFrame, as_of: pd.Timestamp, config: RulesConfig,
             proposed_offer: np.ndarray | None = None) -> RuleResult:
    """Apply every rule of COMPLIANCE.md to all accounts at once (facts from `rule_facts`, same config).

    `proposed_offer` (optional, one offer name per account) is what the policy would offer; a proposed
    legal_review fires R-LEGAL. The answer can only remove, defer or hand to a person.
    """
    if len(facts) != len(accounts):
        raise ValueError(f"facts has {len(facts)} rows for {len(accounts)} accounts")
    return evaluate_arrays(account_flags(accounts), _Facts.from_frame(facts), as_of, config, proposed_offer)


def evaluate_arrays(flags: Mapping[str, np.ndarray], facts: _Facts | Mapping[str, np.ndarray], as_of: pd.Timestamp,
                    config: RulesConfig, proposed_offer: np.ndarray | None = None) -> RuleResult:
    """`evaluate` on arrays: `flags` from `account_flags` (or features.Prepared), facts from `prepared_facts`."""
    arrays = facts if isinstance(facts, _Facts) else _Facts.from_arrays(facts)
    n, now_ns = len(arrays.known), _instant_ns(as_of)
    proposed_legal = _proposed_legal(proposed_offer, n)
    entries = [*_account_entries(flags), *_recent_entries(arrays, now_ns, config),
               *_count_entries(arrays, config), *_fail_closed_entries(arrays, proposed_legal)]
    entries.sort(key=lambda entry: RULE_IDS.index(entry.rule))  # stable: creation order within a rule
    channels, offers, not_before = _masks(entries, n, now_ns)
    blocked, held_by = _explanations(entries, n)
    none = np.zeros(n, dtype=bool)
    return RuleResult(
        channel_allowed=channels, offer_allowed=offers,
        suppress_all=np.logical_or.reduce([none, *(e.fired for e in entries if e.suppresses)]),
        require_human=np.logical_or.reduce([none, *(e.fired for e in entries if e.human)]),
        not_before=not_before.view("M8[ns]"), blocked=blocked, held_by=held_by, evaluated=RULE_IDS,
    )


# ---------------------------------------------------------------- R-HOURS: the contact window


def _find_window(name: str, windows: Mapping[str, Window] | Sequence[Window]) -> Window:
    """The window called `name` among `windows` (a parse_windows tuple or a name -> Window mapping)."""
    candidates = windows.values() if isinstance(windows, Mapping) else windows
    for window in candidates:
        if window.name == name:
            return window
    raise ValueError(f"unknown contact window {name!r}")


def contact_window(
    window: str, not_before: pd.Timestamp, timezone: str | None, config: RulesConfig,
    windows: Mapping[str, Window] | Sequence[Window],
) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """R-HOURS: the next `window` at or after `not_before`, in the account's local time, inside the hours.

    Returns tz-aware [start, end) in the account's zone (they serialise with its local offset), or None
    when impossible: an invalid zone (fail closed) or a window with no allowed minute in the horizon.
    """
    tz = zone(timezone)
    if tz is None:
        return None
    earliest = pd.Timestamp(not_before).tz_convert(tz)
    found = next_window(earliest.tz_localize(None), _find_window(window, windows), config.hours)
    if found is None:
        return None
    start, end = (moment.tz_localize(tz, ambiguous=True, nonexistent="shift_forward") for moment in found)
    start = max(start, earliest)  # a repeated local hour must not move the start before not_before
    return (start, end) if start < end else None
