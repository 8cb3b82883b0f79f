"""The contact rules of COMPLIANCE.md: every boundary on both sides, fail-closed cases and monotonicity."""

from __future__ import annotations

import os
from datetime import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.calendar import Window, parse_windows, within_hours
from models.config import load_params
from models.rules import (
    OFFER_CHOICES,
    RULE_IDS,
    RulesConfig,
    contact_window,
    evaluate,
    rule_facts,
)
from models.vocab import CHANNELS, CONTACT_CHANNELS, DIRECTIONS, OUTCOMES

PARAMS = load_params()
CONFIG = RulesConfig.from_params(PARAMS["rules"])
WINDOWS = parse_windows(PARAMS["calendar"])
AS_OF = pd.Timestamp("2026-11-04T12:00:00+09:00")  # a Wednesday, noon in Tokyo
CH = {channel: i for i, channel in enumerate(CONTACT_CHANNELS)}
OF = {offer: i for i, offer in enumerate(OFFER_CHOICES)}
HISTORY_RULES = {"R-PROMISE", "R-CALLS-7IN7", "R-AFTER-CONVERSATION", "R-DAILY", "R-MESSAGES"}
FLAGS = ("do_not_contact", "dispute_open", "legal_representative", "bankruptcy", "vulnerable")
CONSENTS = ("consent_phone", "consent_sms", "consent_email")


def accounts_frame(*rows: dict) -> pd.DataFrame:
    """Accounts with every consent given and no flag set, then each row's overrides."""
    base = {"timezone": "Asia/Tokyo", **dict.fromkeys(CONSENTS, True), **dict.fromkeys(FLAGS, False)}
    records = [{"account_id": f"A{i}", **base, **row} for i, row in enumerate(rows or ({},))]
    frame = pd.DataFrame.from_records(records)
    return frame.astype({"account_id": object, "timezone": object})


def contacts_frame(*rows: tuple) -> pd.DataFrame:
    """Contacts from (account_id, contacted_at, channel, direction, outcome), as the reader gives them."""
    columns = ["account_id", "contacted_at", "channel", "direction", "outcome"]
    frame = pd.DataFrame.from_records(list(rows), columns=columns)
    frame.insert(0, "contact_id", [f"C{i}" for i in range(len(frame))])
    frame["contacted_at"] = pd.to_datetime(frame["contacted_at"], utc=True).astype("datetime64[ns, UTC]")
    text = ["contact_id", "account_id", "channel", "direction", "outcome"]
    return frame.astype(dict.fromkeys(text, object))


def call(at: pd.Timestamp, outcome: str = "no_answer", channel: str = "phone", account: str = "A0",
         direction: str = "outbound") -> tuple:
    return (account, at, channel, direction, outcome)


def run(accounts: pd.DataFrame, contacts: pd.DataFrame | None, as_of: pd.Timestamp = AS_OF,
        proposed=None, config: RulesConfig = CONFIG):
    facts = rule_facts(accounts, contacts, as_of, config)
    return facts, evaluate(accounts, facts, as_of, config, proposed)


def nothing() -> pd.DataFrame:
    return contacts_frame()


def utc_iso(moment: pd.Timestamp) -> str:
    return moment.tz_convert("UTC").isoformat()


def not_before(result, row: int = 0) -> pd.Timestamp:
    return pd.Timestamp(result.not_before[row]).tz_localize("UTC")


def entries(result, rule: str, row: int = 0) -> list[dict]:
    return [entry for entry in result.blocked[row] if entry["rule"] == rule]


# ---------------------------------------------------------------- configuration


def test_params_hold_the_compliance_defaults():
    assert CONFIG.hours == (time(8, 0), time(21, 0))
    assert (CONFIG.max_calls_7d, CONFIG.max_attempts_per_day) == (7, 3)
    assert (CONFIG.max_sms_per_day, CONFIG.max_messages_7d) == (1, 3)
    assert (CONFIG.promise_quiet_days, CONFIG.after_conversation_days) == (7, 7)
    assert (CONFIG.calls_period_days, CONFIG.messages_period_days) == (7, 7)
    assert CONFIG.profile == "jp"


def test_rule_ids_are_the_fourteen_of_compliance_in_order_then_the_contracts_contest():
    assert RULE_IDS == (
        "R-CEASE", "R-REPRESENTED", "R-INSOLVENCY", "R-DISPUTE", "R-VULNERABLE", "R-CONSENT", "R-HOURS",
        "R-PROMISE", "R-CALLS-7IN7", "R-AFTER-CONVERSATION", "R-DAILY", "R-MESSAGES", "R-LEGAL",
        "R-TIME-ZONE", "R-CONTESTED",
    )


def test_profile_overrides_only_its_own_keys():
    params = {**PARAMS["rules"], "profiles": {"jp": {}, "us": {"max_calls_7d": 5, "hours": {"end": "20:00"}}}}
    us = RulesConfig.from_params(params, profile="us")
    assert (us.profile, us.max_calls_7d, us.hours) == ("us", 5, (time(8, 0), time(20, 0)))
    assert us.max_attempts_per_day == CONFIG.max_attempts_per_day
    assert RulesConfig.from_params(params).max_calls_7d == 7


@pytest.mark.parametrize("change", [
    {"profile": "mars"},
    {"profiles": {"jp": {"max_calls_per_week": 3}}},
    {"max_calls_7d": -1},
    {"promise_quiet_days": 0},
    {"hours": {"start": "21:00", "end": "08:00"}},
])
def test_rejects_a_policy_that_cannot_be_meant(change):
    with pytest.raises(ValueError):
        RulesConfig.from_params({**PARAMS["rules"], **change})


def test_rule_facts_reads_params_when_no_config_is_given():
    accounts = accounts_frame()
    calls = contacts_frame(*(call(AS_OF - pd.Timedelta(hours=h)) for h in range(1, 4)))
    assert rule_facts(accounts, calls, AS_OF).equals(rule_facts(accounts, calls, AS_OF, CONFIG))


# ---------------------------------------------------------------- a clean account


def test_clean_account_is_allowed_everything_but_legal_review_now():
    _, result = run(accounts_frame(), nothing())
    assert result.channel_allowed.all()
    assert result.offer_allowed[0].tolist() == [offer != "legal_review" for offer in OFFER_CHOICES]
    assert not result.suppress_all[0] and not result.require_human[0]
    assert (result.blocked, result.held_by) == ([[]], [[]])
    assert not_before(result) == AS_OF
    assert result.evaluated == RULE_IDS


# ---------------------------------------------------------------- R-HOURS


def window(name: str, at: str, tz: str | None = "Asia/Tokyo", config: RulesConfig = CONFIG):
    return contact_window(name, pd.Timestamp(at), tz, config, WINDOWS)


def test_2059_local_is_inside_the_hours():
    assert within_hours(pd.Timestamp("2026-11-04 20:59"), CONFIG.hours)
    start, end = window("weekday_evening", "2026-11-04T20:59:00+09:00")
    assert start == pd.Timestamp("2026-11-04T20:59:00+09:00")
    assert end == pd.Timestamp("2026-11-04T21:00:00+09:00")


def test_2100_local_is_outside_the_hours_and_defers_to_the_next_window():
    assert not within_hours(pd.Timestamp("2026-11-04 21:00"), CONFIG.hours)
    start, _ = window("weekday_evening", "2026-11-04T21:00:00+09:00")
    assert start == pd.Timestamp("2026-11-05T17:00:00+09:00")


def test_0759_local_is_outside_the_hours_and_defers_to_0800():
    assert not within_hours(pd.Timestamp("2026-11-04 07:59"), CONFIG.hours)
    start, _ = window("weekday_morning", "2026-11-04T07:59:00+09:00")
    assert start == pd.Timestamp("2026-11-04T08:00:00+09:00")


def test_0800_local_is_inside_the_hours():
    assert within_hours(pd.Timestamp("2026-11-04 08:00"), CONFIG.hours)
    start, _ = window("weekday_morning", "2026-11-04T08:00:00+09:00")
    assert start == pd.Timestamp("2026-11-04T08:00:00+09:00")


def test_window_is_clipped_to_narrower_allowed_hours():
    narrow = RulesConfig.from_params({**PARAMS["rules"], "hours": {"start": "09:30", "end": "20:00"}})
    morning = window("weekday_morning", "2026-11-04T06:00:00+09:00", config=narrow)
    evening = window("weekday_evening", "2026-11-04T06:00:00+09:00", config=narrow)
    assert morning[0] == pd.Timestamp("2026-11-04T09:30:00+09:00")
    assert evening[1] == pd.Timestamp("2026-11-04T20:00:00+09:00")


def test_window_carries_the_accounts_local_offset():
    start, end = window("weekday_morning", "2026-11-04T12:00:00+00:00", tz="America/New_York")  # 07:00 EST
    assert start.isoformat() == "2026-11-04T08:00:00-05:00"
    assert end.isoformat() == "2026-11-04T12:00:00-05:00"


def test_missing_zone_means_tokyo_and_an_invalid_one_has_no_window():
    assert window("weekday_morning", "2026-11-04T07:00:00+09:00", tz=None)[0].isoformat() == \
        "2026-11-04T08:00:00+09:00"
    assert window("weekday_morning", "2026-11-04T07:00:00+09:00", tz="Mars/Olympus_Mons") is None


def test_window_never_starts_before_not_before_in_a_repeated_hour():
    night = Window("night", weekend=True, start=time(0, 0), end=time(12, 0))
    all_day = RulesConfig.from_params({**PARAMS["rules"], "hours": {"start": "00:00", "end": "21:00"}})
    second_0130 = pd.Timestamp("2026-11-01T01:30:00-05:00")  # New York repeats 01:00-02:00 that night
    start, _ = contact_window("night", second_0130, "America/New_York", all_day, (night,))
    assert start == second_0130


def test_unknown_window_name_is_an_error():
    with pytest.raises(ValueError, match="unknown contact window"):
        window("midnight_special", "2026-11-04T07:00:00+09:00")


@settings(max_examples=150, deadline=None)
@given(
    minutes=st.integers(0, 60 * 24 * 30),
    tz=st.sampled_from(["Asia/Tokyo", "America/New_York", "America/Los_Angeles", "Europe/London", None]),
    name=st.sampled_from([w.name for w in WINDOWS]),
)
def test_contact_window_lies_inside_its_window_and_the_hours(minutes, tz, name):
    earliest = pd.Timestamp("2026-10-20T00:00:00+00:00") + pd.Timedelta(minutes=minutes)
    found = contact_window(name, earliest, tz, CONFIG, WINDOWS)
    assert found is not None
    start, end = found
    spec = next(w for w in WINDOWS if w.name == name)
    zone_name = tz or "Asia/Tokyo"
    assert str(start.tz) == str(end.tz) == zone_name
    assert earliest <= start < end
    assert spec.contains(start) and start.date() == end.date()
    assert within_hours(start, CONFIG.hours) and end.time() <= min(spec.end, CONFIG.hours[1])


# ---------------------------------------------------------------- legal holds, dispute, consent, vulnerable


@pytest.mark.parametrize("rule, column", [
    ("R-CEASE", "do_not_contact"), ("R-REPRESENTED", "legal_representative"), ("R-INSOLVENCY", "bankruptcy"),
])
def test_each_legal_hold_suppresses_all_and_names_itself(rule, column):
    _, result = run(accounts_frame({column: True}), nothing())
    assert result.suppress_all[0]
    assert not result.channel_allowed[0].any() and not result.offer_allowed[0].any()
    assert {"action": "all", "rule": rule, "until": None} in result.blocked[0]
    assert result.held_by[0] == [rule]


def test_a_legal_hold_read_as_missing_counts_as_set():
    accounts = accounts_frame({}).astype({"bankruptcy": object})
    accounts.loc[0, "bankruptcy"] = None
    _, result = run(accounts, nothing())
    assert result.suppress_all[0] and result.held_by[0] == ["R-INSOLVENCY"]


def test_open_dispute_suppresses_contact_and_needs_a_person():
    _, result = run(accounts_frame({"dispute_open": True}), nothing())
    assert result.suppress_all[0] and result.require_human[0]
    assert not result.channel_allowed[0].any()
    assert entries(result, "R-DISPUTE") == [{"action": "all", "rule": "R-DISPUTE", "until": None}]


@pytest.mark.parametrize("column, blocked", [
    ("consent_phone", {"phone", "ivr"}), ("consent_sms", {"sms"}), ("consent_email", {"email"}),
])
def test_missing_consent_blocks_only_its_channels(column, blocked):
    _, result = run(accounts_frame({column: False}), nothing())
    allowed = {channel for channel in CONTACT_CHANNELS if result.channel_allowed[0, CH[channel]]}
    assert allowed == set(CONTACT_CHANNELS) - blocked
    assert {entry["action"] for entry in entries(result, "R-CONSENT")} == blocked
    assert not result.suppress_all[0] and not result.require_human[0]


def test_letters_need_no_consent():
    _, result = run(accounts_frame(dict.fromkeys(CONSENTS, False)), nothing())
    assert result.channel_allowed[0].tolist() == [channel == "letter" for channel in CONTACT_CHANNELS]


def test_vulnerable_customer_goes_to_a_person_with_limited_channels_and_offers():
    _, result = run(accounts_frame({"vulnerable": True}), nothing())
    assert result.require_human[0] and not result.suppress_all[0]
    allowed = {channel for channel in CONTACT_CHANNELS if result.channel_allowed[0, CH[channel]]}
    offers = {offer for offer in OFFER_CHOICES if result.offer_allowed[0, OF[offer]]}
    assert (allowed, offers) == ({"phone", "letter"}, {"instalment_plan", "hardship_referral"})
    assert result.held_by[0] == ["R-VULNERABLE"]


# ---------------------------------------------------------------- R-CALLS-7IN7


def calls_before(count: int, hours_apart: float = 20.0) -> list[tuple]:
    """`count` unanswered outbound calls (phone and ivr alternating), the latest an hour before AS_OF."""
    return [call(AS_OF - pd.Timedelta(hours=1 + k * hours_apart), channel=("phone", "ivr")[k % 2])
            for k in range(count)]


def test_seventh_call_in_seven_days_is_allowed():
    facts, result = run(accounts_frame(), contacts_frame(*calls_before(6)))
    assert facts["phone_ivr_7d"].iloc[0] == 6
    assert result.channel_allowed[0, CH["phone"]] and result.channel_allowed[0, CH["ivr"]]
    assert "R-CALLS-7IN7" not in result.held_by[0]


def test_eighth_call_in_seven_days_is_blocked_until_the_oldest_ages_out():
    calls = calls_before(7)
    _, result = run(accounts_frame(), contacts_frame(*calls))
    assert not result.channel_allowed[0, CH["phone"]] and not result.channel_allowed[0, CH["ivr"]]
    assert result.channel_allowed[0, CH["sms"]] and result.channel_allowed[0, CH["letter"]]
    oldest = min(row[1] for row in calls)
    until = utc_iso(oldest + pd.Timedelta(days=7))
    assert entries(result, "R-CALLS-7IN7") == [
        {"action": "phone", "rule": "R-CALLS-7IN7", "until": until},
        {"action": "ivr", "rule": "R-CALLS-7IN7", "until": until},
    ]


def test_ninth_call_waits_until_three_calls_have_aged_out():
    calls = calls_before(9, hours_apart=12)
    _, result = run(accounts_frame(), contacts_frame(*calls))
    third_oldest = sorted(row[1] for row in calls)[2]
    assert entries(result, "R-CALLS-7IN7")[0]["until"] == utc_iso(third_oldest + pd.Timedelta(days=7))


def test_call_exactly_seven_days_old_no_longer_counts():
    calls = [*calls_before(6), call(AS_OF - pd.Timedelta(days=7))]
    facts, result = run(accounts_frame(), contacts_frame(*calls))
    assert facts["phone_ivr_7d"].iloc[0] == 6
    assert result.channel_allowed[0, CH["phone"]]


def test_inbound_calls_and_hold_outs_are_not_attempts():
    extra = [call(AS_OF - pd.Timedelta(hours=2), direction="inbound"),
             ("A0", AS_OF - pd.Timedelta(hours=3), "none", "outbound", "held_out")]
    facts, result = run(accounts_frame(), contacts_frame(*calls_before(6), *extra))
    assert facts["phone_ivr_7d"].iloc[0] == 6 and result.channel_allowed[0, CH["phone"]]


# ---------------------------------------------------------------- R-AFTER-CONVERSATION


def test_conversation_6d23h_ago_blocks_phone_and_ivr_for_seven_days():
    talked = AS_OF - pd.Timedelta(days=6, hours=23)
    _, result = run(accounts_frame(), contacts_frame(call(talked, outcome="refused")))
    assert not result.channel_allowed[0, CH["phone"]] and not result.channel_allowed[0, CH["ivr"]]
    assert result.channel_allowed[0, CH["sms"]]
    until = utc_iso(talked + pd.Timedelta(days=7))
    assert [e["until"] for e in entries(result, "R-AFTER-CONVERSATION")] == [until, until]


# facts that reach further back than 7 days: the 7-day rules must still stop at 7 days
LONG_LOOKBACK = RulesConfig.from_params({**PARAMS["rules"], "calls_period_days": 10})


@pytest.mark.parametrize("config", [CONFIG, LONG_LOOKBACK], ids=["default", "long-lookback"])
def test_conversation_seven_days_ago_no_longer_blocks(config):
    talked = call(AS_OF - pd.Timedelta(days=7), outcome="reached", channel="ivr")
    _, result = run(accounts_frame(), contacts_frame(talked), config=config)
    assert result.channel_allowed[0].all()
    assert result.held_by[0] == []


def test_an_inbound_conversation_counts_too():
    talked = call(AS_OF - pd.Timedelta(days=1), outcome="reached", direction="inbound")
    _, result = run(accounts_frame(), contacts_frame(talked))
    assert not result.channel_allowed[0, CH["phone"]]


# ---------------------------------------------------------------- R-PROMISE


def test_promise_6d23h_ago_suppresses_contact_until_seven_days_after_it():
    promised = AS_OF - pd.Timedelta(days=6, hours=23)
    _, result = run(accounts_frame(), contacts_frame(call(promised, outcome="promise_to_pay")))
    assert result.suppress_all[0] and not result.channel_allowed[0].any()
    assert not_before(result) == promised + pd.Timedelta(days=7)
    until = utc_iso(promised + pd.Timedelta(days=7))
    assert entries(result, "R-PROMISE") == [{"action": "all", "rule": "R-PROMISE", "until": until}]


@pytest.mark.parametrize("config", [CONFIG, LONG_LOOKBACK], ids=["default", "long-lookback"])
def test_promise_seven_days_ago_no_longer_suppresses(config):
    promised = AS_OF - pd.Timedelta(days=7)
    contacts = contacts_frame(call(promised, outcome="promise_to_pay", channel="sms"))
    _, result = run(accounts_frame(), contacts, config=config)
    assert not result.suppress_all[0] and result.channel_allowed[0].all()
    assert not_before(result) == AS_OF


# ---------------------------------------------------------------- R-DAILY


def attempts_today(count: int, account: str = "A0") -> list[tuple]:
    """`count` outbound letters and e-mails earlier today in Tokyo (after 09:00 JST)."""
    return [call(AS_OF - pd.Timedelta(hours=1 + k), channel=("letter", "email")[k % 2], outcome="delivered",
                 account=account) for k in range(count)]


def test_third_attempt_of_the_local_day_is_made_now():
    facts, result = run(accounts_frame(), contacts_frame(*attempts_today(2)))
    assert facts["attempts_today"].iloc[0] == 2
    assert not_before(result) == AS_OF and "R-DAILY" not in result.held_by[0]


def test_fourth_attempt_of_the_local_day_defers_to_the_next_local_midnight():
    _, result = run(accounts_frame(), contacts_frame(*attempts_today(3)))
    midnight = pd.Timestamp("2026-11-05T00:00:00+09:00")
    assert not_before(result) == midnight
    assert entries(result, "R-DAILY") == [{"action": "all", "rule": "R-DAILY", "until": utc_iso(midnight)}]
    assert result.channel_allowed[0, CH["phone"]] and not result.suppress_all[0]
    start, _ = contact_window("weekday_morning", not_before(result), "Asia/Tokyo", CONFIG, WINDOWS)
    assert start == pd.Timestamp("2026-11-05T08:00:00+09:00")


def test_local_day_counts_in_the_accounts_zone():
    as_of = pd.Timestamp("2026-11-04T10:00:00-05:00")  # 15:00 UTC
    yesterday = pd.Timestamp("2026-11-03T23:30:00-05:00")  # 04:30 UTC: the same UTC day as as_of
    today = pd.Timestamp("2026-11-04T00:30:00-05:00")
    accounts = accounts_frame({"timezone": "America/New_York"}, {"timezone": "America/New_York"})
    contacts = contacts_frame(*(call(yesterday + pd.Timedelta(minutes=k), account="A0") for k in range(3)),
                              *(call(today + pd.Timedelta(minutes=k), account="A1") for k in range(3)))
    facts, result = run(accounts, contacts, as_of=as_of)
    assert facts["attempts_today"].tolist() == [0, 3]
    assert not_before(result, 0) == as_of
    assert not_before(result, 1) == pd.Timestamp("2026-11-05T00:00:00-05:00")


def test_local_day_spans_a_dst_change():
    as_of = pd.Timestamp("2026-11-01T10:00:00-05:00")  # New York falls back at 02:00 that morning
    early = pd.Timestamp("2026-11-01T00:30:00-04:00")
    accounts = accounts_frame({"timezone": "America/New_York"})
    facts, _ = run(accounts, contacts_frame(call(early), call(as_of - pd.Timedelta(days=1))), as_of=as_of)
    assert facts["attempts_today"].iloc[0] == 1
    assert facts["local_day_ends_at"].iloc[0] == pd.Timestamp("2026-11-02T00:00:00-05:00")


# ---------------------------------------------------------------- R-MESSAGES


def test_first_sms_of_the_day_is_allowed():
    _, result = run(accounts_frame(), contacts_frame(call(AS_OF - pd.Timedelta(days=1), channel="sms")))
    assert result.channel_allowed[0, CH["sms"]]


def test_second_sms_of_the_day_is_blocked_until_local_midnight():
    _, result = run(accounts_frame(), contacts_frame(call(AS_OF - pd.Timedelta(hours=1), channel="sms")))
    assert not result.channel_allowed[0, CH["sms"]] and result.channel_allowed[0, CH["email"]]
    midnight = utc_iso(pd.Timestamp("2026-11-05T00:00:00+09:00"))
    assert entries(result, "R-MESSAGES") == [{"action": "sms", "rule": "R-MESSAGES", "until": midnight}]


def messages_before(count: int) -> list[tuple]:
    """`count` outbound messages on earlier days (never today), alternating e-mail and sms."""
    return [call(AS_OF - pd.Timedelta(days=1 + k), channel=("email", "sms")[k % 2], outcome="delivered")
            for k in range(count)]


def test_third_message_in_seven_days_is_allowed():
    facts, result = run(accounts_frame(), contacts_frame(*messages_before(2)))
    assert facts["messages_7d"].iloc[0] == 2
    assert result.channel_allowed[0, CH["sms"]] and result.channel_allowed[0, CH["email"]]


def test_fourth_message_in_seven_days_is_blocked_on_sms_and_email():
    messages = messages_before(3)
    _, result = run(accounts_frame(), contacts_frame(*messages))
    assert not result.channel_allowed[0, CH["sms"]] and not result.channel_allowed[0, CH["email"]]
    assert result.channel_allowed[0, CH["phone"]]
    until = utc_iso(min(row[1] for row in messages) + pd.Timedelta(days=7))
    assert [e["until"] for e in entries(result, "R-MESSAGES")] == [until, until]


def test_message_exactly_seven_days_old_no_longer_counts():
    messages = [*messages_before(2), call(AS_OF - pd.Timedelta(days=7), channel="email", outcome="delivered")]
    facts, result = run(accounts_frame(), contacts_frame(*messages))
    assert facts["messages_7d"].iloc[0] == 2
    assert result.channel_allowed[0, CH["email"]]


# ---------------------------------------------------------------- as-of discipline


def test_contacts_at_or_after_as_of_are_ignored():
    later = [call(AS_OF + pd.Timedelta(minutes=k), outcome="promise_to_pay") for k in range(8)]
    facts, result = run(accounts_frame(), contacts_frame(call(AS_OF, outcome="promise_to_pay"), *later))
    assert facts[["phone_ivr_7d", "attempts_today", "messages_7d"]].to_numpy().sum() == 0
    assert facts["last_promise_at"].isna().all()
    assert result.channel_allowed[0].all() and not result.suppress_all[0]


def test_contacts_of_other_accounts_are_ignored():
    _, result = run(accounts_frame(), contacts_frame(*attempts_today(5, account="someone-else")))
    assert not_before(result) == AS_OF


# ---------------------------------------------------------------- fail closed


def test_invalid_time_zone_fails_closed():
    facts, result = run(accounts_frame({"timezone": "Asia/Atlantis"}), nothing())
    assert not facts["tz_valid"].iloc[0]
    assert result.require_human[0] and not result.channel_allowed[0].any()
    assert result.held_by[0] == ["R-TIME-ZONE"]
    assert {"action": "all", "rule": "R-TIME-ZONE", "until": None} in result.blocked[0]


@pytest.mark.parametrize("name", ["localtime", "Factory", "posixrules", "posix/Asia/Tokyo", "right/Asia/Tokyo"])
def test_a_zone_that_names_no_place_fails_closed(name):
    """These load with ZoneInfo, but `localtime` is the server's own zone (the batch and the API could
    disagree on the account's hours), `Factory` means "not set", and the others are the database's copies."""
    from zoneinfo import ZoneInfo

    ZoneInfo(name)  # it loads: the check is the project's, not the library's
    facts, result = run(accounts_frame({"timezone": name}), nothing())
    assert not facts["tz_valid"].iloc[0] and result.held_by[0] == ["R-TIME-ZONE"]


def test_zones_come_from_the_tzdata_package_where_the_system_has_none(tmp_path):
    """A slim image without /usr/share/zoneinfo: the tzdata dependency still names every zone."""
    import subprocess
    import sys

    code = ("from models.calendar import is_valid_timezone as ok; "
            "print(ok('Asia/Tokyo'), ok('America/New_York'), ok('localtime'), ok('Asia/Atlantis'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONTZPATH": str(tmp_path)}).stdout  # an empty system tz path
    assert out.split() == ["True", "True", "False", "False"]


def test_no_time_zone_database_at_all_is_an_error_not_everyone_failing_closed(monkeypatch):
    from models import calendar

    monkeypatch.setattr(calendar, "available_timezones", lambda: set())
    calendar._iana_names.cache_clear()
    calendar.zone.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="tzdata"):
            calendar.is_valid_timezone("Asia/Tokyo")
    finally:
        calendar._iana_names.cache_clear()
        calendar.zone.cache_clear()


@pytest.mark.parametrize("name", ["America/New_York", "UTC", "Etc/GMT-9", "Japan", "Asia/Kolkata"])
def test_real_zones_and_their_aliases_are_valid(name):
    facts, result = run(accounts_frame({"timezone": name}), nothing())
    assert facts["tz_valid"].iloc[0] and "R-TIME-ZONE" not in result.held_by[0]


def test_missing_time_zone_means_tokyo():
    facts, result = run(accounts_frame({"timezone": None}), nothing())
    assert facts["tz_valid"].iloc[0] and not result.require_human[0]
    assert facts["local_day_ends_at"].iloc[0] == pd.Timestamp("2026-11-05T00:00:00+09:00")


def test_missing_contact_history_fails_closed():
    facts, result = run(accounts_frame(), None)
    assert not facts["history_known"].iloc[0]
    assert result.require_human[0] and not result.channel_allowed[0].any()
    assert not result.suppress_all[0]
    assert set(result.held_by[0]) == HISTORY_RULES
    order = [RULE_IDS.index(entry["rule"]) for entry in result.blocked[0]]
    assert order == sorted(order)


def test_legal_review_is_never_allowed_automatically():
    proposed = np.array(["legal_review", "reminder"], dtype=object)
    _, result = run(accounts_frame({}, {}), nothing(), proposed=proposed)
    assert not result.offer_allowed[:, OF["legal_review"]].any()
    assert result.require_human.tolist() == [True, False]
    assert result.held_by == [["R-LEGAL"], []]


def test_blocked_lists_follow_the_rule_order():
    accounts = accounts_frame({"vulnerable": True, "consent_sms": False, "timezone": "Nowhere/Else"})
    _, result = run(accounts, contacts_frame(call(AS_OF - pd.Timedelta(days=1), outcome="reached")))
    order = [RULE_IDS.index(entry["rule"]) for entry in result.blocked[0]]
    assert order == sorted(order)
    assert result.held_by[0] == ["R-VULNERABLE", "R-CONSENT", "R-AFTER-CONVERSATION", "R-TIME-ZONE"]


def test_deferrals_combine_to_the_latest():
    promised = AS_OF - pd.Timedelta(days=1)
    contacts = contacts_frame(*attempts_today(3), call(promised, outcome="promise_to_pay"))
    _, result = run(accounts_frame(), contacts)
    assert not_before(result) == promised + pd.Timedelta(days=7)


# ---------------------------------------------------------------- properties

ZONES = ["Asia/Tokyo", "America/New_York", None, "Not/AZone"]


@st.composite
def portfolios(draw, max_accounts: int = 5):
    """A few accounts with random flags and zones, and contacts around AS_OF."""
    n = draw(st.integers(1, max_accounts))
    rows = [{**{flag: draw(st.booleans()) for flag in (*FLAGS, *CONSENTS)},
             "timezone": draw(st.sampled_from(ZONES))} for _ in range(n)]
    contacts = draw(st.lists(contact_rows(n), max_size=25))
    return accounts_frame(*rows), contacts


def contact_rows(n: int):
    return st.tuples(
        st.integers(0, n - 1).map(lambda i: f"A{i}"),
        st.integers(-10 * 24 * 60, 60).map(lambda m: AS_OF + pd.Timedelta(minutes=m)),
        st.sampled_from(CHANNELS), st.sampled_from(DIRECTIONS), st.sampled_from(OUTCOMES),
    )


def assert_no_more_allowed(before, after):
    """`after` allows nothing `before` did not, and holds or hands over at least as much."""
    assert (after.channel_allowed <= before.channel_allowed).all()
    assert (after.offer_allowed <= before.offer_allowed).all()
    assert (after.suppress_all >= before.suppress_all).all()
    assert (after.require_human >= before.require_human).all()
    assert (after.not_before >= before.not_before).all()
    for held_before, held_after in zip(before.held_by, after.held_by, strict=True):
        assert set(held_before) <= set(held_after)


@settings(max_examples=60, deadline=None)
@given(portfolio=portfolios(), data=st.data())
def test_a_legal_hold_or_a_withdrawn_consent_never_allows_more(portfolio, data):
    accounts, rows = portfolio
    contacts = contacts_frame(*rows)
    row = data.draw(st.integers(0, len(accounts) - 1))
    column = data.draw(st.sampled_from(FLAGS + CONSENTS))
    changed = accounts.copy()
    changed.loc[row, column] = column in FLAGS  # set a hold, or withdraw a consent
    _, before = run(accounts, contacts)
    _, after = run(changed, contacts)
    assert_no_more_allowed(before, after)


@settings(max_examples=60, deadline=None)
@given(portfolio=portfolios(), data=st.data())
def test_more_contacts_never_unblock_anything(portfolio, data):
    accounts, rows = portfolio
    extra = data.draw(st.lists(contact_rows(len(accounts)), min_size=1, max_size=10))
    _, before = run(accounts, contacts_frame(*rows))
    _, after = run(accounts, contacts_frame(*rows, *extra))
    assert_no_more_allowed(before, after)


@settings(max_examples=40, deadline=None)
@given(portfolio=portfolios())
def test_a_portfolio_is_judged_like_each_account_alone(portfolio):
    accounts, rows = portfolio
    contacts = contacts_frame(*rows)
    proposed = np.array(["legal_review", "reminder"] * len(accounts), dtype=object)[: len(accounts)]
    shuffled, offers = accounts.iloc[::-1], proposed[::-1]
    _, together = run(shuffled, contacts, proposed=offers)
    for position in range(len(shuffled)):
        _, alone = run(shuffled.iloc[[position]], contacts, proposed=offers[position: position + 1])
        assert (together.channel_allowed[position] == alone.channel_allowed[0]).all()
        assert (together.offer_allowed[position] == alone.offer_allowed[0]).all()
        assert together.not_before[position] == alone.not_before[0]
        assert together.blocked[position] == alone.blocked[0]
        assert together.held_by[position] == alone.held_by[0]
        assert (together.suppress_all[position], together.require_human[position]) == \
            (alone.suppress_all[0], alone.require_human[0])


def test_calls_period_comes_from_the_config():
    longer = RulesConfig.from_params({**PARAMS["rules"], "calls_period_days": 10})
    calls = [call(AS_OF - pd.Timedelta(days=8, hours=k)) for k in range(7)]
    facts_default, default = run(accounts_frame(), contacts_frame(*calls))
    facts_longer, result = run(accounts_frame(), contacts_frame(*calls), config=longer)
    assert (facts_default["phone_ivr_7d"].iloc[0], facts_longer["phone_ivr_7d"].iloc[0]) == (0, 7)
    assert default.channel_allowed[0, CH["phone"]] and not result.channel_allowed[0, CH["phone"]]
