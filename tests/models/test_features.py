"""Point-in-time features: arrears by FIFO, lateness, contact windows in local time, no leakage."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.config import load_params
from models.features import FeatureConfig, feature_names, features_at, prepare
from tests.conftest import account, monthly_schedule, portfolio

CONFIG = FeatureConfig.from_params(load_params())
AS_OF = pd.Timestamp("2026-11-01T00:00:00+09:00")


def _features(p, as_of=AS_OF) -> pd.DataFrame:
    return features_at(prepare(p, CONFIG), as_of, CONFIG)


def _pay(account_id: str, when: str, amount: float = 40000.0, method: str = "direct_debit") -> dict:
    return {"account_id": account_id, "paid_at": when, "amount": amount, "method": method}


def test_paid_up_account_is_not_overdue():
    months = ["2026-08", "2026-09", "2026-10"]
    p = portfolio([account()], monthly_schedule("A1", months),
                  [_pay("A1", f"{m}-27T10:00:00+09:00") for m in months])
    row = _features(p).iloc[0]
    assert row["arrears"] == 0 and row["days_past_due"] == 0
    assert row["missed_3m"] == 0 and row["paid_late_12m"] == 0


def test_arrears_settle_the_oldest_instalment_first():
    months = ["2026-08", "2026-09", "2026-10"]
    pays = [_pay("A1", "2026-08-27T10:00:00+09:00"), _pay("A1", "2026-10-05T12:00:00+09:00", 20000, "bank_transfer")]
    row = _features(portfolio([account()], monthly_schedule("A1", months), pays)).iloc[0]
    assert row["arrears"] == 60000
    assert row["arrears_instalments"] == 1.5
    # Sep 27 is the oldest instalment not fully paid: 35 days before Nov 1 (local midnight to midnight)
    assert row["days_past_due"] == 35
    assert row["missed_3m"] == 2 and row["paid_late_3m"] == 0
    assert row["partial_payments_6m"] == 1 and row["manual_payments_12m"] == 1
    assert row["last_payment_method"] == 1  # bank_transfer


def test_a_late_payment_counts_as_missed_and_paid_late():
    p = portfolio([account()], monthly_schedule("A1", ["2026-09"]),
                  [_pay("A1", "2026-10-03T10:00:00+09:00", method="bank_transfer")])
    row = _features(p).iloc[0]
    assert row["arrears"] == 0
    assert row["missed_3m"] == 1 and row["paid_late_3m"] == 1
    assert row["days_late_max_12m"] == 6


def test_cure_history_tells_a_quick_cure_from_a_long_spell():
    months = [f"2025-{m}" for m in (11, 12)] + [f"2026-{m:02d}" for m in range(1, 11)]
    on_time = [_pay("A1", f"{m}-27T10:00:00+09:00") for m in months if m not in
               ("2025-12", "2026-02", "2026-03", "2026-10")]
    pays = on_time + [_pay("A1", "2026-01-05T10:00:00+09:00"),           # December's, 9 days late
                      _pay("A1", "2026-04-10T10:00:00+09:00", 80000.0)]  # February's 42 days late, March's 14
    row = _features(portfolio([account()], monthly_schedule("A1", months), pays)).iloc[0]
    assert CONFIG.cure_history_months == 24
    assert row["missed_24m"] == 4 and row["paid_late_24m"] == 3         # October's is still unpaid
    assert row["late_cured_30d_24m"] == 2 and row["late_cured_30d_share_24m"] == 0.5
    assert row["arrears_spells_24m"] == 3                               # December; February and March; October


def test_cure_history_is_missing_without_a_late_instalment_and_absent_when_off():
    months = ["2026-08", "2026-09", "2026-10"]
    p = portfolio([account()], monthly_schedule("A1", months), [_pay("A1", f"{m}-27T10:00:00+09:00") for m in months])
    row = _features(p).iloc[0]
    assert row["late_cured_30d_24m"] == 0 and np.isnan(row["late_cured_30d_share_24m"])
    assert row["arrears_spells_24m"] == 0
    off = dataclasses.replace(CONFIG, cure_history_months=0)
    assert not any(name.startswith(("late_cured", "arrears_spells")) for name in feature_names(off))
    assert list(features_at(prepare(p, off), AS_OF, off).columns) == ["account_id", *feature_names(off)]


def test_instalment_counts_only_once_its_due_day_has_ended_in_local_time():
    p = portfolio([account()], monthly_schedule("A1", ["2026-11"], day=1))
    assert _features(p).iloc[0]["arrears"] == 0
    assert _features(p, AS_OF + pd.Timedelta(hours=9)).iloc[0]["arrears"] == 0   # 09:00 on the due day
    assert _features(p, AS_OF + pd.Timedelta(hours=23, minutes=59)).iloc[0]["arrears"] == 0
    next_midnight = _features(p, AS_OF + pd.Timedelta(days=1)).iloc[0]
    assert next_midnight["arrears"] == 40000 and next_midnight["days_past_due"] == 1


def test_contact_windows_use_the_accounts_local_time():
    contacts = [{"contact_id": "C1", "account_id": "A1", "contacted_at": "2026-10-20T10:30:00Z",  # 19:30 JST Tue
                 "channel": "phone", "direction": "outbound", "outcome": "reached"},
                {"contact_id": "C2", "account_id": "A1", "contacted_at": "2026-10-21T01:00:00Z",  # 10:00 JST Wed
                 "channel": "phone", "direction": "outbound", "outcome": "no_answer"}]
    row = _features(portfolio([account()], contacts=contacts)).iloc[0]
    assert row["weekday_evening_attempts"] == 1 and row["weekday_evening_reach_rate"] == 1.0
    assert row["weekday_morning_attempts"] == 1 and row["weekday_morning_reach_rate"] == 0.0
    assert row["phone_attempts_90d"] == 2 and row["phone_reached_90d"] == 1


def test_promise_is_kept_only_by_a_payment_within_seven_days_before_as_of():
    contacts = [{"contact_id": "C1", "account_id": "A1", "contacted_at": "2026-10-10T10:00:00+09:00",
                 "channel": "phone", "direction": "outbound", "outcome": "promise_to_pay"},
                {"contact_id": "C2", "account_id": "A1", "contacted_at": "2026-10-28T10:00:00+09:00",
                 "channel": "phone", "direction": "outbound", "outcome": "promise_to_pay"}]
    pays = [_pay("A1", "2026-10-12T10:00:00+09:00", 10000, "card"), _pay("A1", "2026-11-02T10:00:00+09:00")]
    row = _features(portfolio([account()], payments=pays, contacts=contacts)).iloc[0]
    assert row["promises_made_90d"] == 2
    assert row["promises_kept_90d"] == 1


def test_features_of_one_account_do_not_depend_on_the_others():
    months = ["2026-07", "2026-08", "2026-09", "2026-10"]
    accounts = [account("A1"), account("A2", employment="retired", monthly_amount=30000.0)]
    inst = monthly_schedule("A1", months) + monthly_schedule("A2", months, day=5, amount=30000.0)
    pays = [_pay("A1", "2026-07-27T10:00:00+09:00"), _pay("A2", "2026-08-05T10:00:00+09:00", 30000)]
    both = _features(portfolio(accounts, inst, pays))
    alone = _features(portfolio([accounts[1]], [r for r in inst if r["account_id"] == "A2"], pays[1:]))
    pd.testing.assert_frame_equal(both.iloc[[1]].reset_index(drop=True), alone)


def test_feature_names_match_the_frame():
    frame = _features(portfolio([account()]))
    assert list(frame.columns) == ["account_id", *feature_names(CONFIG)]


# --- no leakage: rows at or after t never change a feature at t -------------------------------------

_offsets = st.integers(min_value=-400 * 24, max_value=-1)   # hours before t
_after = st.integers(min_value=0, max_value=60 * 24)        # hours at or after t


@st.composite
def _history(draw):
    t = pd.Timestamp("2026-06-15T09:00:00+09:00")
    stamp = lambda h: (t + pd.Timedelta(hours=h)).isoformat()  # noqa: E731
    day = lambda h: (t + pd.Timedelta(hours=h)).strftime("%Y-%m-%d")  # noqa: E731
    inst = [{"account_id": "A1", "due_date": day(h), "amount_due": draw(st.sampled_from([0.0, 40000.0]))}
            for h in draw(st.lists(_offsets, max_size=8))]
    pays = [_pay("A1", stamp(h), draw(st.sampled_from([5000.0, 40000.0, 80000.0])),
                 draw(st.sampled_from(["direct_debit", "card"]))) for h in draw(st.lists(_offsets, max_size=8))]
    outcomes = st.sampled_from(["reached", "no_answer", "promise_to_pay", "delivered", "opened"])
    cons = [{"contact_id": f"C{i}", "account_id": "A1", "contacted_at": stamp(h),
             "channel": draw(st.sampled_from(["phone", "sms", "email", "letter", "ivr"])), "direction": "outbound",
             "outcome": draw(outcomes)} for i, h in enumerate(draw(st.lists(_offsets, max_size=8)))]
    later_pays = [_pay("A1", stamp(h)) for h in draw(st.lists(_after, max_size=4))]
    later_inst = [{"account_id": "A1", "due_date": day(h + 24), "amount_due": 40000.0}
                  for h in draw(st.lists(_after, max_size=3))]
    later_cons = [{"contact_id": f"L{i}", "account_id": "A1", "contacted_at": stamp(h), "channel": "phone",
                   "direction": "outbound", "outcome": "promise_to_pay"}
                  for i, h in enumerate(draw(st.lists(_after, max_size=4)))]
    return t, (inst, pays, cons), (later_inst, later_pays, later_cons)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_history())
def test_rows_at_or_after_as_of_never_change_a_feature(case):
    t, (inst, pays, cons), (later_inst, later_pays, later_cons) = case
    before = _features(portfolio([account()], inst, pays, cons), t)
    after = _features(portfolio([account()], inst + later_inst, pays + later_pays, cons + later_cons), t)
    pd.testing.assert_frame_equal(before, after)
    assert np.isfinite(before["arrears"]).all()


def test_the_features_of_a_part_of_the_portfolio_are_its_rows_of_the_whole(sim_dir):
    """`Prepared.take`: the batch computes the features of the overdue accounts only, from their own part."""
    from models.contract import read_dir
    from models.features import arrears_at, feature_matrix

    whole = prepare(read_dir(sim_dir), CONFIG)
    arrears, in_instalments = arrears_at(whole, AS_OF)
    every = feature_matrix(whole, AS_OF, CONFIG)
    assert np.array_equal(arrears, every[:, feature_names(CONFIG).index("arrears")])
    assert np.array_equal(in_instalments, every[:, feature_names(CONFIG).index("arrears_instalments")])
    for positions in (np.flatnonzero(arrears > 0), np.arange(0, whole.n, 7), np.array([whole.n - 1])):
        part = whole.take(positions)
        assert part.n == len(positions) and list(part.account_id) == list(whole.account_id[positions])
        assert len(part.con_acc) == np.isin(whole.con_acc, positions).sum()
        np.testing.assert_array_equal(feature_matrix(part, AS_OF, CONFIG), every[positions])


def test_membership_by_lookup_table_is_isin_and_a_missing_code_is_in_nothing():
    from models import vocab

    codes = np.random.default_rng(0).integers(-1, len(vocab.OUTCOMES) + 2, 5000).astype(np.int16)
    for names in (vocab.REACHED_OUTCOMES, ("promise_to_pay",), ()):
        expected = np.isin(codes, [vocab.OUTCOMES.index(name) for name in names])
        np.testing.assert_array_equal(vocab.is_one_of(codes, names, vocab.OUTCOMES), expected)
