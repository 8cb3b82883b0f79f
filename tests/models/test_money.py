"""Money as money: amounts keep their decimals, small residues stay out of the queue, stale debt has its own track."""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
import pytest

from models import policy
from models.answers import requests_from_portfolio
from models.config import load_params
from models.features import FeatureConfig, features_at, prepare
from models.scoring import score_requests
from pipelines.features import cure_examples
from pipelines.train import split_stale
from tests.conftest import account, monthly_schedule, portfolio
from tests.models.test_scoring import parsed

AS_OF = pd.Timestamp("2026-11-01T00:00:00+09:00")
MONTHS = [f"2026-{m:02d}" for m in range(1, 11)]


def _paid(account_id: str, months: list[str], amount: float = 40000.0) -> list[dict]:
    return [{"account_id": account_id, "paid_at": f"{m}-27T10:00:00+09:00", "amount": amount,
             "method": "direct_debit"} for m in months]


def _book(residue: float = 2.0, stale_days: int = 200) -> tuple:
    """Accounts: FULL paid up to a residue, BEHIND two instalments, STALE and WRITEOFF long overdue, LEGAL
    long overdue under a legal hold."""
    accounts = [account("FULL"), account("BEHIND"), account("STALE", opened_on="2024-01-10"),
                account("WRITEOFF", opened_on="2024-01-10"),
                account("LEGAL", opened_on="2024-01-10", legal_representative=True)]
    inst = monthly_schedule("FULL", MONTHS) + monthly_schedule("BEHIND", MONTHS)
    pay = _paid("FULL", MONTHS[:-1]) + _paid("FULL", MONTHS[-1:], 40000.0 - residue) + _paid("BEHIND", MONTHS[:8])
    stale_first = (AS_OF - pd.Timedelta(days=stale_days)).strftime("%Y-%m")
    old = [m.strftime("%Y-%m") for m in pd.period_range("2024-02", "2026-10", freq="M")]
    for name, first in (("STALE", stale_first), ("WRITEOFF", "2025-06"), ("LEGAL", "2025-06")):
        inst += monthly_schedule(name, old)
        pay += _paid(name, [m for m in old if m < first])
    return portfolio(accounts, inst, pay)


def _features(book, params=None):
    config = FeatureConfig.from_params(params or load_params())
    return features_at(prepare(book, config), AS_OF, config).set_index("account_id")


def test_amounts_keep_their_decimals_so_a_paid_instalment_leaves_no_phantom_cent():
    book = portfolio([account("A", monthly_amount=1233.09)],
                     [{"account_id": "A", "due_date": "2026-10-01", "amount_due": 1233.09}],
                     [{"account_id": "A", "paid_at": f"2026-10-0{d}T10:00:00+09:00", "amount": 616.545,
                       "method": "bank_transfer"} for d in (1, 2)])
    assert _features(book).loc["A", "arrears"] == 0.0
    params = load_params()
    params["features"]["money_decimals"] = 2  # whole cents, each payment rounded: the phantom cent
    assert _features(book, params).loc["A", "arrears"] == pytest.approx(0.01)


def test_money_decimals_must_be_a_small_whole_number():
    params = load_params()
    params["features"]["money_decimals"] = 2.5
    with pytest.raises(ValueError, match="money_decimals"):
        FeatureConfig.from_params(params)


def test_materiality_needs_both_the_amount_and_the_share_of_an_instalment():
    conf = policy.PolicyConfig.from_params({**load_params()["policy"],
                                            "materiality": {"min_arrears": 100, "min_instalments": 0.05}})
    arrears = np.array([0.0, 2.0, 99.99, 100.0, 100.0, 5000.0])
    instalments = np.array([0.0, 0.0001, 0.05, 0.04, 0.05, 0.2])
    assert policy.material(arrears, instalments, conf).tolist() == [False, False, False, False, True, True]


def test_training_examples_leave_out_what_the_queue_leaves_out():
    book = _book()
    config = FeatureConfig.from_params(load_params())
    conf = policy.PolicyConfig.from_params(load_params()["policy"])
    examples = cure_examples(prepare(book, config), config, [AS_OF], 30, conf)
    assert "FULL" not in set(examples["account_id"]) and "BEHIND" in set(examples["account_id"])
    curable, stale = split_stale(examples, load_params())
    assert set(curable["account_id"]) == {"BEHIND"}
    assert set(stale["account_id"]) == {"STALE", "WRITEOFF", "LEGAL"}


@pytest.fixture(scope="module")
def bundle(trained):
    return joblib.load(trained["bundle_path"])


def test_no_account_below_the_materiality_threshold_is_in_any_queue(bundle):
    book = _book(residue=12.0)
    rows = bundle.score(book, AS_OF, explore=0.0, keep_features=True)
    conf = bundle.policy_config
    assert conf.min_arrears > 12 and "FULL" not in set(rows["account_id"]) and "BEHIND" in set(rows["account_id"])
    arrears = np.array([f["arrears"] for f in rows["_features"]])
    instalments = np.array([f["arrears_instalments"] for f in rows["_features"]])
    assert (arrears >= conf.min_arrears).all() and (instalments >= conf.min_arrears_instalments).all()


def test_the_answer_says_why_a_small_residue_is_left_out(bundle):
    requests = parsed(requests_from_portfolio(_book(residue=2.0), AS_OF))
    answers = {a["account_id"]: a for a in score_requests(bundle, requests)}
    full = answers["FULL"]
    assert full["tier"] == "not overdue" and full["action"]["channel"] == "none"
    assert "materiality" in full["reasons"][0] and "2.00" in full["reasons"][0]
    assert answers["BEHIND"]["tier"] != "not overdue"


def test_stale_debt_has_its_own_tier_and_no_automated_contact(bundle):
    rows = bundle.score(_book(stale_days=200), AS_OF, explore=0.5).set_index("account_id")
    assert rows.loc["STALE", "tier"] == "recovery review"
    assert rows.loc["WRITEOFF", "tier"] == "write-off review"
    assert rows.loc["LEGAL", "tier"] == "hold: legal"
    for name in ("STALE", "WRITEOFF", "LEGAL"):
        assert rows.loc[name, "channel"] == "none" and rows.loc[name, "priority"] == 0
        assert "limit of cure work" in rows.loc[name, "reasons"]
        assert rows.loc[name, "cure_probability"] == pytest.approx(bundle.metadata["stale_cure_rate"], abs=1e-6)
    assert rows.loc["BEHIND", "tier"] not in ("recovery review", "write-off review")
    assert rows.index[0] == "BEHIND"  # the queue works curable accounts first


def test_an_account_just_inside_the_limit_is_still_a_cure_candidate(bundle):
    rows = bundle.score(_book(stale_days=150), AS_OF, explore=0.0).set_index("account_id")
    assert rows.loc["STALE", "tier"] not in ("recovery review", "write-off review")


def test_evaluations_see_no_allowed_contact_for_stale_debt(bundle):
    out = bundle.constraints(_book(stale_days=200), AS_OF)
    ids = list(out["account_id"])
    for name in ("STALE", "WRITEOFF"):
        assert not out["channel_ok"][ids.index(name)].any()
    assert out["channel_ok"][ids.index("BEHIND")].any()
