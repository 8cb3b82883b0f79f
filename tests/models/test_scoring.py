"""The real-time front-end (requests -> arrays, no pandas) equals the batch's (tables -> arrays), and checks
the same contract; one decision path behind both."""

from __future__ import annotations

import threading
from dataclasses import fields
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.answers import requests_from_portfolio, row_from_answer
from models.bundle import BATCH_COLUMNS
from models.config import load_params
from models.contract import ContractError, read_dir
from models.features import FeatureConfig, prepare, prepare_requests
from models.registry import load_bundle
from models.schemas import ScoreRequest
from models.scoring import GroupScorer, _Ask, score_requests, score_requests_with_features
from tests.conftest import account, portfolio

CONFIG = FeatureConfig.from_params(load_params())
AS_OF = pd.Timestamp("2026-11-01T00:00:00+09:00")
# zones with DST gaps and folds at midnight (Santiago, Havana), a half-hour DST (Lord Howe), an invalid
# one and a missing one: where local midnights and windows are easiest to get wrong
ZONES = ("Asia/Tokyo", "America/Santiago", "America/Havana", "Australia/Lord_Howe", "Europe/London",
         "America/New_York", "Mars/Olympus", None)


def parsed(requests: list[dict]) -> list[dict]:
    """What the API hands the scorer: requests parsed by the schema, python types."""
    return [ScoreRequest.model_validate(r).model_dump() for r in requests]


def assert_same_arrays(left, right) -> None:
    for f in fields(left):
        a, b = getattr(left, f.name), getattr(right, f.name)
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{f.name}.{k}")
        else:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f.name)


@st.composite
def small_portfolios(draw):
    """A few accounts in tricky zones with instalments, payments and contacts around DST changes."""
    n = draw(st.integers(1, 4))
    accounts, inst, pays, cons = [], [], [], []
    base = datetime(2024, 1, 1)
    for i in range(n):
        aid = f"A{i}"
        accounts.append(account(aid, timezone=draw(st.sampled_from(ZONES)),
                                opened_on=str(date(2020, 1, 1) + timedelta(days=draw(st.integers(0, 900)))),
                                birth_year=draw(st.none() | st.integers(1940, 2000)),
                                vulnerable=draw(st.booleans()), consent_sms=draw(st.booleans())))
        for d in draw(st.lists(st.integers(0, 900), max_size=12)):
            inst.append({"account_id": aid, "due_date": str((base + timedelta(days=d)).date()),
                         "amount_due": draw(st.sampled_from([0.0, 40000.0, 12345.67]))})
        for minutes in draw(st.lists(st.integers(0, 900 * 1440), max_size=10)):
            pays.append({"account_id": aid, "paid_at": pd.Timestamp(base + timedelta(minutes=minutes), tz="UTC"),
                         "amount": draw(st.sampled_from([40000.0, 100.5, 7.0])),
                         "method": draw(st.sampled_from(["direct_debit", "card", "bank_transfer"]))})
        for k, minutes in enumerate(draw(st.lists(st.integers(0, 900 * 1440), max_size=10))):
            channel = draw(st.sampled_from(["phone", "sms", "email", "letter", "ivr", "none"]))
            outcome = "held_out" if channel == "none" else draw(st.sampled_from(["reached", "no_answer",
                                                                                 "promise_to_pay", "opened"]))
            cons.append({"contact_id": f"{aid}-C{k}", "account_id": aid, "channel": channel,
                         "contacted_at": pd.Timestamp(base + timedelta(minutes=minutes), tz="UTC"),
                         "direction": draw(st.sampled_from(["outbound", "inbound"])), "outcome": outcome})
    return portfolio(accounts, inst, pays, cons)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_portfolios())
def test_requests_and_tables_give_the_same_arrays(p):
    requests = parsed(requests_from_portfolio(p, AS_OF))
    assert_same_arrays(prepare_requests(requests, CONFIG), prepare(p, CONFIG))


def test_simulated_accounts_give_the_same_arrays(sim_dir):
    p = read_dir(sim_dir)
    p = p.subset(list(p.accounts["account_id"].iloc[::25]))
    assert_same_arrays(prepare_requests(parsed(requests_from_portfolio(p, AS_OF)), CONFIG), prepare(p, CONFIG))


@pytest.mark.slow
@pytest.mark.parametrize("as_of", ["2026-11-01T00:00:00+09:00", "2026-10-14T13:37:00+09:00"])
def test_every_realtime_answer_equals_its_batch_row(trained, as_of):
    bundle = load_bundle(str(trained["bundle_path"])).bundle
    p = read_dir(trained["data"])
    when = pd.Timestamp(as_of)
    rows = bundle.score(p, when)
    assert len(rows) > 20
    answers = score_requests(bundle, parsed(requests_from_portfolio(p, when, rows["account_id"].tolist())))
    for answer, row in zip(answers, rows.to_dict("records"), strict=True):
        assert row_from_answer(answer) == {k: row[k] for k in BATCH_COLUMNS}


def _one(**changes) -> list[dict]:
    request = requests_from_portfolio(portfolio([account("A1")], contacts=[
        {"contact_id": "C1", "account_id": "A1", "contacted_at": "2026-10-01T10:00:00+09:00", "channel": "sms",
         "direction": "outbound", "outcome": "delivered"}]), AS_OF)[0]
    for table, value in changes.items():
        request[table] = value
    return parsed([request])


@pytest.mark.parametrize("case, table, column, rows", [
    ("child names another account", "installments", "account_id", [0]),
    ("contact id twice", "contacts", "contact_id", [0, 1]),
    ("held_out on a phone call", "contacts", "outcome", [0]),
    ("payment in year 2300", "payments", "paid_at", [0]),
])
def test_bad_requests_name_the_table_column_and_rows(trained, case, table, column, rows):
    contact = {"contact_id": "C1", "contacted_at": "2026-10-01T10:00:00+09:00", "channel": "sms",
               "direction": "outbound", "outcome": "delivered"}
    requests = {
        "child names another account": _one(installments=[{"account_id": "B9", "due_date": "2026-09-27",
                                                           "amount_due": 1.0}]),
        "contact id twice": _one(contacts=[contact, {**contact, "contacted_at": "2026-10-02T10:00:00+09:00"}]),
        "held_out on a phone call": _one(contacts=[{**contact, "channel": "phone", "outcome": "held_out"}]),
        "payment in year 2300": _one(payments=[{"paid_at": "2300-01-01T00:00:00+00:00", "amount": 1.0,
                                                "method": "card"}]),
    }[case]
    bundle = load_bundle(str(trained["bundle_path"])).bundle
    with pytest.raises(ContractError) as err:
        score_requests(bundle, requests)
    assert (err.value.table, err.value.column, list(err.value.rows)) == (table, column, rows)


def test_a_group_of_requests_decided_together_gives_each_the_answer_it_gets_alone(trained):
    """GroupScorer decides concurrent callers' requests in one call: each account's answer (decision id,
    reasons, window, propensity and all) and model inputs are those it gets when it is decided alone."""
    bundle = load_bundle(str(trained["bundle_path"])).bundle
    p = read_dir(trained["data"])
    overdue = bundle.score(p, AS_OF)["account_id"].tolist()[:11]
    current = next(a for a in p.accounts["account_id"] if a not in set(overdue) and a not in
                   set(bundle.score(p, AS_OF)["account_id"]))
    requests = parsed(requests_from_portfolio(p, AS_OF, [*overdue[:5], current, *overdue[5:]]))
    contested, reads = frozenset(overdue[3:4]), []

    def lookup(ids: list[str], tenant: str | None) -> frozenset[str]:  # the decision log's, for one tenant
        reads.append((tenant, sorted(ids)))
        return contested & set(ids) if tenant == "t1" else frozenset()

    alone = [score_requests_with_features(bundle, [r], contested) for r in requests]
    asks = [_Ask(bundle, requests[i:i + 3], "t1") for i in range(0, 12, 3)]  # four callers of three accounts
    together = GroupScorer(lookup)._run(asks)
    assert [pair for outcome in together for pair in outcome] == [pair for pairs in alone for pair in pairs]
    assert any(b["rule"] == "R-CONTESTED" for b in alone[3][0][0]["blocked"])  # the contested one is blocked
    assert alone[5][0][0]["tier"] == "not overdue"
    ids = sorted(r["account"]["account_id"] for r in requests)
    assert reads == [("t1", ids)]  # one read for the group
    reads.clear()
    mixed = GroupScorer(lookup)._run([_Ask(bundle, requests[:6], "t1"), _Ask(bundle, requests[6:], "t2")])
    assert sorted(reads) == [("t1", sorted(r["account"]["account_id"] for r in requests[:6])),
                             ("t2", sorted(r["account"]["account_id"] for r in requests[6:]))]
    assert mixed[0] == [pair for pairs in alone[:6] for pair in pairs]  # t2's contests are its own: none

    scorer, results = GroupScorer(lookup), {}

    def call(i: int) -> None:
        results[i] = scorer.score(bundle, [requests[i]], "t1")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [results[i] for i in range(len(requests))] == alone


def test_a_group_holds_one_bundle_each_account_once_and_checks_each_caller_on_its_own(trained):
    bundle = load_bundle(str(trained["bundle_path"])).bundle
    other = load_bundle(str(trained["bundle_path"])).bundle
    scorer = GroupScorer(max_accounts=4)
    a1, a2, b1 = ({"account": {"account_id": a}} for a in ("A1", "A2", "B1"))
    group = [_Ask(bundle, [a1, b1])]
    assert scorer._fits(group, _Ask(bundle, [a2], "another tenant"))
    assert not scorer._fits(group, _Ask(bundle, [a1]))  # A1 again: the next group
    assert not scorer._fits(group, _Ask(other, [a2]))  # another bundle (a reload)
    assert not scorer._fits(group, _Ask(bundle, [a2, a2, a2]))  # five accounts
    bad = _one(contacts=[{"contact_id": "C1", "contacted_at": "2026-10-01T10:00:00+09:00", "channel": "phone",
                          "direction": "outbound", "outcome": "held_out"}])
    with pytest.raises(ContractError) as err:
        scorer.score(bundle, bad)
    assert (err.value.table, err.value.column, list(err.value.rows)) == ("contacts", "outcome", [0])


def test_a_group_writes_each_callers_records_in_one_commit_and_hands_each_its_own_refusal(trained):
    bundle = load_bundle(str(trained["bundle_path"])).bundle
    p = read_dir(trained["data"])
    requests = parsed(requests_from_portfolio(p, AS_OF, bundle.score(p, AS_OF)["account_id"].tolist()[:4]))
    commits = []

    def commit(groups: list[list]) -> list:  # the decision log's append_each: one outcome per caller
        commits.append(groups)
        return [ValueError("refused") if records == ["rec-2"] else None for records in groups]

    scorer = GroupScorer(commit=commit)
    asks = [_Ask(bundle, [r], "t1", lambda pairs, i=i: [f"rec-{i}"]) for i, r in enumerate(requests)]
    outcomes = scorer._run(asks)
    assert commits == [[["rec-0"], ["rec-1"], ["rec-2"], ["rec-3"]]]  # one write for the group
    assert isinstance(outcomes[2], ValueError) and all(isinstance(o, list) and len(o) == 1 for o in outcomes[:2])
    with pytest.raises(ValueError, match="no commit"):
        GroupScorer().score(bundle, requests[:1], records=lambda pairs: [])
