"""Scoring real-time requests (the API and the pyfunc): checked, prepared as arrays, decided by the bundle.

A request is one account with its own rows, already parsed by the typed schema (models/schemas.py: python
dates and aware datetimes, bounds, vocabularies, unknown fields rejected). `check_requests` adds the
contract's checks a schema cannot express (keys, a child row naming another account, paired values,
the supported years), raising the same `ContractError` as the batch reader. Requests are grouped by as-of
time, turned into arrays by `features.prepare_requests` (no pandas) and decided by `ScoringBundle.decide`,
the batch's own path; an account that is not overdue gets a plain "not overdue" answer. Answers come back
in request order.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from models.answers import public
from models.bundle import DECISION_NAMESPACE, ScoringBundle, mark_contested
from models.calendar import instant_ns
from models.contract import MAX_ROWS, ContractError
from models.features import prepare_requests
from models.grouping import Combiner

FIRST_YEAR, LAST_YEAR = 1678, 2261  # the contract's supported years (datetime64[ns])
AS_OF_TOLERANCE = timedelta(minutes=5)  # how far ahead of our clock a request's as_of may be (clock skew)
_WHEN = {"installments": "due_date", "payments": "paid_at", "contacts": "contacted_at"}


def _fail(table: str, column: str, rows: list[int], problem: str, values: Sequence = ()) -> None:
    raise ContractError(table, column, rows[:MAX_ROWS], problem, len(rows), list(values)[:MAX_ROWS])


def _out_of_years(value: date | datetime | None) -> bool:
    return value is not None and not FIRST_YEAR <= value.year <= LAST_YEAR


def _check_not_in_the_future(requests: Sequence[Mapping[str, Any]], now: datetime) -> None:
    """as_of not ahead of `now` (with the tolerance); opened_on and birth_year not after as_of."""
    if bad := [i for i, r in enumerate(requests) if r["as_of"] > now + AS_OF_TOLERANCE]:
        _fail("request", "as_of", bad, f"in the future (more than {AS_OF_TOLERANCE} ahead of the service's clock)")
    if bad := [i for i, r in enumerate(requests) if r["account"]["opened_on"] > r["as_of"].date()]:
        _fail("accounts", "opened_on", bad, "after the request's as_of")
    if bad := [i for i, r in enumerate(requests)
               if r["account"].get("birth_year") is not None and r["account"]["birth_year"] > r["as_of"].year]:
        _fail("accounts", "birth_year", bad, "after the year of the request's as_of")


def check_requests(requests: Sequence[Mapping[str, Any]], now: datetime | None = None) -> None:
    """The contract checks of parsed requests, rows numbered as in the stacked tables the batch reads. A
    request cannot come from the future: its as_of may be at most AS_OF_TOLERANCE past `now` (the clock),
    and the account cannot be opened, or its holder born, after it."""
    ids = [r["account"]["account_id"] for r in requests]
    repeated = [i for i, a in enumerate(ids) if ids.count(a) > 1] if len(set(ids)) < len(ids) else []
    if repeated:
        _fail("accounts", "account_id", repeated, "duplicate key", [ids[i] for i in repeated])
    if bad := [i for i, r in enumerate(requests) if _out_of_years(r["as_of"])]:
        _fail("request", "as_of", bad, f"outside the supported years {FIRST_YEAR}..{LAST_YEAR}")
    if bad := [i for i, r in enumerate(requests) if _out_of_years(r["account"]["opened_on"])]:
        _fail("accounts", "opened_on", bad, f"outside the supported years {FIRST_YEAR}..{LAST_YEAR}")
    _check_not_in_the_future(requests, now or datetime.now(UTC))
    for table, when in _WHEN.items():
        rows = [(r["account"]["account_id"], row) for r in requests for row in (r.get(table) or ())]
        if bad := [i for i, (owner, row) in enumerate(rows) if row.get("account_id") not in (None, owner)]:
            _fail(table, "account_id", bad, "names another account than its request's",
                  [rows[i][1]["account_id"] for i in bad])
        if bad := [i for i, (_, row) in enumerate(rows) if _out_of_years(row[when])]:
            _fail(table, when, bad, f"outside the supported years {FIRST_YEAR}..{LAST_YEAR}")
    contacts = [row for r in requests for row in (r.get("contacts") or ())]
    keys = [c["contact_id"] for c in contacts]
    if len(set(keys)) < len(keys):
        bad = [i for i, k in enumerate(keys) if keys.count(k) > 1]
        _fail("contacts", "contact_id", bad, "duplicate key", [keys[i] for i in bad])
    if bad := [i for i, c in enumerate(contacts) if (c["outcome"] == "held_out") != (c["channel"] == "none")]:
        _fail("contacts", "outcome", bad, "outcome held_out must go with channel none, and only with it",
              [f"{contacts[i]['outcome']} with channel {contacts[i]['channel']}" for i in bad])


def not_overdue_answer(bundle: ScoringBundle, account_id: str, as_of: pd.Timestamp,
                       why: str = "no arrears at the as-of time") -> dict[str, Any]:
    """The answer for an account with no arrears at as_of (or arrears below the materiality thresholds,
    `why` says so): nothing to do, nothing blocked."""
    decision = uuid.uuid5(DECISION_NAMESPACE, f"{account_id}|{as_of.isoformat()}|{bundle.model_version}|current")
    return {
        "account_id": account_id, "as_of": as_of.isoformat(), "model_version": bundle.model_version,
        "cure_probability": 1.0, "priority": 0.0, "tier": "not overdue",
        "action": {"channel": "none", "contact_window": None, "offer": "none", "template": None,
                   "expected_gain": 0.0},
        "reasons": [why], "blocked": [], "decision_id": str(decision),
        "propensity": None,
    }


def score_requests(bundle: ScoringBundle, requests: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One answer per parsed request, in order (the contract's: without the record's `support`); raises
    ContractError naming the table, column and rows."""
    return [public(answer) for answer, _ in score_requests_with_features(bundle, requests)]


def score_requests_with_features(bundle: ScoringBundle, requests: Sequence[Mapping[str, Any]],
                                 contested: frozenset[str] = frozenset()
                                 ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """One (answer, model inputs) pair per parsed request, in order: the inputs go to the decision log
    (empty for an account that is not overdue: no model was asked). `contested` names the accounts whose
    customer contested a decision no person has answered yet (R-CONTESTED)."""
    check_requests(requests)
    return _decided(bundle, requests, contested)


def _decided(bundle: ScoringBundle, requests: Sequence[Mapping[str, Any]], contested: frozenset[str]
             ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """`score_requests_with_features` of requests already checked."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, request in enumerate(requests):
        groups[instant_ns(request["as_of"])].append(i)
    out: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    config = bundle.feature_config
    for positions in groups.values():
        as_of = pd.Timestamp(requests[positions[0]]["as_of"])  # the instant, in the offset its first request sent
        batch = [requests[i] for i in positions]
        known = [r.get("contacts", []) is not None for r in batch]
        decisions = bundle.decide(mark_contested(prepare_requests(batch, config), contested), as_of, known)
        found = {a["account_id"]: (a, decisions.inputs(k)) for k, a in enumerate(decisions.answers())}
        for i, request in zip(positions, batch, strict=True):
            account_id = request["account"]["account_id"]
            why = decisions.left_out.get(account_id, "no arrears at the as-of time")
            answer, inputs = found.get(account_id) or (not_overdue_answer(bundle, account_id, as_of, why), {})
            out[i] = ({**answer, "as_of": pd.Timestamp(request["as_of"]).isoformat()}, inputs)  # as it was sent
    return [out[i] for i in range(len(requests))]


@dataclass(frozen=True)
class _Ask:
    """One caller's part of a group: its checked requests and its tenant (whose contests count for them)."""

    bundle: ScoringBundle
    requests: list[Mapping[str, Any]]
    tenant: str | None = None
    records: Callable[[list], list] | None = None  # its (answer, inputs) pairs -> its decision records


Contested = Callable[[list[str], str | None], frozenset[str]]  # (account ids, tenant) -> the contested ones
Commit = Callable[[list[list]], list[BaseException | None]]  # callers' records -> one outcome each (None: written)


class GroupScorer:
    """Concurrent real-time requests decided together (`models.grouping.Combiner`): a request that comes alone
    is decided at once on its own thread; requests that arrive while a decision runs are decided in the next
    one, as one vectorised call of the batch's path (`ScoringBundle.decide` costs about 3 ms for one account
    and well under 1 ms more for each further account), with one read of the contests (`contested`, the
    decision log's R-CONTESTED lookup) per tenant of the group. Each caller's requests are checked on its own
    thread first (a contract error names its own rows). A group holds one bundle (a reload starts a new group)
    and each account at most once (a second request for an account waits for the next group), and at most
    `max_accounts` accounts. Every account's answer is the one it gets alone (`tests/models/test_scoring.py`).
    With `commit` (`DecisionLog.append_each`), each caller's decision records (`records`, built from its
    answers) are written in one transaction for the group before any of them is answered.
    If the group's decision fails, each caller's requests are decided alone, so each gets its own outcome; a
    failed read of the contests, or a failed write, fails the whole group (no decision without them)."""

    def __init__(self, contested: Contested | None = None, commit: Commit | None = None, max_accounts: int = 64,
                 on_group: Callable[[int], None] | None = None):
        self.max_accounts, self._contested, self._commit, self._on_group = max_accounts, contested, commit, on_group
        self._combiner: Combiner[_Ask, list] = Combiner(self._run, max_items=max_accounts, fits=self._fits)

    def score(self, bundle: ScoringBundle, requests: Sequence[Mapping[str, Any]], tenant: str | None = None,
              records: Callable[[list], list] | None = None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """`score_requests_with_features(bundle, requests, contested)`, decided with concurrent callers', the
        contested accounts read for `tenant`; with `records` (and a `commit`), the records it builds from the
        answers are written before this returns (or its error is raised)."""
        if records is not None and self._commit is None:
            raise ValueError("records to write, but this GroupScorer has no commit to write them with")
        check_requests(requests)
        return self._combiner.submit(_Ask(bundle, list(requests), tenant, records))

    def _fits(self, group: list[_Ask], ask: _Ask) -> bool:
        if ask.bundle is not group[0].bundle:
            return False
        if sum(len(a.requests) for a in group) + len(ask.requests) > self.max_accounts:
            return False
        taken = {r["account"]["account_id"] for a in group for r in a.requests}
        return taken.isdisjoint(r["account"]["account_id"] for r in ask.requests)

    def _contested_of(self, group: list[_Ask]) -> frozenset[str]:
        """The group's contested accounts, one read per tenant (its accounts are all different)."""
        if self._contested is None:
            return frozenset()
        by_tenant: dict[str | None, list[str]] = defaultdict(list)
        for ask in group:
            by_tenant[ask.tenant].extend(r["account"]["account_id"] for r in ask.requests)
        return frozenset().union(*(self._contested(ids, tenant) for tenant, ids in by_tenant.items()))

    def _run(self, group: list[_Ask]) -> list[list | BaseException]:
        if self._on_group is not None:  # the group's size in accounts (a metric)
            self._on_group(sum(len(a.requests) for a in group))
        outcomes = self._decide(group, self._contested_of(group))
        if self._commit is None:
            return outcomes
        built: list[tuple[int, list]] = []  # (caller, its records), for the callers with answers to record
        for i, (ask, out) in enumerate(zip(group, outcomes, strict=True)):
            if ask.records is None or isinstance(out, BaseException):
                continue
            try:
                built.append((i, ask.records(out)))
            except Exception as err:  # noqa: BLE001 - handed to its caller, who raises it
                outcomes[i] = err
        if built:
            for (i, _), error in zip(built, self._commit([records for _, records in built]), strict=True):
                if error is not None:
                    outcomes[i] = error
        return outcomes

    @staticmethod
    def _decide(group: list[_Ask], contested: frozenset[str]) -> list[list | BaseException]:
        if len(group) > 1:
            try:
                pairs = _decided(group[0].bundle, [r for a in group for r in a.requests], contested)
            except Exception:  # noqa: BLE001 - decided again one caller at a time, each gets its own outcome
                pass
            else:
                bounds = np.cumsum([0, *(len(a.requests) for a in group)])
                return [pairs[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        outcomes: list[list | BaseException] = []
        for ask in group:
            try:
                outcomes.append(_decided(ask.bundle, ask.requests, contested))
            except Exception as err:  # noqa: BLE001 - handed to its caller, who raises it
                outcomes.append(err)
        return outcomes


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
