"""Scoring contract requests (the API and the pyfunc): validate like the batch, score with the bundle.

Requests are stacked into the four contract tables, validated by the same reader as the batch, grouped
by as-of time and scored by `ScoringBundle.score`; an account that is not overdue gets a plain
"not overdue" answer. Answers come back in request order.
"""

from __future__ import annotations

import uuid
from typing import Any

import pandas as pd

from models.answers import answer_from_row, tables_from_requests
from models.bundle import DECISION_NAMESPACE, ScoringBundle
from models.contract import SPEC, ContractError, validate


def _frames(requests: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    tables = tables_from_requests(requests)
    return {name: frame if frame is not None else pd.DataFrame({c: pd.Series(dtype=object) for c in SPEC[name]})
            for name, frame in tables.items()}


def _as_of(requests: list[dict[str, Any]]) -> list[pd.Timestamp]:
    out = []
    for i, req in enumerate(requests):
        try:
            when = pd.Timestamp(req["as_of"])
        except (KeyError, ValueError, TypeError) as err:
            raise ContractError("request", "as_of", [i], f"unreadable as_of ({err})") from None
        if when.tzinfo is None:
            raise ContractError("request", "as_of", [i], "as_of without a UTC offset")
        out.append(when.tz_convert("UTC"))
    return out


def not_overdue_answer(bundle: ScoringBundle, account_id: str, as_of: pd.Timestamp) -> dict[str, Any]:
    """The answer for an account with no arrears at as_of: nothing to do, nothing blocked."""
    decision = uuid.uuid5(DECISION_NAMESPACE, f"{account_id}|{as_of.isoformat()}|{bundle.model_version}|current")
    return {
        "account_id": account_id, "as_of": as_of.isoformat(), "model_version": bundle.model_version,
        "cure_probability": 1.0, "priority": 0.0, "tier": "not overdue",
        "action": {"channel": "none", "contact_window": None, "offer": "none", "template": None,
                   "expected_gain": 0.0},
        "reasons": ["no arrears at the as-of time"], "blocked": [], "decision_id": str(decision),
        "propensity": None,
    }


def score_requests(bundle: ScoringBundle, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One answer per request, in order; raises ContractError naming the table, column and rows at fault."""
    return [answer for answer, _ in score_requests_with_features(bundle, requests)]


def score_requests_with_features(bundle: ScoringBundle, requests: list[dict[str, Any]]
                                 ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """One (answer, model inputs) pair per request, in order: the inputs go to the decision log
    (empty for an account that is not overdue: no model was asked)."""
    when = _as_of(requests)
    portfolio = validate(_frames(requests))
    unknown = frozenset(r["account"]["account_id"] for r in requests if r.get("contacts", []) is None)
    answers: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    positions = pd.Series(range(len(requests)))
    for as_of, idx in positions.groupby(pd.Series([w.value for w in when])).groups.items():
        ids = portfolio.accounts["account_id"].iloc[list(idx)].tolist()
        rows = bundle.score(portfolio.subset(ids), pd.Timestamp(as_of, tz="UTC"), unknown, keep_features=True)
        by_id = {r["account_id"]: r for r in rows.to_dict("records")}
        for i, account_id in zip(idx, ids, strict=True):
            row = by_id.get(account_id)
            answers[i] = ((answer_from_row(row), row["_features"]) if row is not None
                          else (not_overdue_answer(bundle, account_id, pd.Timestamp(as_of, tz="UTC")), {}))
    return [answers[i] for i in range(len(requests))]


def example_request(bundle: ScoringBundle | None = None) -> dict[str, Any]:
    """A small, valid request (an account two instalments behind) for docs, signatures and smoke tests."""
    return {
        "as_of": "2026-11-01T00:00:00+09:00",
        "account": {
            "account_id": "A-EXAMPLE", "opened_on": "2022-04-10", "term_months": 108, "monthly_amount": 42000,
            "birth_year": 1984, "employment": "salaried", "region": "Tokyo", "timezone": "Asia/Tokyo",
            "consent_phone": True, "consent_sms": True, "consent_email": True, "do_not_contact": False,
            "dispute_open": False, "legal_representative": False, "bankruptcy": False, "vulnerable": False,
        },
        "installments": [{"due_date": f"2026-{m:02d}-27", "amount_due": 42000} for m in range(1, 11)],
        "payments": [{"paid_at": f"2026-{m:02d}-27T10:00:00+09:00", "amount": 42000, "method": "direct_debit"}
                     for m in range(1, 9)],
        "contacts": [{"contact_id": "C-EX-1", "contacted_at": "2026-09-30T18:30:00+09:00", "channel": "sms",
                      "direction": "outbound", "template": "reminder_v1", "outcome": "delivered"}],
    }
