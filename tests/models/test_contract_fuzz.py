"""Property tests of the contract reader (toward issue 8): whatever a table holds, `validate` returns
normalised frames or raises a ContractError naming the table and column; never another exception. And
whatever a valid portfolio holds, the scorer answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.contract import SPEC, ContractError, validate
from tests.conftest import account

# values a CRM export gets wrong: wrong types, NaN and infinities, negative and absurd numbers, naive and
# out-of-range timestamps, unknown categories and time zones, empty strings, None
JUNK = st.one_of(
    st.none(), st.just(""), st.just(float("nan")), st.just(float("inf")), st.just(-1.0), st.just(1e300),
    st.integers(-10**12, 10**12), st.floats(allow_nan=True), st.booleans(), st.text(max_size=12),
    st.just("2026-11-01T09:00:00"), st.just("2026-11-01T09:00:00+09:00"), st.just("1600-01-01"),
    st.just("9999-12-31T23:59:59Z"), st.just("2026-02-30"), st.just("Mars/Olympus"), st.just("salaried"),
    st.just("phone"), st.just("promise_to_pay"), st.just("A1"), st.just("true"), st.just([1, 2]),
)


def _good_rows() -> dict[str, list[dict]]:
    return {
        "accounts": [account("A1"), account("A2", timezone=None, birth_year=None)],
        "installments": [{"account_id": "A1", "due_date": "2026-09-27", "amount_due": 40000.0},
                         {"account_id": "A2", "due_date": "2026-10-27", "amount_due": 40000.0}],
        "payments": [{"account_id": "A1", "paid_at": "2026-09-27T10:00:00+09:00", "amount": 40000.0,
                      "method": "direct_debit"}],
        "contacts": [{"contact_id": "C1", "account_id": "A1", "contacted_at": "2026-10-01T10:00:00+09:00",
                      "channel": "sms", "direction": "outbound", "template": None, "outcome": "delivered",
                      "experiment_id": None, "propensity": None}],
    }


@st.composite
def damaged(draw):
    """The good tables with a few cells replaced by junk, maybe a table emptied or a column dropped."""
    rows = _good_rows()
    for _ in range(draw(st.integers(1, 4))):
        table = draw(st.sampled_from(list(SPEC)))
        if not rows[table]:
            continue
        row = draw(st.integers(0, len(rows[table]) - 1))
        column = draw(st.sampled_from(list(SPEC[table])))
        rows[table][row][column] = draw(JUNK)
    frames = {name: pd.DataFrame.from_records(r) if r else pd.DataFrame({c: pd.Series(dtype=object)
                                                                        for c in SPEC[name]})
              for name, r in rows.items()}
    if draw(st.booleans()):
        name = draw(st.sampled_from(list(SPEC)))
        frames[name] = frames[name].iloc[0:0]
    if draw(st.integers(0, 9)) == 0:
        name = draw(st.sampled_from(list(SPEC)))
        present = [c for c in SPEC[name] if c in frames[name].columns]  # an optional column may be absent
        frames[name] = frames[name].drop(columns=[draw(st.sampled_from(present))])
    return frames


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_any_damage_is_a_named_contract_error_or_a_valid_portfolio(frames):
    try:
        portfolio = validate(frames)
    except ContractError as err:
        assert err.table in SPEC and (err.column is None or err.column in SPEC[err.table])
        assert str(err).startswith(err.table)
        return
    for name, columns in SPEC.items():  # accepted: exactly the contract's columns, clean values
        frame = getattr(portfolio, name)
        assert list(frame.columns) == list(columns)
        for column, rule in columns.items():
            if rule.kind in ("int", "float"):
                values = frame[column].to_numpy(dtype=float)
                assert not np.isinf(values).any()
                if rule.high is not None:
                    assert not (values > rule.high).any()
                if rule.required:
                    assert not np.isnan(values).any()


@pytest.mark.slow
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(damaged())
def test_every_valid_damaged_portfolio_gets_answers_never_a_crash(trained, frames):
    from models.registry import load_bundle

    try:
        portfolio = validate(frames)
    except ContractError:
        return
    bundle = load_bundle(str(trained["bundle_path"])).bundle
    rows = bundle.score(portfolio, pd.Timestamp("2026-11-01T00:00:00+09:00"))
    assert set(rows["account_id"]) <= set(portfolio.accounts["account_id"])
    assert all(0 <= p <= 1 and not math.isnan(p) for p in rows["cure_probability"])


def test_an_account_with_no_instalments_is_not_in_the_batch_queue(trained):
    """Issue 8 names the case: an account with payments and contacts but no instalment (a new contract, or
    an export that lost its schedule) is a well-defined answer, not a crash and not a collection target."""
    from models.registry import load_bundle
    from tests.conftest import monthly_schedule, portfolio

    months = [f"2026-{m:02d}" for m in range(1, 10)]
    p = portfolio([account("A1"), account("A2")], installments=monthly_schedule("A1", months),
                  payments=[{"account_id": "A2", "paid_at": "2026-09-27T10:00:00+09:00", "amount": 40000.0,
                             "method": "direct_debit"}],
                  contacts=[{"contact_id": "C9", "account_id": "A2", "contacted_at": "2026-10-01T10:00:00+09:00",
                             "channel": "sms", "direction": "outbound", "template": None, "outcome": "delivered",
                             "experiment_id": None, "propensity": None}])
    bundle = load_bundle(str(trained["bundle_path"])).bundle
    queue = bundle.score(p, pd.Timestamp("2026-11-01T00:00:00+09:00"))
    assert list(queue["account_id"]) == ["A1"]  # the queue holds the overdue: A1 owes and paid nothing
